//! The models federated averaging trains: logistic regression (no hidden layer) and a small
//! MLP (ReLU hidden layers), for a binary label or a numeric target, with local mini-batch
//! SGD over the rows of one site. Inputs arrive standardised (the distributed means and
//! standard deviations); the ONNX export folds that scaling back into the first layer.
//!
//! Parameters are one flat vector, layer by layer: W (outputs × inputs, row-major), then b.

use crate::cancel::{CHECK_EVERY, CancelToken};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Label 0/1; one logit, sigmoid, binary cross-entropy.
    Binary,
    /// Numeric target (standardised while training); squared error.
    Regression,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub inputs: usize,
    pub hidden: Vec<usize>,
    pub objective: Objective,
}

/// (inputs, outputs) of each layer.
fn layer_shapes(arch: &Architecture) -> Vec<(usize, usize)> {
    let mut sizes = vec![arch.inputs];
    sizes.extend(&arch.hidden);
    sizes.push(1);
    sizes.windows(2).map(|w| (w[0], w[1])).collect()
}

impl Architecture {
    pub fn param_count(&self) -> usize {
        layer_shapes(self).iter().map(|(i, o)| i * o + o).sum()
    }

    /// The layers as (W, b) slices of `params`, W row-major (outputs × inputs).
    pub fn layers<'a>(&self, params: &'a [f64]) -> Vec<(usize, usize, &'a [f64], &'a [f64])> {
        let mut rest = params;
        layer_shapes(self)
            .into_iter()
            .map(|(inputs, outputs)| {
                let (w, tail) = rest.split_at(inputs * outputs);
                let (b, tail) = tail.split_at(outputs);
                rest = tail;
                (inputs, outputs, w, b)
            })
            .collect()
    }

    /// Starting weights: zeros for a linear model (its loss is convex), He-scaled uniform
    /// weights from `seed` for hidden layers (zeros would keep every hidden unit equal).
    pub fn initial_params(&self, seed: u64) -> Vec<f64> {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(self.param_count());
        let linear = self.hidden.is_empty();
        for (inputs, outputs) in layer_shapes(self) {
            let bound = (6.0 / inputs.max(1) as f64).sqrt();
            for _ in 0..inputs * outputs {
                params.push(if linear {
                    0.0
                } else {
                    rng.random_range(-bound..bound)
                });
            }
            params.extend(std::iter::repeat_n(0.0, outputs));
        }
        params
    }
}

/// How inputs (and a regression target) were standardised in training: the distributed
/// statistics every site scales with, and the ONNX export folds back into the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub feature_mean: Vec<f64>,
    pub feature_std: Vec<f64>,
    /// A regression target is standardised too; (0, 1) for a classifier.
    pub target_mean: f64,
    pub target_std: f64,
}

impl Scaling {
    /// No scaling: the weights apply to the columns as they are.
    pub fn identity(features: usize) -> Self {
        Self {
            feature_mean: vec![0.0; features],
            feature_std: vec![1.0; features],
            target_mean: 0.0,
            target_std: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdOptions {
    pub learning_rate: f64,
    /// Weight decay on W (not on b): the objective is mean loss + l2/2 ‖W‖².
    pub l2: f64,
    /// Passes over the local rows per round; 0 evaluates only.
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
}

/// Loss of one output: binary cross-entropy on the logit (numerically stable form), or
/// squared error; and d loss / d output.
fn loss_and_gradient(objective: Objective, output: f64, target: f64) -> (f64, f64) {
    match objective {
        Objective::Binary => {
            let loss = output.max(0.0) - output * target + (-output.abs()).exp().ln_1p();
            (loss, sigmoid(output) - target)
        }
        Objective::Regression => {
            let e = output - target;
            (e * e, 2.0 * e)
        }
    }
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Scratch space for one row's forward and backward pass.
struct Scratch {
    /// Activations of every layer, the input's first.
    activations: Vec<Vec<f64>>,
    deltas: Vec<Vec<f64>>,
}

impl Scratch {
    fn new(arch: &Architecture) -> Self {
        let shapes = layer_shapes(arch);
        let mut activations = vec![vec![0.0; arch.inputs]];
        activations.extend(shapes.iter().map(|(_, o)| vec![0.0; *o]));
        let deltas = shapes.iter().map(|(_, o)| vec![0.0; *o]).collect();
        Self {
            activations,
            deltas,
        }
    }
}

/// The model's output (a logit, or the standardised prediction) for one row.
fn forward(arch: &Architecture, params: &[f64], row: &[f64], s: &mut Scratch) -> f64 {
    s.activations[0].copy_from_slice(row);
    let layers = arch.layers(params);
    let last = layers.len() - 1;
    for (l, (inputs, outputs, w, b)) in layers.into_iter().enumerate() {
        let (before, after) = s.activations.split_at_mut(l + 1);
        let input = &before[l];
        let output = &mut after[0];
        for o in 0..outputs {
            let z = b[o]
                + w[o * inputs..(o + 1) * inputs]
                    .iter()
                    .zip(input)
                    .map(|(w, x)| w * x)
                    .sum::<f64>();
            output[o] = if l == last { z } else { z.max(0.0) };
        }
    }
    s.activations[last + 1][0]
}

/// Adds one row's gradient (given d loss / d output) to `gradient`.
fn backward(
    arch: &Architecture,
    params: &[f64],
    d_output: f64,
    s: &mut Scratch,
    gradient: &mut [f64],
) {
    let layers = arch.layers(params);
    let last = layers.len() - 1;
    s.deltas[last][0] = d_output;
    // Offsets of each layer's parameters in the flat vector.
    let mut offsets = Vec::with_capacity(layers.len());
    let mut offset = 0;
    for (inputs, outputs, _, _) in &layers {
        offsets.push(offset);
        offset += inputs * outputs + outputs;
    }
    for l in (0..layers.len()).rev() {
        let (inputs, outputs, w, _) = layers[l];
        let input = &s.activations[l];
        let start = offsets[l];
        for o in 0..outputs {
            let delta = s.deltas[l][o];
            if delta == 0.0 {
                continue;
            }
            let row = &mut gradient[start + o * inputs..start + (o + 1) * inputs];
            for (g, x) in row.iter_mut().zip(input) {
                *g += delta * x;
            }
            gradient[start + inputs * outputs + o] += delta;
        }
        if l > 0 {
            let (head, tail) = s.deltas.split_at_mut(l);
            let below = &mut head[l - 1];
            for (i, d) in below.iter_mut().enumerate() {
                // ReLU: the gradient passes only where the unit was active.
                *d = if s.activations[l][i] > 0.0 {
                    (0..outputs).map(|o| w[o * inputs + i] * tail[0][o]).sum()
                } else {
                    0.0
                };
            }
        }
    }
}

/// Sum of the loss over rows (row-major `x`, `y`), and how many rows a classifier gets
/// right (threshold 0.5).
pub fn evaluate(arch: &Architecture, params: &[f64], x: &[f64], y: &[f64]) -> (f64, u64) {
    let mut s = Scratch::new(arch);
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, target) in x.chunks_exact(arch.inputs.max(1)).zip(y) {
        let output = forward(arch, params, row, &mut s);
        loss += loss_and_gradient(arch.objective, output, *target).0;
        if arch.objective == Objective::Binary && (output > 0.0) == (*target > 0.5) {
            correct += 1;
        }
    }
    (loss, correct)
}

/// Runs `epochs` passes of mini-batch SGD over the rows, updating `params` in place.
/// Checks `stop` every [`CHECK_EVERY`] rows: a cancelled or timed-out statement ends the
/// training with an error within one check's work, however many epochs were asked for.
pub fn train(
    arch: &Architecture,
    params: &mut [f64],
    x: &[f64],
    y: &[f64],
    options: &SgdOptions,
    stop: &CancelToken,
) -> datafusion::common::Result<()> {
    let rows = y.len();
    if rows == 0 || options.epochs == 0 {
        return Ok(());
    }
    let mut since_check = 0usize;
    let width = arch.inputs.max(1);
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut gradient = vec![0.0; params.len()];
    let mut s = Scratch::new(arch);
    let batch_size = options.batch_size.max(1);
    // Which parameters are weights (decayed) rather than biases.
    let mut is_weight = Vec::with_capacity(params.len());
    for (inputs, outputs) in layer_shapes(arch) {
        is_weight.extend(std::iter::repeat_n(true, inputs * outputs));
        is_weight.extend(std::iter::repeat_n(false, outputs));
    }
    for _ in 0..options.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(batch_size) {
            gradient.iter_mut().for_each(|g| *g = 0.0);
            for &i in batch {
                since_check += 1;
                if since_check == CHECK_EVERY {
                    since_check = 0;
                    stop.check("local training")?;
                }
                let output = forward(arch, params, &x[i * width..(i + 1) * width], &mut s);
                let (_, d_output) = loss_and_gradient(arch.objective, output, y[i]);
                backward(arch, params, d_output, &mut s, &mut gradient);
            }
            let step = options.learning_rate / batch.len() as f64;
            for ((p, g), weight) in params.iter_mut().zip(&gradient).zip(&is_weight) {
                let decay = if *weight { options.l2 * *p } else { 0.0 };
                *p -= step * g + options.learning_rate * decay;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs separated along x1 + x2.
    fn blobs(rows: usize) -> (Vec<f64>, Vec<f64>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..rows {
            let t = i as f64;
            let (a, b) = ((t * 0.731).sin(), (t * 1.917).cos());
            let label = (a + b + 0.3 * (t * 3.3).sin() > 0.0) as u8 as f64;
            x.extend([a, b]);
            y.push(label);
        }
        (x, y)
    }

    #[test]
    fn logistic_regression_learns_a_linear_boundary() {
        let arch = Architecture {
            inputs: 2,
            hidden: vec![],
            objective: Objective::Binary,
        };
        let (x, y) = blobs(2000);
        let mut params = arch.initial_params(1);
        let (loss_before, _) = evaluate(&arch, &params, &x, &y);
        let options = SgdOptions {
            learning_rate: 0.5,
            l2: 0.0,
            epochs: 5,
            batch_size: 32,
            seed: 7,
        };
        train(&arch, &mut params, &x, &y, &options, &CancelToken::none()).unwrap();
        let (loss_after, correct) = evaluate(&arch, &params, &x, &y);
        assert!(
            loss_after < loss_before * 0.5,
            "{loss_before} -> {loss_after}"
        );
        assert!(correct as f64 / 2000.0 > 0.9, "{correct}");
    }

    #[test]
    fn mlp_gradients_match_finite_differences() {
        let arch = Architecture {
            inputs: 3,
            hidden: vec![4],
            objective: Objective::Binary,
        };
        let params = arch.initial_params(3);
        let row = [0.3, -1.2, 0.8];
        let target = 1.0;
        let mut s = Scratch::new(&arch);
        let mut gradient = vec![0.0; params.len()];
        let output = forward(&arch, &params, &row, &mut s);
        let (_, d) = loss_and_gradient(arch.objective, output, target);
        backward(&arch, &params, d, &mut s, &mut gradient);
        let loss_at = |p: &[f64]| {
            let mut s = Scratch::new(&arch);
            loss_and_gradient(arch.objective, forward(&arch, p, &row, &mut s), target).0
        };
        for i in 0..params.len() {
            let mut up = params.clone();
            let mut down = params.clone();
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric = (loss_at(&up) - loss_at(&down)) / 2e-6;
            assert!(
                (numeric - gradient[i]).abs() < 1e-5,
                "param {i}: {numeric} vs {}",
                gradient[i]
            );
        }
    }
}

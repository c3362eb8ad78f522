//! The dense layer kernel: `act(x @ W + b)` for a block of rows, in one pass over the output.
//!
//! Why hand-written rather than a GEMM crate: the layers of tabular models are tall and
//! skinny (thousands of rows, K and N from 2 to 256), where a general GEMM spends its time
//! packing its operands on every call and makes a second pass for the bias and the
//! activation. `matrixmultiply` (through `ndarray`) ran a 21-64-32-1 MLP at 0.22x ONNX
//! Runtime's speed; the `gemm` crate is fast but its API is `unsafe`, which the workspace
//! forbids. Here the weights are padded once, at model load, to whole SIMD vectors, and each
//! tile of 6 rows x 2 vectors keeps its sums in registers from the bias to the activation.
//! A layer of one or two outputs (a model's head) is computed as dot products instead: a
//! vector of its columns would be mostly padding.
//!
//! SIMD comes from `pulp` (the safe runtime-dispatch layer under `faer` and `gemm`): the
//! kernel is written once over its `Simd` trait, and `Arch::dispatch` runs the AVX2/FMA
//! (x86-64-v3), NEON or scalar copy of it, whichever the CPU has.
//!
//! Sums run over k in order with fused multiply-adds, as ONNX Runtime's MLAS kernels do, so
//! answers stay within 1e-5 of its. Tanh is the rational approximation MLAS (and Eigen) use;
//! Sigmoid is `0.5 + 0.5 tanh(x / 2)`.

use pulp::{Arch, Simd, WithSimd};

/// An element-wise activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Tanh,
    Sigmoid,
    LeakyRelu(f32),
}

/// Rows a tile computes at once; with 2 vectors of columns that is 12 sums in registers,
/// plus the 2 weight vectors and 1 broadcast input: 15 of the 16 AVX2 registers.
const TILE_ROWS: usize = 6;

/// Layers with at most this many outputs (a regressor's or a binary classifier's head) are
/// computed as dot products along each row: a vector of columns would be mostly padding.
const NARROW: usize = 2;

/// One dense layer, compiled: `activation(x @ weights + bias)`.
#[derive(Debug, Clone)]
pub struct Layer {
    k: usize,
    n: usize,
    /// Columns of `weights` and `bias` a row: `n` rounded up to whole vectors of any width
    /// the kernel runs with (1, 4 or 8 lanes); the padding is zeros.
    stride: usize,
    /// Row-major `[k, stride]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// For a narrow layer, the weights column by column: row-major `[n, k]`.
    transposed: Vec<f32>,
    has_bias: bool,
    activation: Option<Unary>,
}

impl Layer {
    /// A layer of `weights` (row-major `[k, n]`).
    pub fn new(k: usize, n: usize, weights: &[f32]) -> Self {
        let stride = n.div_ceil(8) * 8;
        let mut padded = vec![0.0; k * stride];
        for (row, from) in padded.chunks_exact_mut(stride).zip(weights.chunks_exact(n)) {
            row[..n].copy_from_slice(from);
        }
        let transposed = if n <= NARROW {
            (0..n * k).map(|i| weights[(i % k) * n + i / k]).collect()
        } else {
            Vec::new()
        };
        Self {
            k,
            n,
            stride,
            weights: padded,
            bias: vec![0.0; stride],
            transposed,
            has_bias: false,
            activation: None,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Takes a bias (`n` values, one per column) into the layer, if it has none yet.
    pub fn take_bias(&mut self, bias: &[f32]) -> bool {
        if self.has_bias || self.activation.is_some() || bias.len() != self.n {
            return false;
        }
        self.bias[..self.n].copy_from_slice(bias);
        self.has_bias = true;
        true
    }

    /// Takes an activation applied to the layer's output, if it has none yet.
    pub fn take_activation(&mut self, activation: Unary) -> bool {
        if self.activation.is_some() {
            return false;
        }
        self.activation = Some(activation);
        true
    }

    /// The layer over `rows` rows of `x` (`k` floats a row) into `out` (`n` floats a row).
    pub fn run(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        // Every value is written below; a buffer of the right size (the last block's) is
        // not cleared first.
        if out.len() != rows * self.n {
            out.clear();
            out.resize(rows * self.n, 0.0);
        }
        Arch::new().dispatch(LayerRun {
            layer: self,
            x: &x[..rows * self.k],
            out,
        });
    }
}

/// `op` over every value of `values`, in place.
pub fn activate(op: Unary, values: &mut [f32]) {
    Arch::new().dispatch(Activate { op, values });
}

struct LayerRun<'a> {
    layer: &'a Layer,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for LayerRun<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { layer, x, out } = self;
        if layer.n <= NARROW {
            return narrow(simd, layer, x, out);
        }
        let lanes = S::F32_LANES;
        if layer.stride % lanes != 0 {
            // A vector wider than the padding (AVX-512 is not enabled): one lane at a time.
            return pulp::Scalar::new().vectorize(LayerRun { layer, x, out });
        }
        let (weights, _) = S::as_simd_f32s(&layer.weights);
        let (bias, _) = S::as_simd_f32s(&layer.bias);
        let vectors = layer.stride / lanes;
        let (k, n) = (layer.k, layer.n);
        let tile = |activation| Tile {
            simd,
            weights,
            bias,
            vectors,
            k,
            n,
            activation,
        };
        match layer.activation {
            None => tile(Then::Nothing).all(x, out),
            Some(Unary::Relu) => tile(Then::Relu).all(x, out),
            Some(Unary::Tanh) => tile(Then::Tanh).all(x, out),
            Some(Unary::Sigmoid) => tile(Then::Sigmoid).all(x, out),
            Some(Unary::LeakyRelu(alpha)) => tile(Then::LeakyRelu(alpha)).all(x, out),
        }
    }
}

/// A layer's activation, as the kernel's epilogue. Each tile's copy is made for one of
/// these, chosen before the loops: the match in [`Then::apply`] is then on a constant, and
/// folds away.
#[derive(Clone, Copy)]
enum Then {
    Nothing,
    Relu,
    Tanh,
    Sigmoid,
    LeakyRelu(f32),
}

impl Then {
    #[inline(always)]
    fn apply<S: Simd>(self, simd: S, v: S::f32s) -> S::f32s {
        match self {
            Then::Nothing => v,
            Then::Relu => apply(simd, Unary::Relu, v),
            Then::Tanh => apply(simd, Unary::Tanh, v),
            Then::Sigmoid => apply(simd, Unary::Sigmoid, v),
            Then::LeakyRelu(alpha) => apply(simd, Unary::LeakyRelu(alpha), v),
        }
    }
}

/// A narrow layer: each output a dot product of its row with a column of weights, then the
/// activation over the whole output.
#[inline(always)]
fn narrow<S: Simd>(simd: S, layer: &Layer, x: &[f32], out: &mut [f32]) {
    let k = layer.k;
    for (row, out_row) in x.chunks_exact(k).zip(out.chunks_exact_mut(layer.n)) {
        let (head, tail) = S::as_simd_f32s(row);
        for ((value, column), bias) in out_row
            .iter_mut()
            .zip(layer.transposed.chunks_exact(k))
            .zip(&layer.bias)
        {
            let (column_head, column_tail) = S::as_simd_f32s(column);
            let mut sums = simd.splat_f32s(0.0);
            for (x, w) in head.iter().zip(column_head) {
                sums = simd.mul_add_f32s(*x, *w, sums);
            }
            let mut sum = simd.reduce_sum_f32s(sums);
            for (x, w) in tail.iter().zip(column_tail) {
                sum += x * w;
            }
            *value = sum + bias;
        }
    }
    if let Some(op) = layer.activation {
        Activate { op, values: out }.with_simd(simd);
    }
}

/// What every tile of one layer run shares.
struct Tile<'a, S: Simd> {
    simd: S,
    weights: &'a [S::f32s],
    bias: &'a [S::f32s],
    vectors: usize,
    k: usize,
    n: usize,
    activation: Then,
}

impl<S: Simd> Tile<'_, S> {
    /// Every row of `x` into `out`, `TILE_ROWS` at a time.
    #[inline(always)]
    fn all(&self, x: &[f32], out: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        let tile = self;
        let mut x_rows = x.chunks_exact(k * TILE_ROWS);
        let mut out_rows = out.chunks_exact_mut(n * TILE_ROWS);
        for (x, out) in (&mut x_rows).zip(&mut out_rows) {
            tile.rows::<TILE_ROWS>(x, out);
        }
        let x_rest = x_rows.remainder();
        let out_rest = out_rows.into_remainder();
        for (x, out) in x_rest.chunks_exact(k).zip(out_rest.chunks_exact_mut(n)) {
            tile.rows::<1>(x, out);
        }
    }

    /// `R` rows of output (row-major, `k` inputs a row), two vectors of columns at a time.
    #[inline(always)]
    fn rows<const R: usize>(&self, x: &[f32], out: &mut [f32]) {
        let k = self.k;
        // Each row cut to exactly `k` values, so reading step `i < k` of it needs no check.
        let inputs: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..r * k + k]);
        let mut v = 0;
        while v + 2 <= self.vectors {
            self.columns::<R, 2>(&inputs, out, v);
            v += 2;
        }
        if v < self.vectors {
            self.columns::<R, 1>(&inputs, out, v);
        }
    }

    /// `R` rows by `V` vectors of columns from vector `first`: sums from the bias over k in
    /// order, the activation, then stored (the last vector of a row cut at `n`).
    #[inline(always)]
    fn columns<const R: usize, const V: usize>(
        &self,
        inputs: &[&[f32]; R],
        out: &mut [f32],
        first: usize,
    ) {
        let simd = self.simd;
        let mut sums = [[simd.splat_f32s(0.0); V]; R];
        for row in &mut sums {
            row.copy_from_slice(&self.bias[first..first + V]);
        }
        for (step, weights) in self.weights.chunks_exact(self.vectors).enumerate() {
            let weights = &weights[first..first + V];
            for (row, input) in sums.iter_mut().zip(inputs) {
                let input = simd.splat_f32s(input[step]);
                for (sum, w) in row.iter_mut().zip(weights) {
                    *sum = simd.mul_add_f32s(input, *w, *sum);
                }
            }
        }
        let lanes = S::F32_LANES;
        for (r, row) in sums.iter().enumerate() {
            let out_row = &mut out[r * self.n..(r + 1) * self.n];
            for (i, sum) in row.iter().enumerate() {
                let start = (first + i) * lanes;
                if start >= self.n {
                    break;
                }
                let value = self.activation.apply(simd, *sum);
                let end = (start + lanes).min(self.n);
                match S::as_mut_simd_f32s(&mut out_row[start..end]) {
                    ([whole], _) => *whole = value,
                    (_, part) => simd.partial_store_f32s(part, value),
                }
            }
        }
    }
}

struct Activate<'a> {
    op: Unary,
    values: &'a mut [f32],
}

impl WithSimd for Activate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.values);
        for v in head {
            *v = apply(simd, self.op, *v);
        }
        let last = simd.partial_load_f32s(tail);
        simd.partial_store_f32s(tail, apply(simd, self.op, last));
    }
}

#[inline(always)]
fn apply<S: Simd>(simd: S, op: Unary, x: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    match op {
        // `x < 0` is false for NaN, which stays NaN as in ONNX Runtime.
        Unary::Relu => simd.select_f32s(simd.less_than_f32s(x, zero), zero, x),
        Unary::LeakyRelu(alpha) => simd.select_f32s(
            simd.less_than_f32s(x, zero),
            simd.mul_f32s(x, simd.splat_f32s(alpha)),
            x,
        ),
        Unary::Tanh => tanh(simd, x),
        Unary::Sigmoid => {
            let half = simd.splat_f32s(0.5);
            simd.mul_add_f32s(half, tanh(simd, simd.mul_f32s(half, x)), half)
        }
    }
}

/// tanh by MLAS's rational approximation (odd degree 13 over even degree 6, on x clamped to
/// [-9, 9], where tanh is 1 to within f32); NaN stays NaN.
#[inline(always)]
fn tanh<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // MLAS's constants, as printed there (more digits than an f32 holds).
    #[allow(clippy::excessive_precision)]
    const ALPHA: [f32; 7] = [
        4.89352455891786e-03,
        6.37261928875436e-04,
        1.48572235717979e-05,
        5.12229709037114e-08,
        -8.60467152213735e-11,
        2.00018790482477e-13,
        -2.76076847742355e-16,
    ];
    #[allow(clippy::excessive_precision)]
    const BETA: [f32; 4] = [
        4.89352518554385e-03,
        2.26843463243900e-03,
        1.18534705686654e-04,
        1.19825839466702e-06,
    ];
    let clamped = simd.min_f32s(
        simd.max_f32s(x, simd.splat_f32s(-9.0)),
        simd.splat_f32s(9.0),
    );
    let x2 = simd.mul_f32s(clamped, clamped);
    let mut p = simd.splat_f32s(ALPHA[6]);
    for a in ALPHA[..6].iter().rev() {
        p = simd.mul_add_f32s(p, x2, simd.splat_f32s(*a));
    }
    p = simd.mul_f32s(p, clamped);
    let mut q = simd.splat_f32s(BETA[3]);
    for b in BETA[..3].iter().rev() {
        q = simd.mul_add_f32s(q, x2, simd.splat_f32s(*b));
    }
    let value = simd.div_f32s(p, q);
    // NaN compares unequal to itself.
    simd.select_f32s(simd.equal_f32s(x, x), value, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(op: Unary, v: f32) -> f32 {
        match op {
            Unary::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Unary::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            Unary::Tanh => (v as f64).tanh() as f32,
            Unary::Sigmoid => (1.0 / (1.0 + (-(v as f64)).exp())) as f32,
        }
    }

    #[test]
    fn activations_are_within_a_few_ulps_of_the_exact_values_and_keep_nan() {
        let mut values: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        values.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ]);
        for op in [
            Unary::Relu,
            Unary::LeakyRelu(0.1),
            Unary::Tanh,
            Unary::Sigmoid,
        ] {
            let mut got = values.clone();
            activate(op, &mut got);
            for (v, g) in values.iter().zip(&got) {
                let want = reference(op, *v);
                assert!(
                    *g == want || (g - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{op:?}({v}) = {g}, want {want}"
                );
            }
            let mut nan = [f32::NAN; 11];
            activate(op, &mut nan);
            assert!(nan.iter().all(|v| v.is_nan()), "{op:?} of NaN: {nan:?}");
        }
    }

    /// Each output as f64 sums over k, for comparison.
    fn reference_layer(x: &[f32], k: usize, n: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
        x.chunks_exact(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    let sum: f64 = (0..k).map(|i| row[i] as f64 * w[i * n + j] as f64).sum();
                    (sum + b[j] as f64) as f32
                })
            })
            .collect()
    }

    #[test]
    fn every_shape_of_rows_and_columns_is_computed_whole() {
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (k, n) in [
            (1, 1),
            (3, 7),
            (21, 64),
            (5, 9),
            (8, 16),
            (13, 17),
            (2, 33),
            (19, 2),
        ] {
            for rows in [0, 1, 3, 4, 5, 11] {
                let w: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let b: Vec<f32> = (0..n).map(|_| next()).collect();
                let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
                let mut layer = Layer::new(k, n, &w);
                assert!(layer.take_bias(&b));
                assert!(!layer.take_bias(&b), "a second bias is not folded in");
                let mut out = vec![7.0; 3];
                layer.run(&x, rows, &mut out);
                let want = reference_layer(&x, k, n, &w, &b);
                assert_eq!(out.len(), want.len());
                for (g, w) in out.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5, "[{k}, {n}] x {rows}: {g} vs {w}");
                }
                assert!(layer.take_activation(Unary::Relu));
                layer.run(&x, rows, &mut out);
                for (g, w) in out.iter().zip(&want) {
                    assert!((g - w.max(0.0)).abs() <= 1e-5, "relu {g} vs {w}");
                }
            }
        }
    }
}

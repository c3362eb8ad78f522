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
//! Sigmoid is `1 / (1 + e)` or `e / (1 + e)` from a vector `e = exp(-|x|)`, so that small
//! probabilities keep their relative precision.

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
    /// Columns of `packed` and `bias` a row: `n` rounded up to whole vectors of any width
    /// the kernel runs with (1, 4 or 8 lanes); the padding is zeros.
    stride: usize,
    /// The weights as the kernel reads them: groups of `group` columns (the last may be
    /// narrower), each group's `k` rows one after the other, so that a group's weights lie
    /// together in the cache (rows of a `[k, stride]` matrix 1 KiB apart fall into a
    /// handful of the L1 cache's sets and evict each other). Empty for a narrow layer.
    packed: Vec<f32>,
    /// Columns of a group: two of this CPU's vectors, or the whole row where its vectors
    /// do not divide the stride (then the plain path reads them).
    group: usize,
    /// The vector width `packed` was laid out for: this CPU's.
    lanes: usize,
    bias: Vec<f32>,
    /// For a narrow layer, the weights column by column: row-major `[n, k]`.
    transposed: Vec<f32>,
    has_bias: bool,
    activation: Option<Unary>,
}

impl Layer {
    /// A layer of `weights` (row-major `[k, n]`); `None` for an empty layer or weights of
    /// another size.
    pub fn new(k: usize, n: usize, weights: &[f32]) -> Option<Self> {
        if k == 0 || n == 0 || Some(weights.len()) != k.checked_mul(n) {
            return None;
        }
        let stride = n.div_ceil(8) * 8;
        let lanes = Arch::new().dispatch(Lanes);
        let group = if stride.is_multiple_of(lanes) {
            2 * lanes
        } else {
            stride
        };
        // A narrow layer reads only its weights column by column.
        let (packed, transposed) = if n <= NARROW {
            let transposed = (0..n * k).map(|i| weights[(i % k) * n + i / k]).collect();
            (Vec::new(), transposed)
        } else {
            (pack(weights, k, n, stride, group), Vec::new())
        };
        Some(Self {
            k,
            n,
            stride,
            packed,
            group,
            lanes,
            bias: vec![0.0; stride],
            transposed,
            has_bias: false,
            activation: None,
        })
    }

    /// The weight of input `step` for output `col`, where `pack` put it.
    fn weight(&self, step: usize, col: usize) -> f32 {
        let start = col / self.group * self.group;
        let width = self.group.min(self.stride - start);
        self.packed[start * self.k + step * width + col - start]
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

/// The number of f32 lanes of this CPU's vectors, as `Arch::dispatch` picks them.
struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> usize {
        S::F32_LANES
    }
}

/// Row-major `[k, n]` weights, padded with zero columns to `stride`, regrouped `group`
/// columns at a time (the last group may be narrower), each group's rows together.
fn pack(weights: &[f32], k: usize, n: usize, stride: usize, group: usize) -> Vec<f32> {
    let mut packed = Vec::with_capacity(k * stride);
    for start in (0..stride).step_by(group) {
        let width = group.min(stride - start);
        for row in weights.chunks_exact(n).take(k) {
            let real = row.get(start..n.min(start + width)).unwrap_or(&[]);
            packed.extend_from_slice(real);
            packed.extend(std::iter::repeat_n(0.0, width - real.len()));
        }
    }
    packed
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
        if lanes != layer.lanes || layer.group != 2 * lanes {
            // Not the vectors the weights were packed for: a CPU whose vectors do not
            // divide the padding (AVX-512 is not enabled), or a caller's other `Simd`.
            return plain(simd, layer, x, out);
        }
        let (weights, _) = S::as_simd_f32s(&layer.packed);
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
        // One arm per activation, each with a constant: the inlined kernel is copied per
        // arm and the epilogue's match folds away (no branch per vector).
        match layer.activation {
            None => tile(None).all(x, out),
            Some(Unary::Relu) => tile(Some(Unary::Relu)).all(x, out),
            Some(Unary::Tanh) => tile(Some(Unary::Tanh)).all(x, out),
            Some(Unary::Sigmoid) => tile(Some(Unary::Sigmoid)).all(x, out),
            Some(Unary::LeakyRelu(a)) => tile(Some(Unary::LeakyRelu(a))).all(x, out),
        }
    }
}

/// The layer one value at a time.
fn plain<S: Simd>(simd: S, layer: &Layer, x: &[f32], out: &mut [f32]) {
    for (row, out_row) in x.chunks_exact(layer.k).zip(out.chunks_exact_mut(layer.n)) {
        for (j, value) in out_row.iter_mut().enumerate() {
            *value = row
                .iter()
                .enumerate()
                .fold(layer.bias[j], |sum, (step, x)| {
                    x.mul_add(layer.weight(step, j), sum)
                });
        }
    }
    if let Some(op) = layer.activation {
        Activate { op, values: out }.with_simd(simd);
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

/// One step over k of a tile: each row's input times the weights' vectors, added to its
/// sums.
#[inline(always)]
fn step<S: Simd, const R: usize, const V: usize>(
    simd: S,
    sums: &mut [[S::f32s; V]; R],
    weights: &[S::f32s],
    xs: &[f32],
) {
    for (row, x) in sums.iter_mut().zip(xs) {
        let input = simd.splat_f32s(*x);
        for (sum, w) in row.iter_mut().zip(weights) {
            *sum = simd.mul_add_f32s(input, *w, *sum);
        }
    }
}

/// `R` rows of `k` values each, cut to exactly `k` (the kernel zips them with the weights'
/// `k` steps).
#[inline(always)]
fn rows_of<const R: usize>(x: &[f32], k: usize) -> [&[f32]; R] {
    std::array::from_fn(|r| &x[r * k..r * k + k])
}

/// What every tile of one layer run shares.
struct Tile<'a, S: Simd> {
    simd: S,
    weights: &'a [S::f32s],
    bias: &'a [S::f32s],
    vectors: usize,
    k: usize,
    n: usize,
    activation: Option<Unary>,
}

impl<S: Simd> Tile<'_, S> {
    /// Every row of `x` into `out`, `TILE_ROWS` at a time.
    #[inline(always)]
    fn all(&self, x: &[f32], out: &mut [f32]) {
        // One group of columns (two vectors) at a time, through every row: the group's
        // weights (k x 16 floats, 16 KiB at k = 256) stay in the L1 cache while the rows go
        // by.
        let mut first = 0;
        while first < self.vectors {
            let width = (self.vectors - first).min(2);
            let weights = &self.weights[first * self.k..(first + width) * self.k];
            if width == 2 {
                self.group::<2>(x, out, first, weights);
            } else {
                self.group::<1>(x, out, first, weights);
            }
            first += width;
        }
    }

    /// `V` vectors of columns from vector `first`, for every row, `TILE_ROWS` at a time.
    #[inline(always)]
    fn group<const V: usize>(&self, x: &[f32], out: &mut [f32], first: usize, weights: &[S::f32s]) {
        let (k, n) = (self.k, self.n);
        let mut x_rows = x.chunks_exact(k * TILE_ROWS);
        let mut out_rows = out.chunks_exact_mut(n * TILE_ROWS);
        for (x, out) in (&mut x_rows).zip(&mut out_rows) {
            self.columns::<TILE_ROWS, V>(&rows_of(x, k), out, first, weights);
        }
        let x_rest = x_rows.remainder();
        let out_rest = out_rows.into_remainder();
        for (x, out) in x_rest.chunks_exact(k).zip(out_rest.chunks_exact_mut(n)) {
            self.columns::<1, V>(&[x], out, first, weights);
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
        weights: &[S::f32s],
    ) {
        let simd = self.simd;
        let mut sums = [[simd.splat_f32s(0.0); V]; R];
        for row in &mut sums {
            row.copy_from_slice(&self.bias[first..first + V]);
        }
        // The rows and the weights walked together by zipped iterators: the compiler takes
        // the shortest length once and checks no index inside the loop (indexing each row
        // by step cost a compare and branch per row per step).
        let weights = weights.chunks_exact(V);
        match inputs.as_slice() {
            [a, b, c, d, e, f] => {
                let zipped = weights.zip(*a).zip(*b).zip(*c).zip(*d).zip(*e).zip(*f);
                for ((((((w, a), b), c), d), e), f) in zipped {
                    step(simd, &mut sums, w, &[*a, *b, *c, *d, *e, *f]);
                }
            }
            [a] => {
                for (w, a) in weights.zip(*a) {
                    step(simd, &mut sums, w, &[*a]);
                }
            }
            _ => {
                for (i, w) in weights.enumerate() {
                    let xs: [f32; R] = std::array::from_fn(|r| inputs[r][i]);
                    step(simd, &mut sums, w, &xs);
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
                let value = match self.activation {
                    Some(op) => apply(simd, op, *sum),
                    None => *sum,
                };
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
        Unary::Sigmoid => sigmoid(simd, x),
    }
}

/// The logistic function from `e = exp(-|x|)`: `1 / (1 + e)` for x >= 0, `e / (1 + e)`
/// below, so small probabilities keep their relative precision (a log loss reads them).
#[inline(always)]
fn sigmoid<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let one = simd.splat_f32s(1.0);
    let e = exp_negative(simd, simd.neg_f32s(simd.abs_f32s(x)));
    let positive = simd.div_f32s(one, simd.add_f32s(one, e));
    let value = simd.select_f32s(
        simd.less_than_f32s(x, simd.splat_f32s(0.0)),
        simd.mul_f32s(e, positive),
        positive,
    );
    simd.select_f32s(simd.equal_f32s(x, x), value, x)
}

/// `exp(y)` for `y <= 0` (NaN in, anything out: the caller keeps NaN), within 2 ulp: `y`
/// split into `n ln 2 + r` with |r| <= ln 2 / 2, Cephes' polynomial for `exp(r)`, and
/// `2^n` built in the exponent bits; 0 below -87.3, where the result would be subnormal.
#[inline(always)]
fn exp_negative<S: Simd>(simd: S, y: S::f32s) -> S::f32s {
    // 1.5 x 2^23: adding it rounds to an integer, left in the low bits of the mantissa.
    const ROUND: f32 = 12_582_912.0;
    // Cephes' coefficients, as printed there (more digits than an f32 holds).
    #[allow(clippy::excessive_precision)]
    const POLY: [f32; 6] = [
        1.987_569_150_0e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    let floor = simd.splat_f32s(-87.3);
    let clamped = simd.max_f32s(y, floor);
    let t = simd.mul_add_f32s(
        clamped,
        simd.splat_f32s(std::f32::consts::LOG2_E),
        simd.splat_f32s(ROUND),
    );
    let n = simd.sub_f32s(t, simd.splat_f32s(ROUND));
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-0.693_359_4), clamped);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(2.121_944_4e-4), r);
    let mut p = simd.splat_f32s(POLY[0]);
    for c in &POLY[1..] {
        p = simd.mul_add_f32s(p, r, simd.splat_f32s(*c));
    }
    let r2 = simd.mul_f32s(r, r);
    let p = simd.add_f32s(simd.mul_add_f32s(p, r2, r), simd.splat_f32s(1.0));
    // n + 127 in the exponent field: 2^n (n is -126 to 0 here).
    let biased = simd.add_u32s(
        simd.sub_u32s(
            simd.transmute_u32s_f32s(t),
            simd.transmute_u32s_f32s(simd.splat_f32s(ROUND)),
        ),
        simd.splat_u32s(127),
    );
    let scale = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    let value = simd.mul_f32s(p, scale);
    simd.select_f32s(simd.less_than_f32s(y, floor), simd.splat_f32s(0.0), value)
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
            if op == Unary::Sigmoid {
                // Small probabilities to their relative precision, not just absolutely.
                for (v, g) in values.iter().zip(&got) {
                    let want = reference(op, *v);
                    assert!(
                        (g - want).abs() <= 4.0 * f32::EPSILON * want,
                        "sigmoid({v}) = {g}, want {want}"
                    );
                }
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
                let mut layer = Layer::new(k, n, &w).expect("a layer");
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
                // Vectors other than those the weights were packed for: the plain path.
                let mut scalar = vec![0.0; rows * n];
                pulp::Scalar::new().vectorize(LayerRun {
                    layer: &layer,
                    x: &x,
                    out: &mut scalar,
                });
                for (g, w) in scalar.iter().zip(&want) {
                    assert!((g - w.max(0.0)).abs() <= 1e-5, "scalar {g} vs {w}");
                }
            }
        }
    }
}

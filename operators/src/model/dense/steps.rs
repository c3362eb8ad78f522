//! The compiled operations of a dense graph, each over a block of rows held in numbered
//! slots (row-major, `cols` values a row).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// One slot's values for the current block.
#[derive(Debug, Clone)]
pub enum Buffer {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Buffer {
    fn f32(&self) -> &[f32] {
        match self {
            Buffer::F32(v) => v,
            Buffer::I64(_) => &[],
        }
    }

    fn i64(&self) -> &[i64] {
        match self {
            Buffer::I64(v) => v,
            Buffer::F32(_) => &[],
        }
    }

    pub fn extend_from(&mut self, other: &Buffer) {
        match (self, other) {
            (Buffer::F32(out), Buffer::F32(v)) => out.extend_from_slice(v),
            (Buffer::I64(out), Buffer::I64(v)) => out.extend_from_slice(v),
            // The compiler gives an output slot one type for the whole run.
            _ => {}
        }
    }
}

/// One side of an element-wise operation: a slot of the block, or a constant broadcast over
/// the rows (one value per column, or one for all).
#[derive(Debug, Clone)]
pub enum Operand {
    Slot(usize),
    Row(Vec<f32>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Tanh,
    Sigmoid,
    LeakyRelu(f32),
}

#[derive(Debug, Clone)]
pub enum Step {
    /// `x [rows, k] @ weights [k, n] (+ bias [n])`.
    Gemm {
        x: usize,
        out: usize,
        k: usize,
        n: usize,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    Binary {
        op: Binary,
        a: Operand,
        b: Operand,
        cols: usize,
        out: usize,
    },
    Unary {
        op: Unary,
        x: usize,
        out: usize,
    },
    Softmax {
        x: usize,
        cols: usize,
        out: usize,
    },
    /// `ai.onnx.ml` Scaler: `(x - offset) * scale`, per column or for all.
    Scaler {
        x: usize,
        cols: usize,
        offset: Vec<f32>,
        scale: Vec<f32>,
        out: usize,
    },
    /// Columns of several slots side by side (`Concat` on axis 1).
    Concat {
        parts: Vec<(usize, usize)>,
        out: usize,
    },
    /// Index of each row's largest value (the first of equal ones), as int64.
    ArgMax {
        x: usize,
        cols: usize,
        out: usize,
    },
    /// `ArrayFeatureExtractor(classes, indices)`: each index replaced by its class label.
    Classes {
        indices: usize,
        classes: Vec<i64>,
        out: usize,
    },
    /// `Cast` to int64 (truncating toward zero, as ONNX Runtime does).
    ToInt64 {
        x: usize,
        out: usize,
    },
    ToFloat {
        x: usize,
        out: usize,
    },
}

impl Step {
    /// Runs the step over a block of `rows` rows.
    pub fn run(&self, slots: &mut [Buffer], rows: usize) {
        let result = match self {
            Step::Gemm {
                x,
                k,
                n,
                weights,
                bias,
                ..
            } => Buffer::F32(gemm(
                slots[*x].f32(),
                rows,
                *k,
                *n,
                weights,
                bias.as_deref(),
            )),
            Step::Binary { op, a, b, cols, .. } => Buffer::F32(binary(
                *op,
                operand(slots, a),
                operand(slots, b),
                rows,
                *cols,
            )),
            Step::Unary { op, x, .. } => {
                Buffer::F32(slots[*x].f32().iter().map(|v| unary(*op, *v)).collect())
            }
            Step::Softmax { x, cols, .. } => Buffer::F32(softmax(slots[*x].f32(), *cols)),
            Step::Scaler {
                x,
                cols,
                offset,
                scale,
                ..
            } => Buffer::F32(
                slots[*x]
                    .f32()
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v - at(offset, i % cols)) * at(scale, i % cols))
                    .collect(),
            ),
            Step::Concat { parts, .. } => {
                let cols: usize = parts.iter().map(|(_, c)| c).sum();
                let mut out = Vec::with_capacity(rows * cols);
                for row in 0..rows {
                    for (slot, c) in parts {
                        out.extend_from_slice(&slots[*slot].f32()[row * c..(row + 1) * c]);
                    }
                }
                Buffer::F32(out)
            }
            Step::ArgMax { x, cols, .. } => Buffer::I64(
                slots[*x]
                    .f32()
                    .chunks_exact(*cols)
                    .map(|row| argmax(row) as i64)
                    .collect(),
            ),
            Step::Classes {
                indices, classes, ..
            } => Buffer::I64(
                slots[*indices]
                    .i64()
                    .iter()
                    .map(|i| {
                        usize::try_from(*i)
                            .ok()
                            .and_then(|i| classes.get(i))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect(),
            ),
            Step::ToInt64 { x, .. } => {
                Buffer::I64(slots[*x].f32().iter().map(|v| *v as i64).collect())
            }
            Step::ToFloat { x, .. } => {
                Buffer::F32(slots[*x].i64().iter().map(|v| *v as f32).collect())
            }
        };
        slots[self.out()] = result;
    }

    fn out(&self) -> usize {
        match self {
            Step::Gemm { out, .. }
            | Step::Binary { out, .. }
            | Step::Unary { out, .. }
            | Step::Softmax { out, .. }
            | Step::Scaler { out, .. }
            | Step::Concat { out, .. }
            | Step::ArgMax { out, .. }
            | Step::Classes { out, .. }
            | Step::ToInt64 { out, .. }
            | Step::ToFloat { out, .. } => *out,
        }
    }
}

/// A per-column constant's value for column `col` (one value: the same for all).
fn at(values: &[f32], col: usize) -> f32 {
    if values.len() == 1 {
        values[0]
    } else {
        values[col]
    }
}

enum Side<'a> {
    Block(&'a [f32]),
    Row(&'a [f32]),
}

fn operand<'a>(slots: &'a [Buffer], operand: &'a Operand) -> Side<'a> {
    match operand {
        Operand::Slot(s) => Side::Block(slots[*s].f32()),
        Operand::Row(values) => Side::Row(values),
    }
}

fn binary(op: Binary, a: Side<'_>, b: Side<'_>, rows: usize, cols: usize) -> Vec<f32> {
    let f = |x: f32, y: f32| match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
    };
    let value = |side: &Side<'_>, i: usize| match side {
        Side::Block(v) => v[i],
        Side::Row(v) => at(v, i % cols),
    };
    (0..rows * cols)
        .map(|i| f(value(&a, i), value(&b, i)))
        .collect()
}

fn gemm(x: &[f32], rows: usize, k: usize, n: usize, w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    // The bias first, then C = 1 * A B + 1 * C: one pass over the output.
    let mut out = match bias {
        Some(b) => b.iter().copied().cycle().take(rows * n).collect(),
        None => vec![0.0; rows * n],
    };
    let (Ok(a), Ok(b), Ok(mut c)) = (
        ArrayView2::from_shape((rows, k), x),
        ArrayView2::from_shape((k, n), w),
        ArrayViewMut2::from_shape((rows, n), &mut out),
    ) else {
        // The compiler sized every slot; a mismatch cannot be reached.
        return vec![f32::NAN; rows * n];
    };
    general_mat_mul(1.0, &a, &b, if bias.is_some() { 1.0 } else { 0.0 }, &mut c);
    out
}

fn unary(op: Unary, v: f32) -> f32 {
    match op {
        // NaN stays NaN, as in ONNX Runtime (`f32::max` would make it 0).
        Unary::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        Unary::Tanh => v.tanh(),
        Unary::Sigmoid => {
            // As ONNX Runtime: no overflow in exp for large |v|.
            if v >= 0.0 {
                1.0 / (1.0 + (-v).exp())
            } else {
                let e = v.exp();
                e / (1.0 + e)
            }
        }
        Unary::LeakyRelu(alpha) => {
            if v >= 0.0 {
                v
            } else {
                v * alpha
            }
        }
    }
}

fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let start = out.len();
        let mut sum = 0.0f32;
        for v in row {
            let e = (v - max).exp();
            sum += e;
            out.push(e);
        }
        for v in &mut out[start..] {
            *v /= sum;
        }
    }
    out
}

/// The first index of the largest value; NaN never wins.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate().skip(1) {
        if *v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

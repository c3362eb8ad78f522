//! The compiled operations of a dense graph, each over a block of rows held in numbered
//! slots (row-major, `cols` values a row).

pub use shoal_kernels::Unary;
use shoal_kernels::{Layer, activate};

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

    /// This buffer's allocation for floats, emptied.
    fn floats(self) -> Vec<f32> {
        match self {
            Buffer::F32(mut values) => {
                values.clear();
                values
            }
            Buffer::I64(_) => Vec::new(),
        }
    }

    /// This buffer's allocation for integers, emptied.
    fn ints(self) -> Vec<i64> {
        match self {
            Buffer::I64(mut values) => {
                values.clear();
                values
            }
            Buffer::F32(_) => Vec::new(),
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

/// `ai.onnx.ml` Normalizer's norms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// `activation(x [rows, k] @ weights [k, n] + bias [n])`.
    Gemm {
        x: usize,
        out: usize,
        layer: Layer,
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
    /// Each row divided by its norm (left as it is when the norm is 0).
    Normalize {
        x: usize,
        cols: usize,
        norm: Norm,
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
    /// Runs the step over a block of `rows` rows. Each step writes into the buffer its slot
    /// had for the last block, so after the first block a run allocates nothing.
    pub fn run(&self, slots: &mut [Buffer], rows: usize) {
        let out = self.out();
        let last = std::mem::replace(&mut slots[out], Buffer::F32(Vec::new()));
        slots[out] = self.compute(slots, rows, last);
    }

    fn compute(&self, slots: &[Buffer], rows: usize, last: Buffer) -> Buffer {
        match self {
            Step::Gemm { x, layer, .. } => {
                let mut values = last.floats();
                layer.run(slots[*x].f32(), rows, &mut values);
                Buffer::F32(values)
            }
            Step::Unary { op, x, .. } => {
                let mut values = last.floats();
                values.extend_from_slice(slots[*x].f32());
                activate(*op, &mut values);
                Buffer::F32(values)
            }
            Step::Binary { op, a, b, cols, .. } => {
                let mut values = last.floats();
                binary(
                    *op,
                    operand(slots, a),
                    operand(slots, b),
                    rows,
                    *cols,
                    &mut values,
                );
                Buffer::F32(values)
            }
            Step::Softmax { x, cols, .. } => {
                let mut values = last.floats();
                softmax(slots[*x].f32(), *cols, &mut values);
                Buffer::F32(values)
            }
            Step::Scaler {
                x,
                cols,
                offset,
                scale,
                ..
            } => {
                let mut values = last.floats();
                values.extend(
                    slots[*x]
                        .f32()
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v - at(offset, i % cols)) * at(scale, i % cols)),
                );
                Buffer::F32(values)
            }
            Step::Normalize { x, cols, norm, .. } => {
                let mut values = last.floats();
                for row in slots[*x].f32().chunks_exact(*cols) {
                    normalize(*norm, row, &mut values);
                }
                Buffer::F32(values)
            }
            Step::Concat { parts, .. } => {
                let mut values = last.floats();
                for row in 0..rows {
                    for (slot, c) in parts {
                        values.extend_from_slice(&slots[*slot].f32()[row * c..(row + 1) * c]);
                    }
                }
                Buffer::F32(values)
            }
            Step::ArgMax { x, cols, .. } => {
                let mut values = last.ints();
                values.extend(
                    slots[*x]
                        .f32()
                        .chunks_exact(*cols)
                        .map(|row| argmax(row) as i64),
                );
                Buffer::I64(values)
            }
            Step::Classes {
                indices, classes, ..
            } => {
                let mut values = last.ints();
                values.extend(slots[*indices].i64().iter().map(|i| {
                    usize::try_from(*i)
                        .ok()
                        .and_then(|i| classes.get(i))
                        .copied()
                        .unwrap_or(0)
                }));
                Buffer::I64(values)
            }
            Step::ToInt64 { x, .. } => {
                let mut values = last.ints();
                values.extend(slots[*x].f32().iter().map(|v| *v as i64));
                Buffer::I64(values)
            }
            Step::ToFloat { x, .. } => {
                let mut values = last.floats();
                values.extend(slots[*x].i64().iter().map(|v| *v as f32));
                Buffer::F32(values)
            }
        }
    }

    fn out(&self) -> usize {
        match self {
            Step::Gemm { out, .. }
            | Step::Binary { out, .. }
            | Step::Unary { out, .. }
            | Step::Softmax { out, .. }
            | Step::Scaler { out, .. }
            | Step::Normalize { out, .. }
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

fn binary(op: Binary, a: Side<'_>, b: Side<'_>, rows: usize, cols: usize, out: &mut Vec<f32>) {
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
    out.extend((0..rows * cols).map(|i| f(value(&a, i), value(&b, i))));
}

fn softmax(x: &[f32], cols: usize, out: &mut Vec<f32>) {
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
}

/// One row of `Normalizer`, as ONNX Runtime computes it: MAX ignores NaN (its `std::max`
/// keeps the running maximum), L2 keeps each value's sign.
fn normalize(norm: Norm, row: &[f32], out: &mut Vec<f32>) {
    let divisor = match norm {
        Norm::Max => row
            .iter()
            .fold(f32::MIN, |max, v| if max < *v { *v } else { max }),
        Norm::L1 => row.iter().map(|v| v.abs()).sum(),
        Norm::L2 => row.iter().map(|v| v * v).sum(),
    };
    if divisor == 0.0 {
        out.extend_from_slice(row);
        return;
    }
    match norm {
        Norm::Max | Norm::L1 => out.extend(row.iter().map(|v| v / divisor)),
        Norm::L2 => out.extend(row.iter().map(|v| {
            let magnitude = (v * v / divisor).sqrt();
            if *v < 0.0 { -magnitude } else { magnitude }
        })),
    }
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

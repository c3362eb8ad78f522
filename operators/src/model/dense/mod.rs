//! A native evaluator for the dense graphs most tabular models are: chains of MatMul/Gemm,
//! bias Adds and activations (Relu, Tanh, Sigmoid, LeakyRelu, Softmax), with what skl2onnx
//! puts around them (Scaler, Normalizer, Cast, Identity, Reshape, and a classifier's label
//! tail: Sub, Concat, ArgMax, ArrayFeatureExtractor), and `ai.onnx.ml`'s linear models
//! (LinearClassifier, LinearRegressor).
//!
//! ONNX Runtime runs such a graph one operator at a time over the whole batch, each with
//! its own intermediate tensor; for the small layers of tabular models (K and N from 2 to
//! 256) that overhead is a large share of the time. Here the graph is compiled once at
//! model load into [`Step`]s over numbered slots and run block by block of rows, so a
//! block's intermediates stay in cache and its buffers are reused from block to block; a
//! GEMM takes the bias and activation after it into its kernel (`shoal_kernels::Layer`,
//! SIMD chosen at run time). Answers stay within 1e-5 of ONNX Runtime's (tests compare both
//! on every committed dense model, with NaN, infinite and large inputs).
//!
//! Any other graph runs on ONNX Runtime as before: [`NativeDense::from_onnx`] says why in
//! its `Err`. `SET shoal.inference.native_dense = false` turns the evaluator off.

mod compile;
mod steps;
#[cfg(test)]
mod tests;

use super::trees::NativeTensor;
use super::trees::attributes::Unsupported;
use steps::{Buffer, Step};

/// Rows run through the whole graph at a time: a block's widest intermediates (256 columns)
/// take 256 KiB, so they stay in the L2 cache between one layer and the next.
const BLOCK_ROWS: usize = 256;

#[derive(Debug)]
pub struct NativeDense {
    steps: Vec<Step>,
    /// Slots the steps write; slot 0 is the input block.
    slots: usize,
    width: usize,
    outputs: Vec<GraphOutput>,
}

/// Where a graph output is found after the steps ran, and its shape after the batch
/// dimension.
#[derive(Debug, Clone)]
struct GraphOutput {
    slot: usize,
    int64: bool,
    dims: Vec<usize>,
}

impl NativeDense {
    /// Compiles a model whose graph reads one float [N, width] input through operators this
    /// evaluator has; `Err` says why another graph is left to ONNX Runtime.
    pub fn from_onnx(bytes: &[u8], width: usize) -> Result<Self, Unsupported> {
        compile::compile(bytes, width)
    }

    /// Every graph output for `rows` rows of `x` (row-major, `width` floats a row), as ONNX
    /// Runtime would give them.
    pub fn run(&self, x: &[f32], rows: usize) -> Vec<NativeTensor> {
        let never = || Ok::<(), std::convert::Infallible>(());
        match self.run_until(x, rows, never) {
            Ok(outputs) => outputs,
            Err(never) => match never {},
        }
    }

    /// [`NativeDense::run`], asking `go_on` before each block of rows whether to go on (a
    /// cancelled statement's run stops within one block).
    pub fn run_until<E>(
        &self,
        x: &[f32],
        rows: usize,
        go_on: impl Fn() -> Result<(), E>,
    ) -> Result<Vec<NativeTensor>, E> {
        let mut outputs: Vec<Buffer> = self
            .outputs
            .iter()
            .map(|o| {
                let len = rows * o.dims.iter().product::<usize>();
                if o.int64 {
                    Buffer::I64(Vec::with_capacity(len))
                } else {
                    Buffer::F32(Vec::with_capacity(len))
                }
            })
            .collect();
        let mut slots: Vec<Buffer> = (0..self.slots).map(|_| Buffer::F32(Vec::new())).collect();
        for start in (0..rows).step_by(BLOCK_ROWS) {
            go_on()?;
            let block = BLOCK_ROWS.min(rows - start);
            if let Buffer::F32(input) = &mut slots[0] {
                input.clear();
                input.extend_from_slice(&x[start * self.width..(start + block) * self.width]);
            }
            for step in &self.steps {
                step.run(&mut slots, block);
            }
            for (output, out) in self.outputs.iter().zip(&mut outputs) {
                out.extend_from(&slots[output.slot]);
            }
        }
        Ok(self
            .outputs
            .iter()
            .zip(outputs)
            .map(|(output, data)| {
                let dims: Vec<i64> = std::iter::once(rows)
                    .chain(output.dims.iter().copied())
                    .map(|d| d as i64)
                    .collect();
                match data {
                    Buffer::F32(data) => NativeTensor::Float32 { dims, data },
                    Buffer::I64(data) => NativeTensor::Int64 { dims, data },
                }
            })
            .collect())
    }
}

//! Feature kernels: vectorized Arrow functions over whole columns, used by the SQL functions
//! of [`crate::udf::feature`] and by the pipelines' feature steps.
//!
//! - [`matrix`]: feature columns to the row-major matrix an ONNX tensor views;
//! - [`numeric`]: scaling, imputation, log1p, clip, bucketize;
//! - [`categorical`]: one-hot and ordinal encoding, the hashing trick;
//! - [`text`]: token counts, hashed n-grams, regex extraction;
//! - [`tokens`]: a model's tokenizer over texts: token id tensors, chunks of long texts;
//! - [`image`]: images (binary values) to normalised Float32 tensors;
//! - [`audio`]: recordings (binary values) to mono waveforms at a fixed rate and length;
//! - [`spectrogram`]: waveforms to log-mel spectrograms (librosa's and Whisper's);
//! - [`tensor`]: the shape of a tensor column and its values without a copy.
//!
//! Every kernel takes an Arrow array and returns one, never looping over rows through
//! `ScalarValue`; string kernels on dictionary arrays work once per distinct value.

pub mod audio;
pub mod categorical;
pub mod decoded;
pub mod image;
pub mod matrix;
pub mod numeric;
pub mod spectrogram;
pub mod tensor;
pub mod text;
pub mod tokens;

use datafusion::arrow::error::ArrowError;

/// Widest feature vector a kernel builds per row (`hashed_ngrams` buckets, `one_hot` words):
/// checked while planning, so a statement asking for more fails before any batch is read.
pub const MAX_FEATURE_WIDTH: usize = 16_384;
/// Bytes a kernel may allocate for one batch's output (8192 rows of the widest vector).
pub const MAX_BATCH_OUTPUT_BYTES: usize = 512 << 20;

/// A zeroed `rows` x `width` Float32 block for one batch's output. Past
/// [`MAX_BATCH_OUTPUT_BYTES`], or when the allocator refuses, it is an error naming the size
/// (`MemoryError`, a resources-exhausted error for the client), never an abort.
pub(crate) fn zeroed_block(rows: usize, width: usize) -> Result<Vec<f32>, ArrowError> {
    zeroed(rows, width, "Float32")
}

/// [`zeroed_block`] of any number type (`kind` names it in the error).
pub(crate) fn zeroed<T: Copy + Default>(
    rows: usize,
    width: usize,
    kind: &str,
) -> Result<Vec<T>, ArrowError> {
    let too_large = |rows, width| too_large(rows, width, kind);
    let cells = rows.checked_mul(width);
    let bytes = cells.and_then(|c| c.checked_mul(size_of::<T>()));
    let (Some(cells), Some(bytes)) = (cells, bytes) else {
        return Err(too_large(rows, width));
    };
    if bytes > MAX_BATCH_OUTPUT_BYTES {
        return Err(too_large(rows, width));
    }
    // Held while the block is built (DataFusion accounts for it downstream, if at all, only
    // once it is a batch): a block the process's pool cannot hold now is refused.
    let _reserved = crate::runtime::reserve("feature kernel output", bytes)
        .map_err(|e| ArrowError::MemoryError(e.to_string()))?;
    let mut block = Vec::new();
    block
        .try_reserve_exact(cells)
        .map_err(|_| too_large(rows, width))?;
    block.resize(cells, T::default());
    Ok(block)
}

fn too_large(rows: usize, width: usize, kind: &str) -> ArrowError {
    ArrowError::MemoryError(format!(
        "{rows} rows x {width} features of {kind} is over the {} MiB a kernel may build \
         for one batch",
        MAX_BATCH_OUTPUT_BYTES >> 20
    ))
}

pub use matrix::{cast_all, is_numeric_feature, stack_as_f32, stack_row_major};

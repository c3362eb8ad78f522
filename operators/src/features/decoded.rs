//! What the decoders of binary values share: the bytes of each row, and one tensor per row
//! written in parallel into one zeroed block, a null where a value does not decode (or an
//! error naming the row, when strict). Image and audio kernels supply the per-row decoder.

use super::zeroed_block;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;
use rayon::prelude::*;
use std::sync::Arc;

/// The bytes of each row of a binary column (None for a null).
pub fn binary_values(x: &ArrayRef) -> Result<Vec<Option<&[u8]>>, ArrowError> {
    let rows = x.len();
    Ok(match x.data_type() {
        DataType::Binary => x.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => x.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => x.as_binary_view().iter().collect(),
        DataType::FixedSizeBinary(_) => x.as_fixed_size_binary().iter().collect(),
        DataType::Null => vec![None; rows],
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "expected a binary column, found {other}"
            )));
        }
    })
}

/// One `width`-value tensor per row of `x`, each written by `write` into its zeroed slot, one
/// row per rayon task. A null where the value is null or `write` fails; with `strict`, the
/// first failure fails the batch: `row 3 of the batch is not <what> that decodes: <why>`.
pub fn tensor_per_row(
    x: &ArrayRef,
    width: usize,
    strict: bool,
    what: &str,
    write: impl Fn(&[u8], &mut [f32]) -> Result<(), String> + Sync,
) -> Result<FixedSizeListArray, ArrowError> {
    let bytes = binary_values(x)?;
    let mut block = zeroed_block(bytes.len(), width)?;
    let outcomes: Vec<Option<Result<(), String>>> = block
        .par_chunks_mut(width.max(1))
        .zip(bytes.par_iter())
        .map(|(out, value)| value.map(|b| write(b, out)))
        .collect();
    if strict
        && let Some((row, Some(Err(reason)))) = outcomes
            .iter()
            .enumerate()
            .find(|(_, o)| matches!(o, Some(Err(_))))
    {
        return Err(ArrowError::ComputeError(format!(
            "row {row} of the batch is not {what} that decodes: {reason}"
        )));
    }
    let valid = NullBuffer::from_iter(outcomes.iter().map(|o| matches!(o, Some(Ok(())))));
    let nulls = (valid.null_count() > 0).then_some(valid);
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    FixedSizeListArray::try_new(
        item,
        width as i32,
        Arc::new(Float32Array::from(block)),
        nulls,
    )
}

/// Why each row does not decode with `decode`: null where it does (or is null).
pub fn decode_errors(
    x: &ArrayRef,
    decode: impl Fn(&[u8]) -> Option<String> + Sync,
) -> Result<datafusion::arrow::array::StringArray, ArrowError> {
    let bytes = binary_values(x)?;
    let reasons: Vec<Option<String>> = bytes
        .par_iter()
        .map(|value| value.and_then(&decode))
        .collect();
    Ok(datafusion::arrow::array::StringArray::from(reasons))
}

//! Texts through a model's tokenizer (Hugging Face `tokenizers`, see
//! [`crate::model::tokenizer`]): the token tensors a transformer takes, and long texts cut
//! into chunks of a model's context length.
//!
//! Texts are strings or bytes (a files table's `content`); bytes that are not UTF-8 give a
//! null row, as a file that does not decode does for images. A batch is encoded with one
//! `encode_batch` call, which spreads the texts over the CPU pool's threads.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Int64Array, LargeStringArray, ListBuilder,
    StringBuilder, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::error::{ArrowError, Result};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// The fields of [`token_tensors`]' struct, named as transformer exports name their inputs,
/// so `predict` feeds each to the model input of its name.
pub const TENSOR_FIELDS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

/// The type of [`token_tensors`]' result for `max_tokens`.
pub fn token_tensors_type(max_tokens: usize) -> DataType {
    DataType::Struct(
        TENSOR_FIELDS
            .iter()
            .map(|name| Field::new(*name, id_list_type(max_tokens), true))
            .collect::<Fields>(),
    )
}

fn id_list_type(max_tokens: usize) -> DataType {
    DataType::new_fixed_size_list(DataType::Int64, max_tokens as i32, false)
}

/// The texts of `x` (strings of any Arrow kind, or bytes), null where a value is null or
/// its bytes are not UTF-8.
fn texts(x: &ArrayRef) -> Result<LargeStringArray> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    Ok(cast_with_options(x, &DataType::LargeUtf8, &options)?
        .as_string::<i64>()
        .clone())
}

/// Each text's `input_ids`, `attention_mask` and `token_type_ids`, truncated and padded
/// to `max_tokens` by the tokenizer (`tokenizer` is set up for that length: see
/// [`crate::model::ModelTokenizer::fixed_length`]). A null text is a null row.
pub fn token_tensors(
    x: &ArrayRef,
    tokenizer: &Tokenizer,
    max_tokens: usize,
) -> Result<StructArray> {
    let texts = texts(x)?;
    let present: Vec<&str> = texts.iter().flatten().collect();
    let encoded = tokenizer
        .encode_batch(present, true)
        .map_err(|e| ArrowError::ComputeError(format!("tokenizing: {e}")))?;
    let rows = texts.len();
    let mut columns: [Vec<i64>; 3] = [
        super::zeroed(rows, max_tokens, "Int64")?,
        super::zeroed(rows, max_tokens, "Int64")?,
        super::zeroed(rows, max_tokens, "Int64")?,
    ];
    let mut encodings = encoded.iter();
    for row in (0..rows).filter(|r| texts.is_valid(*r)) {
        let Some(e) = encodings.next() else { break };
        let parts: [&[u32]; 3] = [e.get_ids(), e.get_attention_mask(), e.get_type_ids()];
        for (column, part) in columns.iter_mut().zip(parts) {
            let cells = &mut column[row * max_tokens..(row + 1) * max_tokens];
            for (cell, v) in cells.iter_mut().zip(part) {
                *cell = i64::from(*v);
            }
        }
    }
    let nulls = texts.nulls().cloned();
    let item = Arc::new(Field::new("item", DataType::Int64, false));
    let children = columns
        .into_iter()
        .map(|values| {
            let list = FixedSizeListArray::try_new(
                item.clone(),
                max_tokens as i32,
                Arc::new(Int64Array::from(values)),
                nulls.clone(),
            )?;
            Ok(Arc::new(list) as ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    let DataType::Struct(fields) = token_tensors_type(max_tokens) else {
        return Err(ArrowError::ComputeError(
            "token tensors are a struct".into(),
        ));
    };
    StructArray::try_new(fields, children, nulls)
}

/// Each text cut into pieces of at most `max_tokens` tokens (special tokens not counted:
/// leave room for them in the model's length), consecutive pieces sharing `overlap` tokens,
/// cut at token boundaries of the original text. A null text is a null list; a text with
/// no tokens an empty one.
pub fn text_chunks(
    x: &ArrayRef,
    tokenizer: &Tokenizer,
    max_tokens: usize,
    overlap: usize,
) -> Result<datafusion::arrow::array::ListArray> {
    if max_tokens == 0 || overlap >= max_tokens {
        return Err(ArrowError::InvalidArgumentError(format!(
            "text_chunks needs max_tokens >= 1 and overlap < max_tokens, got {max_tokens} and \
             {overlap}"
        )));
    }
    let texts = texts(x)?;
    let present: Vec<&str> = texts.iter().flatten().collect();
    let encoded = tokenizer
        .encode_batch(present, false)
        .map_err(|e| ArrowError::ComputeError(format!("tokenizing: {e}")))?;
    let mut encodings = encoded.iter();
    let mut out = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        false,
    )));
    for text in texts.iter() {
        let Some(text) = text else {
            out.append_null();
            continue;
        };
        let Some(e) = encodings.next() else { break };
        for (start, end) in windows(e.get_offsets(), max_tokens, overlap) {
            out.values()
                .append_value(text.get(start..end).unwrap_or_default());
        }
        out.append(true);
    }
    let chunks = out.finish();
    if let Some(nulls) = texts.nulls()
        && chunks.nulls().map(NullBuffer::null_count) != Some(nulls.null_count())
    {
        return Err(ArrowError::ComputeError(
            "text_chunks: the tokenizer returned fewer texts than it was given".into(),
        ));
    }
    Ok(chunks)
}

/// The byte ranges of the text covered by each window of `max_tokens` token `offsets`,
/// windows starting `max_tokens - overlap` tokens apart; the last one ends at the last token.
fn windows(offsets: &[(usize, usize)], max_tokens: usize, overlap: usize) -> Vec<(usize, usize)> {
    let step = max_tokens - overlap;
    let mut out = Vec::with_capacity(offsets.len().div_ceil(step));
    let mut start = 0;
    while start < offsets.len() {
        let end = (start + max_tokens).min(offsets.len());
        let window = &offsets[start..end];
        // Offsets of word pieces rise, but take the extremes: normalisers may reorder.
        let from = window.iter().map(|o| o.0).min().unwrap_or(0);
        let to = window.iter().map(|o| o.1).max().unwrap_or(from);
        out.push((from, to.max(from)));
        if end == offsets.len() {
            break;
        }
        start += step;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::tokenizer::{ModelTokenizer, attach};
    use datafusion::arrow::array::{BinaryArray, StringArray};
    use datafusion::arrow::datatypes::Int64Type;
    use std::path::Path;

    fn tokenizer() -> ModelTokenizer {
        let dir = Path::new("../tests/data/text/models");
        let model = std::fs::read(dir.join("review_sentiment.onnx")).unwrap();
        let json = std::fs::read_to_string(dir.join("review_sentiment.tokenizer.json")).unwrap();
        ModelTokenizer::embedded("m", &attach(&model, &json))
            .unwrap()
            .unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Review {
        text: String,
        input_ids: Vec<i64>,
        attention_mask: Vec<i64>,
    }

    #[test]
    fn ids_and_masks_equal_the_python_librarys_for_the_same_tokenizer_file() {
        let reviews: Vec<Review> = std::fs::read_to_string("../tests/data/text/reviews.jsonl")
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tok = tokenizer();
        let fixed = tok.fixed_length(64).unwrap();
        let mut values: Vec<Option<String>> =
            reviews.iter().map(|r| Some(r.text.clone())).collect();
        values.insert(3, None);
        let x: ArrayRef = Arc::new(StringArray::from(values));
        let out = token_tensors(&x, &fixed, 64).unwrap();
        assert!(out.is_null(3));
        let ids = out.column(0).as_fixed_size_list();
        let mask = out.column(1).as_fixed_size_list();
        assert!(
            ids.is_null(3) && mask.is_null(3),
            "children carry the nulls"
        );
        for (i, review) in reviews.iter().enumerate() {
            let row = if i < 3 { i } else { i + 1 };
            let got = ids.value(row);
            assert_eq!(
                got.as_primitive::<Int64Type>().values(),
                &review.input_ids[..]
            );
            let got = mask.value(row);
            assert_eq!(
                got.as_primitive::<Int64Type>().values(),
                &review.attention_mask[..]
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_a_null_row() {
        let tok = tokenizer();
        let fixed = tok.fixed_length(8).unwrap();
        let x: ArrayRef = Arc::new(BinaryArray::from(vec![&b"lovely room"[..], &[0xff, 0xfe]]));
        let out = token_tensors(&x, &fixed, 8).unwrap();
        assert!(out.is_valid(0) && out.is_null(1));
        let chunks = text_chunks(&x, tok.plain(), 4, 1).unwrap();
        assert!(chunks.is_valid(0) && chunks.is_null(1));
    }

    #[test]
    fn chunks_hold_at_most_max_tokens_and_overlap_by_the_tokens_asked() {
        let tok = tokenizer();
        let text = "The hotel was lovely. The staff were superb and the food was great, \
                    but the room was dull and the delivery of our box was awful after two days.";
        let x: ArrayRef = Arc::new(StringArray::from(vec![Some(text), Some(""), None]));
        let chunks = text_chunks(&x, tok.plain(), 8, 3).unwrap();
        let first = chunks.value(0);
        let pieces: Vec<&str> = first.as_string::<i32>().iter().flatten().collect();
        let total = tok.plain().encode(text, false).unwrap().len();
        assert_eq!(pieces.len(), (total - 3).div_ceil(5), "{pieces:?}");
        assert!(pieces[0].starts_with("The hotel") && pieces.last().unwrap().ends_with("days."));
        for pair in pieces.windows(2) {
            let ids = |s: &str| tok.plain().encode(s, false).unwrap().get_ids().to_vec();
            let (a, b) = (ids(pair[0]), ids(pair[1]));
            assert!(a.len() <= 8 && b.len() <= 8, "{pair:?}");
            assert_eq!(a[a.len() - 3..], b[..3], "three tokens shared: {pair:?}");
        }
        assert_eq!(chunks.value(1).len(), 0, "an empty text has no chunk");
        assert!(chunks.is_null(2));
        let err = text_chunks(&x, tok.plain(), 4, 4).unwrap_err().to_string();
        assert!(err.contains("overlap < max_tokens"), "{err}");
    }

    #[test]
    fn windows_step_by_max_tokens_less_overlap() {
        let offsets: Vec<(usize, usize)> = (0..10).map(|i| (i * 2, i * 2 + 1)).collect();
        assert_eq!(windows(&offsets, 4, 1), [(0, 7), (6, 13), (12, 19)]);
        assert_eq!(windows(&offsets, 20, 0), [(0, 19)]);
        assert!(windows(&[], 4, 0).is_empty());
    }
}

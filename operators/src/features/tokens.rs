//! Texts through a model's tokenizer (Hugging Face `tokenizers`, see
//! [`crate::model::tokenizer`]): the token tensors a transformer takes, and long texts cut
//! into chunks of a model's context length.
//!
//! Texts are strings or bytes (a files table's `content`); bytes that are not UTF-8 give a
//! null row, as a file that does not decode does for images. A batch is encoded with one
//! `encode_batch` call, which spreads the texts over the CPU pool's threads.

use super::MAX_BATCH_OUTPUT_BYTES;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Int64Array, LargeStringArray, ListBuilder,
    StringBuilder, StructArray,
};
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
    // Truncation keeps the first tokens, so only a text's beginning is tokenized.
    let limit = prefix_bytes(max_tokens);
    let present: Vec<&str> = texts.iter().flatten().map(|t| cut(t, limit)).collect();
    let valid_rows: Vec<usize> = (0..texts.len()).filter(|r| texts.is_valid(*r)).collect();
    let rows = texts.len();
    let mut columns: [Vec<i64>; 3] = [
        super::zeroed(rows, max_tokens, "Int64")?,
        super::zeroed(rows, max_tokens, "Int64")?,
        super::zeroed(rows, max_tokens, "Int64")?,
    ];
    // Each group's encodings are written out and dropped before the next group is encoded:
    // an encoding keeps the tokens truncation cut off, so holding all of a batch's would
    // cost a few dozen bytes per token of every text.
    let mut next_row = valid_rows.iter();
    for group in by_bytes(&present, ENCODE_BYTES) {
        let encoded = tokenizer
            .encode_batch(group.to_vec(), true)
            .map_err(|e| ArrowError::ComputeError(format!("tokenizing: {e}")))?;
        for (e, row) in encoded.iter().zip(next_row.by_ref()) {
            let parts: [&[u32]; 3] = [e.get_ids(), e.get_attention_mask(), e.get_type_ids()];
            for (column, part) in columns.iter_mut().zip(parts) {
                let cells = &mut column[row * max_tokens..(row + 1) * max_tokens];
                for (cell, v) in cells.iter_mut().zip(part) {
                    *cell = i64::from(*v);
                }
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
    let mut out = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        false,
    )));
    let mut written = 0usize;
    for text in texts.iter() {
        let Some(text) = text else {
            out.append_null();
            continue;
        };
        // A long document is tokenized a segment at a time and its windows made as the
        // tokens come, so memory follows a segment and a window, not the document.
        let mut windows = Windows::new(max_tokens, overlap);
        let mut ranges = Vec::new();
        for (start, segment) in segments(text, SEGMENT_BYTES) {
            let e = tokenizer
                .encode(segment, false)
                .map_err(|e| ArrowError::ComputeError(format!("tokenizing: {e}")))?;
            let offsets = e.get_offsets().iter().map(|(a, b)| (a + start, b + start));
            windows.push(offsets, &mut ranges);
            for range in ranges.drain(..) {
                append_chunk(&mut out, text, range, &mut written, max_tokens - overlap)?;
            }
        }
        if let Some(range) = windows.finish() {
            append_chunk(&mut out, text, range, &mut written, max_tokens - overlap)?;
        }
        out.append(true);
    }
    Ok(out.finish())
}

/// Appends `text[range]` as a chunk, refusing a batch whose chunks pass
/// [`MAX_BATCH_OUTPUT_BYTES`] (a small `step` over a large text repeats it many times).
fn append_chunk(
    out: &mut ListBuilder<StringBuilder>,
    text: &str,
    (from, to): (usize, usize),
    written: &mut usize,
    step: usize,
) -> Result<()> {
    *written += to - from;
    if *written > MAX_BATCH_OUTPUT_BYTES {
        return Err(ArrowError::MemoryError(format!(
            "text_chunks: the chunks of one batch are over {} MiB; make the step \
             (max_tokens - overlap = {step}) larger",
            MAX_BATCH_OUTPUT_BYTES >> 20
        )));
    }
    out.values()
        .append_value(text.get(from..to).unwrap_or_default());
    Ok(())
}

/// Text bytes one `encode_batch` call takes: the tokenizer's intermediate state is a few
/// dozen bytes a token.
const ENCODE_BYTES: usize = 4 << 20;
/// A long text is tokenized in segments of about this many bytes.
const SEGMENT_BYTES: usize = 1 << 20;

/// How much of a text `tokenize` reads for `max_tokens` tokens: 256 bytes a token (64 KiB
/// at least), far past where the truncated tokens end in any real text.
fn prefix_bytes(max_tokens: usize) -> usize {
    max_tokens.saturating_mul(256).max(64 << 10)
}

/// The first `limit` bytes of `text`, cut before a whitespace where there is one in the
/// last half (else at a character boundary).
fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    match head.rfind(char::is_whitespace) {
        Some(space) if space >= end / 2 => &head[..space],
        _ => head,
    }
}

/// `text` in consecutive segments of at most about `bytes` each, with their start offsets.
/// Each ends before a whitespace, so a word is never split and a tokenizer that joins a
/// space to the word after it (byte-level BPE) still sees it there.
fn segments(text: &str, bytes: usize) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let rest = &text[start..];
        let piece = cut(rest, bytes);
        // Only a limit below one character cuts nothing: then a character is a segment.
        let piece = if piece.is_empty() {
            &rest[..rest.chars().next().map_or(rest.len(), char::len_utf8)]
        } else {
            piece
        };
        let at = start;
        start += piece.len();
        Some((at, piece))
    })
}

/// Consecutive groups of `texts` of about `bytes` of text each (at least one text each).
fn by_bytes<'a>(texts: &'a [&'a str], bytes: usize) -> impl Iterator<Item = &'a [&'a str]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= texts.len() {
            return None;
        }
        let mut end = start;
        let mut size = 0;
        while end < texts.len() && (end == start || size + texts[end].len() <= bytes) {
            size += texts[end].len();
            end += 1;
        }
        let group = &texts[start..end];
        start = end;
        Some(group)
    })
}

/// Windows of `max_tokens` tokens starting `max_tokens - overlap` apart, made as token
/// offsets arrive: the byte range of the text each covers; the last ends at the last token.
struct Windows {
    pending: std::collections::VecDeque<(usize, usize)>,
    max_tokens: usize,
    step: usize,
}

impl Windows {
    fn new(max_tokens: usize, overlap: usize) -> Self {
        Self {
            pending: Default::default(),
            max_tokens,
            step: max_tokens - overlap,
        }
    }

    /// Takes more token offsets; puts the windows they complete into `out`. A window is
    /// complete once a token after it exists (the last one waits for [`Self::finish`]).
    fn push(
        &mut self,
        offsets: impl Iterator<Item = (usize, usize)>,
        out: &mut Vec<(usize, usize)>,
    ) {
        for offset in offsets {
            self.pending.push_back(offset);
            if self.pending.len() > self.max_tokens {
                out.push(span(self.pending.iter().take(self.max_tokens)));
                self.pending.drain(..self.step);
            }
        }
    }

    /// The last window: what remains, if any token does.
    fn finish(self) -> Option<(usize, usize)> {
        (!self.pending.is_empty()).then(|| span(self.pending.iter()))
    }
}

/// The byte range from the first token's start to the last one's end (the extremes: word
/// pieces' offsets rise, but normalisers may reorder).
fn span<'a>(tokens: impl Iterator<Item = &'a (usize, usize)>) -> (usize, usize) {
    let (mut from, mut to) = (usize::MAX, 0);
    for (a, b) in tokens {
        from = from.min(*a);
        to = to.max(*b);
    }
    (from.min(to), to)
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
    fn a_long_text_is_truncated_from_its_beginning_alone() {
        let tok = tokenizer();
        let fixed = tok.fixed_length(16).unwrap();
        let long = "the room was lovely and the food superb ".repeat(50_000);
        let x: ArrayRef = Arc::new(StringArray::from(vec![long.as_str(), &long[..400]]));
        let out = token_tensors(&x, &fixed, 16).unwrap();
        let ids = out.column(0).as_fixed_size_list();
        assert_eq!(ids.value(0).as_primitive::<Int64Type>().values().len(), 16);
        assert_eq!(
            ids.value(0).as_primitive::<Int64Type>().values(),
            ids.value(1).as_primitive::<Int64Type>().values(),
            "2 MB of text tokenize as its first 400 bytes do at 16 tokens"
        );
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

    fn windows(offsets: &[(usize, usize)], max: usize, overlap: usize) -> Vec<(usize, usize)> {
        let mut w = Windows::new(max, overlap);
        let mut out = Vec::new();
        // In two pushes, as segments arrive.
        let half = offsets.len() / 2;
        w.push(offsets[..half].iter().copied(), &mut out);
        w.push(offsets[half..].iter().copied(), &mut out);
        out.extend(w.finish());
        out
    }

    #[test]
    fn windows_step_by_max_tokens_less_overlap() {
        let offsets: Vec<(usize, usize)> = (0..10).map(|i| (i * 2, i * 2 + 1)).collect();
        assert_eq!(windows(&offsets, 4, 1), [(0, 7), (6, 13), (12, 19)]);
        assert_eq!(windows(&offsets, 20, 0), [(0, 19)]);
        assert_eq!(windows(&offsets[..4], 4, 1), [(0, 7)], "exactly one window");
        assert_eq!(windows(&offsets[..5], 4, 1), [(0, 7), (6, 9)]);
        assert!(windows(&[], 4, 0).is_empty());
    }

    #[test]
    fn long_texts_are_cut_before_whitespace_and_segments_cover_them() {
        assert_eq!(cut("lovely room", 8), "lovely");
        assert_eq!(
            cut("lovelyroom", 8),
            "lovelyro",
            "no space: at a character boundary"
        );
        assert_eq!(cut("café", 4), "caf", "never inside a character");
        let text = "a lovely room and superb food ".repeat(10);
        let pieces: Vec<(usize, &str)> = segments(&text, 16).collect();
        assert!(pieces.iter().all(|(_, p)| p.len() <= 16 && !p.is_empty()));
        let joined: String = pieces.iter().map(|(_, p)| *p).collect();
        assert_eq!(joined, text);
        assert!(pieces.iter().all(|(at, p)| &text[*at..*at + p.len()] == *p));
        let groups: Vec<usize> = by_bytes(&["abc", "de", "fghij", "k"], 5)
            .map(<[&str]>::len)
            .collect();
        assert_eq!(groups, [2, 1, 1]);
    }

    #[test]
    fn a_document_chunked_in_segments_gives_the_chunks_of_it_whole() {
        let tok = tokenizer();
        let text = "The hotel was lovely and the staff were superb. ".repeat(40);
        let whole: Vec<(usize, usize)> = {
            let e = tok.plain().encode(text.as_str(), false).unwrap();
            windows(e.get_offsets(), 12, 3)
        };
        let mut w = Windows::new(12, 3);
        let mut pieces = Vec::new();
        for (start, segment) in segments(&text, 100) {
            let e = tok.plain().encode(segment, false).unwrap();
            w.push(
                e.get_offsets().iter().map(|(a, b)| (a + start, b + start)),
                &mut pieces,
            );
        }
        pieces.extend(w.finish());
        assert_eq!(pieces, whole);
    }
}

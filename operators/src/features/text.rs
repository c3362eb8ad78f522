//! Text feature kernels: token counts, hashed word n-grams, regex extraction (log lines).
//! A token is a maximal run of alphanumeric characters; n-grams are over lowercased tokens.

use super::categorical::{fnv1a, map_categories, take_strings};
use datafusion::arrow::array::{
    ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::{ArrowError, Result};
use regex::Regex;
use std::sync::Arc;

fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// Number of tokens per row; null for null.
pub fn token_count(x: &ArrayRef) -> Result<Int32Array> {
    Ok(Int32Array::from(map_categories(x, |v| {
        v.map(|v| tokens(v).count() as i32)
    })?))
}

/// Counts of the row's word n-grams (n consecutive lowercased tokens joined by a space),
/// each hashed into one of `buckets` Float32 slots. Null rows are all zeros.
pub fn hashed_ngrams(x: &ArrayRef, n: usize, buckets: usize) -> Result<FixedSizeListArray> {
    if n == 0 || buckets == 0 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "hashed_ngrams needs n >= 1 and buckets >= 1, got n={n}, buckets={buckets}"
        )));
    }
    let per_row = map_categories(x, |v| {
        let mut slots: Vec<(usize, f32)> = Vec::new();
        if let Some(text) = v {
            let words: Vec<String> = tokens(text).map(str::to_lowercase).collect();
            for gram in words.windows(n) {
                let slot = (fnv1a(gram.join(" ").as_bytes()) % buckets as u64) as usize;
                match slots.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, count)) => *count += 1.0,
                    None => slots.push((slot, 1.0)),
                }
            }
        }
        slots
    })?;
    let mut values = super::zeroed_block(per_row.len(), buckets)?;
    for (row, slots) in per_row.iter().enumerate() {
        for (slot, count) in slots {
            values[row * buckets + slot] = *count;
        }
    }
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        buckets as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// The capture `group` of the first match of `pattern` in each row; null when the row is
/// null or does not match.
pub fn regex_extract(x: &ArrayRef, pattern: &Regex, group: usize) -> Result<StringArray> {
    if group >= pattern.captures_len() {
        return Err(ArrowError::InvalidArgumentError(format!(
            "regex_extract: pattern '{pattern}' has {} group(s), asked for group {group}",
            pattern.captures_len() - 1
        )));
    }
    let text = take_strings(x)?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| {
            v.and_then(|v| pattern.captures(v))
                .and_then(|c| c.get(group))
                .map(|m| m.as_str().to_string())
        })
        .collect())
}

/// Why each value's bytes are not text (UTF-8) that `tokenize` and `text_chunks` can read:
/// null where they are (or the value is null).
pub fn text_errors(x: &ArrayRef) -> Result<StringArray> {
    super::decoded::decode_errors(x, |bytes| {
        std::str::from_utf8(bytes)
            .err()
            .map(|e| format!("not UTF-8 text: {e}"))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use datafusion::arrow::array::DictionaryArray;
    use datafusion::arrow::datatypes::{Float32Type, Int32Type};
    use proptest::prelude::*;

    fn texts() -> impl Strategy<Value = Vec<Option<String>>> {
        proptest::collection::vec(proptest::option::of("[a-cA-C ,.]{0,24}"), 0..60)
    }

    proptest! {
        #[test]
        fn token_counts_and_ngrams_match_reference(rows in texts(), n in 1usize..3, buckets in 1usize..16) {
            let plain: ArrayRef = Arc::new(StringArray::from(rows.clone()));
            let dict: DictionaryArray<Int32Type> = rows.iter().map(|r| r.as_deref()).collect();
            for x in [plain, Arc::new(dict) as ArrayRef] {
                let counts = token_count(&x).unwrap();
                let grams = hashed_ngrams(&x, n, buckets).unwrap();
                let cells = grams.values().as_primitive::<Float32Type>();
                for (r, row) in rows.iter().enumerate() {
                    let words: Vec<String> = row.as_deref().map(|t| {
                        t.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
                    }).unwrap_or_default();
                    prop_assert_eq!(counts.iter().nth(r).flatten(), row.as_ref().map(|_| words.len() as i32));
                    let mut expected = vec![0f32; buckets];
                    for gram in words.windows(n) {
                        expected[(fnv1a(gram.join(" ").as_bytes()) % buckets as u64) as usize] += 1.0;
                    }
                    prop_assert_eq!(&cells.values()[r * buckets..(r + 1) * buckets], expected.as_slice());
                }
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_have_a_reason() {
        use datafusion::arrow::array::BinaryArray;
        let x: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(&b"caf\xc3\xa9"[..]),
            Some(&b"caf\xe9 awful"[..]),
            None,
        ]));
        let reasons: Vec<Option<String>> = text_errors(&x)
            .unwrap()
            .iter()
            .map(|r| r.map(String::from))
            .collect();
        assert_eq!(reasons[0], None);
        let bad = reasons[1].as_deref().unwrap();
        assert!(
            bad.contains("not UTF-8") && bad.contains("index 3"),
            "{bad}"
        );
        assert_eq!(reasons[2], None);
    }

    #[test]
    fn regex_extract_takes_the_group_of_the_first_match() {
        let lines: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2026-11-22 ERROR disk full"),
            Some("no level here"),
            None,
        ]));
        let level = Regex::new(r"\d{4}-\d\d-\d\d (\w+)").unwrap();
        let out = regex_extract(&lines, &level, 1).unwrap();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some("ERROR"), None, None]
        );
        assert!(
            regex_extract(&lines, &level, 2)
                .unwrap_err()
                .to_string()
                .contains("has 1 group(s)")
        );
    }
}

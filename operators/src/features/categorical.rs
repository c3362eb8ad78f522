//! Categorical feature kernels: one-hot and ordinal encoding over a vocabulary, and the
//! hashing trick. Strings of every Arrow flavour are accepted, and other types are read as
//! their text (so integer codes work with a vocabulary of "1", "2", ...). On a dictionary
//! array the work is done once per distinct value and spread over the rows by key.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::{ArrowError, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Applies `per_value` to every distinct string once (dictionary values) or to every row,
/// and returns one result per row. Nulls are passed as `None`.
pub fn map_categories<T: Clone>(
    x: &ArrayRef,
    mut per_value: impl FnMut(Option<&str>) -> T,
) -> Result<Vec<T>> {
    map_with(x, &mut per_value)
}

// Takes the closure as `dyn` so the recursion into dictionary values has one type.
fn map_with<T: Clone>(
    x: &ArrayRef,
    per_value: &mut dyn FnMut(Option<&str>) -> T,
) -> Result<Vec<T>> {
    if let DataType::Dictionary(_, _) = x.data_type() {
        let dict = x.as_any_dictionary();
        let values = map_with(dict.values(), per_value)?;
        let keys = cast(dict.keys(), &DataType::Int64)?;
        let keys = keys.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let null = per_value(None);
        return Ok(keys
            .iter()
            .map(|k| match k {
                Some(k) => values[k as usize].clone(),
                None => null.clone(),
            })
            .collect());
    }
    let text = match x.data_type() {
        DataType::Utf8 => x.clone(),
        _ => cast(x, &DataType::Utf8)?,
    };
    Ok(text.as_string::<i32>().iter().map(per_value).collect())
}

fn vocabulary_index(vocabulary: &[String]) -> Result<HashMap<&str, usize>> {
    let mut index = HashMap::with_capacity(vocabulary.len());
    for (i, word) in vocabulary.iter().enumerate() {
        if index.insert(word.as_str(), i).is_some() {
            return Err(ArrowError::InvalidArgumentError(format!(
                "the vocabulary lists '{word}' twice"
            )));
        }
    }
    Ok(index)
}

/// One Float32 per vocabulary word, 1.0 where the row equals it; a null or a value outside
/// the vocabulary is all zeros. The result has no nulls, so a model can take it as is.
pub fn one_hot(x: &ArrayRef, vocabulary: &[String]) -> Result<FixedSizeListArray> {
    let index = vocabulary_index(vocabulary)?;
    let width = vocabulary.len();
    let positions = map_categories(x, |v| v.and_then(|v| index.get(v).copied()))?;
    let mut values = super::zeroed_block(positions.len(), width)?;
    for (row, position) in positions.iter().enumerate() {
        if let Some(p) = position {
            values[row * width + p] = 1.0;
        }
    }
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        width as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// The position of each value in the vocabulary; -1 for a value outside it; null for null.
pub fn ordinal_encode(x: &ArrayRef, vocabulary: &[String]) -> Result<Int32Array> {
    let index = vocabulary_index(vocabulary)?;
    let codes = map_categories(x, |v| v.map(|v| index.get(v).map_or(-1, |p| *p as i32)))?;
    Ok(Int32Array::from(codes))
}

/// FNV-1a, 64 bit: stable across processes and machines (unlike std's randomly seeded
/// hasher), so every worker puts a value in the same bucket.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The hashing trick: each value's bucket in [0, buckets); null for null.
pub fn hash_bucket(x: &ArrayRef, buckets: u64) -> Result<Int64Array> {
    if buckets == 0 {
        return Err(ArrowError::InvalidArgumentError(
            "hash_bucket needs at least one bucket".into(),
        ));
    }
    let codes = map_categories(x, |v| v.map(|v| (fnv1a(v.as_bytes()) % buckets) as i64))?;
    Ok(Int64Array::from(codes))
}

/// Rows as text, for callers that need the value itself (regex, tokens).
pub fn take_strings(x: &ArrayRef) -> Result<ArrayRef> {
    match x.data_type() {
        DataType::Dictionary(_, _) => {
            let dict = x.as_any_dictionary();
            take(&cast(dict.values(), &DataType::Utf8)?, dict.keys(), None)
        }
        DataType::Utf8 => Ok(x.clone()),
        _ => cast(x, &DataType::Utf8),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use datafusion::arrow::array::{
        DictionaryArray, Int32Array as I32, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::Int16Type;
    use proptest::prelude::*;

    fn vocab() -> Vec<String> {
        ["AIR", "MAIL", "SHIP"].map(String::from).to_vec()
    }

    fn words() -> impl Strategy<Value = Vec<Option<String>>> {
        let word = prop_oneof![
            3 => proptest::sample::select(vec!["AIR", "MAIL", "SHIP", "TRUCK", ""]).prop_map(|s| Some(s.to_string())),
            1 => Just(None),
        ];
        proptest::collection::vec(word, 0..100)
    }

    /// The same rows as a plain string array and as a dictionary array.
    fn both_layouts(rows: &[Option<String>]) -> [ArrayRef; 2] {
        let plain: ArrayRef = Arc::new(StringArray::from(rows.to_vec()));
        let dict: DictionaryArray<Int16Type> = rows.iter().map(|r| r.as_deref()).collect();
        [plain, Arc::new(dict)]
    }

    proptest! {
        #[test]
        fn one_hot_matches_reference_in_both_layouts(rows in words()) {
            for x in both_layouts(&rows) {
                let out = one_hot(&x, &vocab()).unwrap();
                prop_assert_eq!(out.len(), rows.len());
                prop_assert_eq!(out.null_count(), 0);
                let values = out.values().as_primitive::<datafusion::arrow::datatypes::Float32Type>();
                for (r, row) in rows.iter().enumerate() {
                    for (j, word) in vocab().iter().enumerate() {
                        let expected = if row.as_deref() == Some(word.as_str()) { 1.0 } else { 0.0 };
                        prop_assert_eq!(values.value(r * 3 + j), expected);
                    }
                }
            }
        }

        #[test]
        fn ordinal_and_hash_match_reference_in_both_layouts(rows in words(), buckets in 1u64..64) {
            for x in both_layouts(&rows) {
                let codes = ordinal_encode(&x, &vocab()).unwrap();
                let hashed = hash_bucket(&x, buckets).unwrap();
                for ((row, code), hash) in rows.iter().zip(codes.iter()).zip(hashed.iter()) {
                    let expected = row.as_ref().map(|w| vocab().iter().position(|v| v == w).map_or(-1, |p| p as i32));
                    prop_assert_eq!(code, expected);
                    prop_assert_eq!(hash, row.as_ref().map(|w| (fnv1a(w.as_bytes()) % buckets) as i64));
                    if let Some(h) = hash { prop_assert!((0..buckets as i64).contains(&h)); }
                }
            }
        }
    }

    #[test]
    fn string_views_and_integer_codes_are_read_as_text() {
        let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some("SHIP"), None]));
        assert_eq!(
            ordinal_encode(&view, &vocab())
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(2), None]
        );
        let ints: ArrayRef = Arc::new(I32::from(vec![1, 7]));
        let vocab = vec!["7".to_string(), "1".to_string()];
        assert_eq!(
            ordinal_encode(&ints, &vocab).unwrap().values().to_vec(),
            vec![1, 0]
        );
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference implementation.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn duplicate_vocabulary_and_zero_buckets_are_refused() {
        let x: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let twice = vec!["a".to_string(), "a".to_string()];
        assert!(
            one_hot(&x, &twice)
                .unwrap_err()
                .to_string()
                .contains("'a' twice")
        );
        assert!(hash_bucket(&x, 0).is_err());
        let empty: ArrayRef = Arc::new(StringArray::from(Vec::<Option<&str>>::new()));
        assert_eq!(one_hot(&empty, &vocab()).unwrap().len(), 0);
    }
}

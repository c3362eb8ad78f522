//! Numeric feature kernels. Inputs of any numeric type (integers, decimals, floats, and
//! dictionaries of them) are read as f64; nulls stay null except in `impute`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::error::{ArrowError, Result};

/// The column as f64 values (one cast; a no-op for Float64).
pub fn as_f64(x: &ArrayRef) -> Result<Float64Array> {
    let is_number = |dt: &DataType| dt.is_numeric() || *dt == DataType::Null;
    let numeric = match x.data_type() {
        DataType::Dictionary(_, value) => is_number(value),
        dt => is_number(dt),
    };
    if !numeric {
        return Err(ArrowError::InvalidArgumentError(format!(
            "expected a numeric column, found {}",
            x.data_type()
        )));
    }
    Ok(cast(x, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// (x - mean) / std; a zero or non-finite std gives 0.0 (a constant feature carries no
/// information, and infinities would poison a model).
pub fn scale_standard(x: &ArrayRef, mean: f64, std: f64) -> Result<Float64Array> {
    let values = as_f64(x)?;
    if std == 0.0 || !std.is_finite() {
        return Ok(values.unary(|_| 0.0));
    }
    let inverse = 1.0 / std;
    Ok(values.unary(|v| (v - mean) * inverse))
}

/// (x - min) / (max - min); a zero range gives 0.0.
pub fn scale_minmax(x: &ArrayRef, min: f64, max: f64) -> Result<Float64Array> {
    let values = as_f64(x)?;
    let range = max - min;
    if range == 0.0 || !range.is_finite() {
        return Ok(values.unary(|_| 0.0));
    }
    let inverse = 1.0 / range;
    Ok(values.unary(|v| (v - min) * inverse))
}

/// Nulls and NaNs replaced by `value`; the result has no nulls.
pub fn impute(x: &ArrayRef, value: f64) -> Result<Float64Array> {
    let values = as_f64(x)?;
    let filled: Vec<f64> = match values.nulls() {
        None => values
            .values()
            .iter()
            .map(|v| if v.is_nan() { value } else { *v })
            .collect(),
        Some(nulls) => values
            .values()
            .iter()
            .zip(nulls.iter())
            .map(|(v, valid)| if !valid || v.is_nan() { value } else { *v })
            .collect(),
    };
    Ok(Float64Array::from(filled))
}

/// ln(1 + x), accurate for small x (values below -1 give NaN, as in every math library).
pub fn log1p(x: &ArrayRef) -> Result<Float64Array> {
    Ok(as_f64(x)?.unary(f64::ln_1p))
}

/// x limited to [lo, hi]; NaN stays NaN.
pub fn clip(x: &ArrayRef, lo: f64, hi: f64) -> Result<Float64Array> {
    if lo > hi {
        return Err(ArrowError::InvalidArgumentError(format!(
            "clip bounds are reversed: lower {lo} > upper {hi}"
        )));
    }
    Ok(as_f64(x)?.unary(|v| {
        if v < lo {
            lo
        } else if v > hi {
            hi
        } else {
            v
        }
    }))
}

/// The bucket of each value for sorted `boundaries` b1 < ... < bk: 0 below b1, i for
/// b(i) <= x < b(i+1), k at or above bk. NaN and null give null.
pub fn bucketize(x: &ArrayRef, boundaries: &[f64]) -> Result<Int32Array> {
    if let Some(pair) = boundaries.windows(2).find(|w| w[0] >= w[1]) {
        return Err(ArrowError::InvalidArgumentError(format!(
            "bucketize boundaries must be strictly increasing, found {} then {}",
            pair[0], pair[1]
        )));
    }
    if boundaries.iter().any(|b| b.is_nan()) {
        return Err(ArrowError::InvalidArgumentError(
            "bucketize boundaries must not be NaN".into(),
        ));
    }
    let values = as_f64(x)?;
    Ok(values
        .iter()
        .map(|v| {
            v.filter(|v| !v.is_nan())
                .map(|v| boundaries.partition_point(|b| *b <= v) as i32)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Int32Array as I32, Int64Array};
    use datafusion::arrow::datatypes::Int8Type;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn column(values: &[Option<f64>]) -> ArrayRef {
        Arc::new(Float64Array::from(values.to_vec()))
    }

    /// Values with nulls, NaN, infinities and zeros mixed in.
    fn values() -> impl Strategy<Value = Vec<Option<f64>>> {
        let value = prop_oneof![
            4 => (-1e6f64..1e6).prop_map(Some),
            1 => Just(None),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(0.0)),
            1 => Just(Some(f64::INFINITY)),
        ];
        proptest::collection::vec(value, 0..200)
    }

    fn same(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
            (None, None) => true,
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn standard_scale_matches_reference(v in values(), mean in -100f64..100.0, std in 0.0f64..50.0) {
            let out = scale_standard(&column(&v), mean, std).unwrap();
            prop_assert_eq!(out.len(), v.len());
            for (x, y) in v.iter().zip(out.iter()) {
                let expected = x.map(|x| if std == 0.0 { 0.0 } else { (x - mean) * (1.0 / std) });
                prop_assert!(same(expected, y), "{:?} -> {:?}, expected {:?}", x, y, expected);
            }
        }

        #[test]
        fn minmax_scale_matches_reference(v in values(), min in -100f64..100.0, width in 0.0f64..50.0) {
            let max = min + width;
            let out = scale_minmax(&column(&v), min, max).unwrap();
            for (x, y) in v.iter().zip(out.iter()) {
                let expected = x.map(|x| if width == 0.0 { 0.0 } else { (x - min) * (1.0 / (max - min)) });
                prop_assert!(same(expected, y), "{:?} -> {:?}", x, y);
            }
        }

        #[test]
        fn impute_leaves_no_null_or_nan(v in values(), fill in -10f64..10.0) {
            let out = impute(&column(&v), fill).unwrap();
            prop_assert_eq!(out.null_count(), 0);
            for (x, y) in v.iter().zip(out.values().iter()) {
                let expected = match x { Some(x) if !x.is_nan() => *x, _ => fill };
                prop_assert_eq!(expected, *y);
            }
        }

        #[test]
        fn log1p_and_clip_match_reference(v in values(), lo in -10f64..0.0, hi in 0f64..10.0) {
            let logged = log1p(&column(&v)).unwrap();
            let clipped = clip(&column(&v), lo, hi).unwrap();
            for ((x, l), c) in v.iter().zip(logged.iter()).zip(clipped.iter()) {
                prop_assert!(same(x.map(f64::ln_1p), l), "log1p {:?} -> {:?}", x, l);
                let expected = x.map(|x| if x.is_nan() { x } else { x.max(lo).min(hi) });
                prop_assert!(same(expected, c), "clip {:?} -> {:?}", x, c);
            }
        }

        #[test]
        fn bucketize_matches_linear_search(v in values(), mut bounds in proptest::collection::vec(-1e6f64..1e6, 0..8)) {
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let out = bucketize(&column(&v), &bounds).unwrap();
            for (x, b) in v.iter().zip(out.iter()) {
                let expected = x.filter(|x| !x.is_nan()).map(|x| bounds.iter().filter(|b| **b <= x).count() as i32);
                prop_assert_eq!(expected, b);
            }
        }
    }

    #[test]
    fn integers_decimals_and_dictionaries_are_read_as_numbers() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let out = scale_standard(&ints, 1.0, 2.0).unwrap();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some(0.0), None, Some(1.0)]
        );
        let dict: ArrayRef = Arc::new(DictionaryArray::<Int8Type>::new(
            datafusion::arrow::array::Int8Array::from(vec![0, 1, 0]),
            Arc::new(I32::from(vec![10, 20])),
        ));
        assert_eq!(
            log1p(&dict).unwrap().values().to_vec(),
            vec![11f64.ln(), 21f64.ln(), 11f64.ln()]
        );
    }

    #[test]
    fn strings_and_bad_bounds_are_refused_with_the_reason() {
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["a"]));
        assert!(
            log1p(&text)
                .unwrap_err()
                .to_string()
                .contains("expected a numeric column, found Utf8")
        );
        let x = column(&[Some(1.0)]);
        assert!(
            clip(&x, 2.0, 1.0)
                .unwrap_err()
                .to_string()
                .contains("reversed")
        );
        assert!(
            bucketize(&x, &[2.0, 1.0])
                .unwrap_err()
                .to_string()
                .contains("strictly increasing")
        );
    }
}

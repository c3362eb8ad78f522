//! `top_k(scores, k)`: the k classes a classifier scores highest, with their scores, most
//! likely first. `scores` is one vector per row, such as `predict_proba`'s output for a
//! classifier of more than two classes or `predict`'s logits of a vision model:
//! `top_k(predict_proba('m', ...), 3)` is `[{class: 7, score: 0.81}, {class: 2, ...}, ...]`.
//! Classes are indices into the vector (0-based), ties go to the lower index, a null row
//! stays null. One pass per row over its scores (`select_nth_unstable`), on whole columns.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int32Array, ListArray, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float32Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

/// Most classes a call may ask for.
const MAX_K: usize = 1000;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TopKUdf {
    signature: Signature,
}

impl Default for TopKUdf {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("class", DataType::Int32, false),
        Field::new("score", DataType::Float32, false),
    ])
}

fn return_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(entry_fields()),
        false,
    )))
}

/// The k of a call: a whole number from 1 to the classes (and [`MAX_K`]).
fn k_of(value: Option<&ScalarValue>, classes: usize) -> Result<usize> {
    let k = value
        .filter(|v| v.data_type().is_integer())
        .and_then(|v| v.cast_to(&DataType::Int64).ok())
        .and_then(|v| match v {
            ScalarValue::Int64(Some(k)) => usize::try_from(k).ok(),
            _ => None,
        });
    match k {
        Some(k) if (1..=classes.min(MAX_K)).contains(&k) => Ok(k),
        _ => plan_err!(
            "top_k(scores, k): k must be a whole number from 1 to {} (the classes scored), \
             not {}",
            classes.min(MAX_K),
            value.map_or("missing".to_string(), ToString::to_string)
        ),
    }
}

/// Classes per row of a scores argument: the width of a list of numbers.
fn classes_of(data_type: &DataType) -> Result<usize> {
    match data_type {
        DataType::FixedSizeList(item, n) if item.data_type().is_numeric() => Ok(*n as usize),
        other => plan_err!(
            "top_k(scores, k): scores must be one vector of numbers per row (such as \
             predict_proba's result for more than two classes), not {other}"
        ),
    }
}

impl ScalarUDFImpl for TopKUdf {
    fn name(&self) -> &str {
        "top_k"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(return_type())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let [scores, _] = args.arg_fields else {
            return plan_err!("top_k takes (scores, k)");
        };
        let classes = classes_of(scores.data_type())?;
        k_of(args.scalar_arguments[1], classes)?;
        Ok(Arc::new(Field::new(self.name(), return_type(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [scores, k] = args.args.as_slice() else {
            return exec_err!("top_k takes (scores, k)");
        };
        let scores = scores.to_array(args.number_rows)?;
        let classes = classes_of(scores.data_type())?;
        let ColumnarValue::Scalar(k) = k else {
            return plan_err!("top_k(scores, k): k must be a constant");
        };
        let k = k_of(Some(k), classes)?;
        Ok(ColumnarValue::Array(top_k(&scores, classes, k)?))
    }
}

/// The top `k` of each row's `classes` scores.
fn top_k(scores: &ArrayRef, classes: usize, k: usize) -> Result<ArrayRef> {
    let rows = scores.len();
    let present = scores.logical_nulls();
    // Null rows' values are whatever the list holds; they are skipped below.
    let list = scores.as_fixed_size_list();
    let values = list.values().slice(list.offset() * classes, rows * classes);
    let values = cast(&values, &DataType::Float32)?;
    let values = values.as_primitive::<Float32Type>();
    let mut class = Vec::with_capacity(rows * k);
    let mut score = Vec::with_capacity(rows * k);
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0i32);
    let mut order: Vec<usize> = Vec::with_capacity(classes);
    for row in 0..rows {
        if present.as_ref().is_none_or(|p| p.is_valid(row)) {
            let row_scores = &values.values()[row * classes..(row + 1) * classes];
            // Highest first; NaN last; ties to the lower class.
            let rank = |a: &usize, b: &usize| {
                let (x, y) = (row_scores[*a], row_scores[*b]);
                y.partial_cmp(&x)
                    .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
                    .then(a.cmp(b))
            };
            order.clear();
            order.extend(0..classes);
            if k < classes {
                order.select_nth_unstable_by(k - 1, rank);
                order.truncate(k);
            }
            order.sort_unstable_by(rank);
            for c in &order {
                class.push(*c as i32);
                score.push(row_scores[*c]);
            }
        }
        offsets.push(class.len() as i32);
    }
    let entries = StructArray::try_new(
        entry_fields(),
        vec![
            Arc::new(Int32Array::from(class)),
            Arc::new(Float32Array::from(score)),
        ],
        None,
    )?;
    let DataType::List(item) = return_type() else {
        return exec_err!("top_k: its return type is a list");
    };
    Ok(Arc::new(ListArray::try_new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(entries),
        present,
    )?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::FixedSizeListArray;
    use datafusion::arrow::buffer::NullBuffer;

    #[test]
    fn the_highest_scores_come_first_ties_to_the_lower_class_and_nulls_stay_null() {
        let scores: ArrayRef = Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float64, false)),
            4,
            Arc::new(datafusion::arrow::array::Float64Array::from(vec![
                0.1,
                0.6,
                0.2,
                0.1, // row 0
                9.0,
                9.0,
                9.0,
                9.0, // row 1: null
                0.3,
                0.3,
                f64::NAN,
                0.4, // row 2
            ])),
            Some(NullBuffer::from(vec![true, false, true])),
        ));
        let out = top_k(&scores, 4, 2).unwrap();
        let list = out.as_list::<i32>();
        assert!(list.is_null(1));
        let row = |i: usize| {
            let entries = list.value(i);
            let entries = entries.as_struct();
            let classes = entries
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let scores = entries.column(1).as_primitive::<Float32Type>();
            classes
                .values()
                .iter()
                .copied()
                .zip(scores.values().iter().copied())
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), [(1, 0.6), (2, 0.2)]);
        assert_eq!(row(2), [(3, 0.4), (0, 0.3)]);
        assert_eq!(list.value(1).len(), 0);
    }

    #[test]
    fn k_is_checked_against_the_classes() {
        assert_eq!(k_of(Some(&ScalarValue::Int64(Some(3))), 5).unwrap(), 3);
        assert!(k_of(Some(&ScalarValue::Float64(Some(2.5))), 5).is_err());
        let err = k_of(Some(&ScalarValue::Int64(Some(6))), 5).unwrap_err();
        assert!(err.to_string().contains("from 1 to 5"), "{err}");
        assert!(k_of(Some(&ScalarValue::Int64(Some(0))), 5).is_err());
        let err = classes_of(&DataType::Float32).unwrap_err();
        assert!(
            err.to_string().contains("one vector of numbers per row"),
            "{err}"
        );
    }
}

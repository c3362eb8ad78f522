//! Rows whose tensor argument is null (an image that did not decode, a document without
//! text) are not scored: the model runs on the other rows, and those rows' results are null.
//! A null in a numeric feature stays an error ([`crate::Error::NullFeature`]): there a null
//! is missing data the statement should decide about, not a file that is not there.

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

/// The rows to score: where every tensor argument is present.
pub struct Scored {
    /// Each argument, with only the scored rows.
    pub features: Vec<ArrayRef>,
    /// For each row of the batch, its row among the scored ones; null where it is skipped.
    positions: UInt32Array,
}

impl Scored {
    /// None when every row is scored (the arguments are used as they are, no copy).
    pub fn skip_null_tensors(features: &[ArrayRef]) -> Result<Option<Self>, ArrowError> {
        let present = features
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::FixedSizeList(_, _)))
            .fold(None, |present: Option<NullBuffer>, f| {
                NullBuffer::union(present.as_ref(), f.logical_nulls().as_ref())
            });
        let Some(present) = present.filter(|p| p.null_count() > 0) else {
            return Ok(None);
        };
        let mask = BooleanArray::new(present.inner().clone(), None);
        let features = features
            .iter()
            .map(|f| filter(f.as_ref(), &mask))
            .collect::<Result<_, _>>()?;
        let mut next = 0u32;
        let positions = UInt32Array::from_iter(present.iter().map(|valid| {
            valid.then(|| {
                next += 1;
                next - 1
            })
        }));
        Ok(Some(Self {
            features,
            positions,
        }))
    }

    pub fn rows(&self) -> usize {
        self.positions.len() - self.positions.null_count()
    }

    /// The scored rows' results put back in the batch's rows, null where skipped.
    pub fn restore(&self, scored: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        take(scored.as_ref(), &self.positions, None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::{AsArray, FixedSizeListArray, Float32Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Float32Type, Int64Type};
    use std::sync::Arc;

    #[test]
    fn rows_without_a_tensor_are_skipped_and_come_back_null() {
        let tensor: ArrayRef = Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            2,
            Arc::new(Float32Array::from(vec![1., 2., 0., 0., 5., 6., 0., 0.])),
            Some(NullBuffer::from(vec![true, false, true, false])),
        ));
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![10, 11, 12, 13]));
        let scored = Scored::skip_null_tensors(&[tensor, ids.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(scored.rows(), 2);
        let kept = scored.features[1].as_primitive::<Int64Type>();
        assert_eq!(kept.values().to_vec(), [10, 12]);
        let results: ArrayRef = Arc::new(Float32Array::from(vec![0.25, 0.75]));
        let back = scored.restore(&results).unwrap();
        let back = back.as_primitive::<Float32Type>();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [Some(0.25), None, Some(0.75), None]
        );
        // Nothing to skip: no copy is made.
        assert!(Scored::skip_null_tensors(&[ids]).unwrap().is_none());
    }
}

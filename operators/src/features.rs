//! Arrow feature columns to the contiguous row-major matrix an ONNX tensor views.
//!
//! Stacking n columns into [N, n] is the one copy shoal makes on the way to the model; it is
//! done in row tiles so each tile's output stays in cache while the columns are walked.
//! A single `FixedSizeList<Float32, n>` column needs no copy at all (see `as_matrix_view`).

use datafusion::arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type};

/// Rows per tile of the stacking copy: 512 rows × a few features stays in L1/L2.
const TILE_ROWS: usize = 512;

/// Whether a SQL argument type can be fed to a model as a numeric feature.
pub fn is_numeric_feature(dt: &DataType) -> bool {
    dt.is_numeric() || matches!(dt, DataType::Boolean | DataType::Null)
}

/// Casts every column to `T` (nulls must have been rejected before).
pub fn cast_all<T: ArrowPrimitiveType>(
    columns: &[ArrayRef],
) -> datafusion::arrow::error::Result<Vec<PrimitiveArray<T>>> {
    columns
        .iter()
        .map(|c| Ok(cast(c, &T::DATA_TYPE)?.as_primitive::<T>().clone()))
        .collect()
}

/// Row-major [rows, columns.len()] copy of the columns.
pub fn stack_row_major<T: ArrowPrimitiveType>(columns: &[PrimitiveArray<T>]) -> Vec<T::Native> {
    let width = columns.len();
    let rows = columns.first().map_or(0, |c| c.len());
    let mut out = vec![T::Native::default(); rows * width];
    let mut start = 0;
    while start < rows {
        let end = (start + TILE_ROWS).min(rows);
        for (j, col) in columns.iter().enumerate() {
            let values = &col.values()[start..end];
            for (i, v) in values.iter().enumerate() {
                out[(start + i) * width + j] = *v;
            }
        }
        start = end;
    }
    out
}

/// A `FixedSizeList<Float32, width>` column without nulls is already a row-major matrix:
/// returns its values slice so ORT can view it with no copy.
pub fn as_matrix_view(column: &ArrayRef, width: usize) -> Option<&[f32]> {
    let list = column.as_fixed_size_list_opt()?;
    if list.value_length() as usize != width || list.null_count() > 0 {
        return None;
    }
    let values = list.values().as_primitive_opt::<Float32Type>()?;
    if values.null_count() > 0 {
        return None;
    }
    let start = list.offset() * width;
    Some(&values.values()[start..start + list.len() * width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array, Float64Array, Int32Array};
    use datafusion::arrow::datatypes::{Field, Float64Type};
    use std::sync::Arc;

    /// The plain reference: element (i, j) is column j's row i.
    fn reference(columns: &[Vec<f64>]) -> Vec<f64> {
        let rows = columns.first().map_or(0, Vec::len);
        (0..rows)
            .flat_map(|i| columns.iter().map(move |c| c[i]))
            .collect()
    }

    #[test]
    fn stacking_matches_reference_across_tile_edges() {
        for rows in [
            0,
            1,
            TILE_ROWS - 1,
            TILE_ROWS,
            TILE_ROWS + 1,
            3 * TILE_ROWS + 7,
        ] {
            let cols: Vec<Vec<f64>> = (0..3)
                .map(|j| (0..rows).map(|i| (i * 10 + j) as f64).collect())
                .collect();
            let arrays: Vec<PrimitiveArray<Float64Type>> =
                cols.iter().map(|c| Float64Array::from(c.clone())).collect();
            assert_eq!(stack_row_major(&arrays), reference(&cols), "rows={rows}");
        }
    }

    #[test]
    fn cast_all_widens_integers() {
        let cols: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![1, 2, 3]))];
        let cast = cast_all::<Float32Type>(&cols).unwrap();
        assert_eq!(cast[0].values().as_ref(), &[1.0f32, 2.0, 3.0]);
    }

    #[test]
    fn fixed_size_list_is_viewed_without_copy_and_respects_offset() {
        let values = Float32Array::from((0..12).map(|v| v as f32).collect::<Vec<_>>());
        let field = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::new(field, 3, Arc::new(values), None);
        let sliced: ArrayRef = Arc::new(list.slice(1, 2));
        assert_eq!(
            as_matrix_view(&sliced, 3).unwrap(),
            &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
        assert!(as_matrix_view(&sliced, 4).is_none());
    }
}

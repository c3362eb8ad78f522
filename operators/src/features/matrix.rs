//! Arrow feature columns to the contiguous row-major matrix an ONNX tensor views.
//!
//! Stacking n columns into [N, n] is the one copy shoal makes on the way to the model; it is
//! done in row tiles so each tile's output stays in cache while the columns are walked.
//! A single `FixedSizeList<Float32, n>` column needs no copy at all (see `super::tensor`).

use datafusion::arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

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

/// Row-major [rows, columns.len()] f32 matrix, converting each column while it is copied:
/// one pass over the data instead of a cast pass and a stacking pass. Decimals of up to
/// 18 digits convert through i64 (one instruction) instead of arrow's i128 path; the
/// values are the same as arrow's cast (`x as f64 / 10^scale`, then to f32).
pub fn stack_as_f32(columns: &[ArrayRef]) -> datafusion::arrow::error::Result<Vec<f32>> {
    let width = columns.len();
    let rows = columns.first().map_or(0, |c| c.len());
    // Types without a fast path are cast once up front.
    let fallback: Vec<Option<ArrayRef>> = columns
        .iter()
        .map(|c| match c.data_type() {
            DataType::Decimal128(p, _) if *p <= 18 => Ok(None),
            d if d.is_integer() || d.is_floating() && *d != DataType::Float16 => Ok(None),
            _ => cast(c, &DataType::Float32).map(Some),
        })
        .collect::<datafusion::arrow::error::Result<_>>()?;
    let mut out = vec![0f32; rows * width];
    let mut start = 0;
    while start < rows {
        let end = (start + TILE_ROWS).min(rows);
        for (j, column) in columns.iter().enumerate() {
            let column = fallback[j].as_ref().unwrap_or(column);
            macro_rules! convert {
                ($t:ty, $f:expr) => {{
                    let values = &column.as_primitive::<$t>().values()[start..end];
                    let f = $f;
                    for (i, v) in values.iter().enumerate() {
                        out[(start + i) * width + j] = f(*v);
                    }
                }};
            }
            match column.data_type() {
                DataType::Float32 => convert!(Float32Type, |v: f32| v),
                DataType::Float64 => convert!(Float64Type, |v: f64| v as f32),
                DataType::Int64 => convert!(Int64Type, |v: i64| v as f32),
                DataType::Int32 => convert!(Int32Type, |v: i32| v as f32),
                DataType::Int16 => convert!(Int16Type, |v: i16| f32::from(v)),
                DataType::Int8 => convert!(Int8Type, |v: i8| f32::from(v)),
                DataType::UInt64 => convert!(UInt64Type, |v: u64| v as f32),
                DataType::UInt32 => convert!(UInt32Type, |v: u32| v as f32),
                DataType::UInt16 => convert!(UInt16Type, |v: u16| f32::from(v)),
                DataType::UInt8 => convert!(UInt8Type, |v: u8| f32::from(v)),
                DataType::Decimal128(_, scale) => {
                    let divisor = 10f64.powi(i32::from(*scale));
                    convert!(Decimal128Type, |v: i128| ((v as i64) as f64 / divisor)
                        as f32)
                }
                other => {
                    return Err(datafusion::arrow::error::ArrowError::CastError(format!(
                        "cannot feed {other} to a model"
                    )));
                }
            }
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array};
    use datafusion::arrow::datatypes::Float64Type;
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
    fn fused_f32_stacking_equals_arrow_cast_then_stack() {
        use datafusion::arrow::array::{Decimal128Array, Int64Array};
        let decimals = Decimal128Array::from(vec![12345_i128, -1, 0, 99_999_999_999_999_999])
            .with_precision_and_scale(18, 2)
            .unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(decimals),
            Arc::new(Int64Array::from(vec![1, -2, 3, i64::MAX])),
            Arc::new(Float64Array::from(vec![0.1, 1e300, -0.0, f64::NAN])),
            Arc::new(Int32Array::from(vec![7, 8, 9, 10])),
        ];
        let reference = stack_row_major(&cast_all::<Float32Type>(&cols).unwrap());
        let fused = stack_as_f32(&cols).unwrap();
        assert_eq!(reference.len(), fused.len());
        for (r, f) in reference.iter().zip(&fused) {
            assert!(
                r.to_bits() == f.to_bits() || (r.is_nan() && f.is_nan()),
                "{r} vs {f}"
            );
        }
    }

    #[test]
    fn cast_all_widens_integers() {
        let cols: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![1, 2, 3]))];
        let cast = cast_all::<Float32Type>(&cols).unwrap();
        assert_eq!(cast[0].values().as_ref(), &[1.0f32, 2.0, 3.0]);
    }
}

//! Tensors in Arrow columns. A row's tensor is a `FixedSizeList` of numbers, row-major;
//! its shape comes from Arrow's canonical fixed-shape tensor extension type
//! (`arrow.fixed_shape_tensor`, what `image_tensor` returns and pyarrow's
//! `FixedShapeTensorArray` writes), else from nested fixed-size lists
//! (`FixedSizeList<FixedSizeList<Float32, 4>, 3>` is 3 x 4), else from the list's width.
//!
//! The extension type is arrow-schema's own ([`FixedShapeTensor`]): it validates every tag
//! shoal writes or reads, so a tag pyarrow wrote is read as pyarrow
//! meant it. Only the `shape` key is read back (arrow 59 has no accessor for it), and a
//! `permutation` is refused rather than silently ignored.

use arrow_schema::extension::{ExtensionType, FixedShapeTensor};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;

/// The per-row shape of a tensor column's field: None where the field is not a list of
/// numbers (a scalar column).
pub fn row_shape(field: &Field) -> Result<Option<Vec<usize>>, String> {
    let DataType::FixedSizeList(_, _) = field.data_type() else {
        return Ok(None);
    };
    if field.extension_type_name() == Some(FixedShapeTensor::NAME) {
        let tensor = field
            .try_extension_type::<FixedShapeTensor>()
            .map_err(|e| e.to_string())?;
        if tensor.permutations().is_some() {
            return Err(
                "its fixed-shape tensor tag has a permutation, which shoal does not \
                        apply: store the tensor in its logical order"
                    .into(),
            );
        }
        #[derive(serde::Deserialize)]
        struct Shape {
            shape: Vec<usize>,
        }
        let text = field.extension_type_metadata().unwrap_or_default();
        let parsed: Shape = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Ok(Some(parsed.shape));
    }
    let mut shape = Vec::new();
    let mut data_type = field.data_type();
    while let DataType::FixedSizeList(item, width) = data_type {
        shape.push(*width as usize);
        data_type = item.data_type();
    }
    if !data_type.is_numeric() {
        return Err(format!("its values are {data_type}, not numbers"));
    }
    Ok(Some(shape))
}

/// A field holding one `value_type` tensor of `shape` per row, tagged with the canonical
/// fixed-shape tensor type so Arrow readers (pyarrow, DuckDB's arrow scan) see its shape.
pub fn tensor_field(
    name: &str,
    value_type: DataType,
    shape: &[usize],
    nullable: bool,
) -> Result<Field, ArrowError> {
    let width: usize = shape.iter().product();
    let width = i32::try_from(width).map_err(|_| {
        ArrowError::InvalidArgumentError(format!("a tensor of shape {shape:?} is too large"))
    })?;
    // The tag is written by hand: arrow 59 serialises absent dimension names as
    // `"dim_names":null`, which its own reader (and the spec) refuse. Reading it back through
    // arrow's type checks it.
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let field = Field::new(
        name,
        DataType::new_fixed_size_list(value_type, width, false),
        nullable,
    )
    .with_metadata(
        [
            (
                "ARROW:extension:name".to_string(),
                FixedShapeTensor::NAME.to_string(),
            ),
            (
                "ARROW:extension:metadata".to_string(),
                format!("{{\"shape\":[{}]}}", dims.join(",")),
            ),
        ]
        .into(),
    );
    field.try_extension_type::<FixedShapeTensor>()?;
    Ok(field)
}

/// The numbers of a tensor column, all rows back to back, as a slice of its leaf values
/// (no copy): nested lists are unwrapped and the array's offset applied.
pub fn flat_values(column: &ArrayRef) -> Result<ArrayRef, String> {
    let mut values = column.clone();
    while let Some(list) = values.as_fixed_size_list_opt() {
        if list.null_count() > 0 {
            return Err(format!("{} of its tensors are null", list.null_count()));
        }
        let width = list.value_length() as usize;
        values = list
            .values()
            .slice(list.offset() * width, list.len() * width);
    }
    if values.null_count() > 0 {
        return Err(format!(
            "{} of its tensor values are null",
            values.null_count()
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array};
    use datafusion::arrow::datatypes::Float32Type;
    use std::sync::Arc;

    #[test]
    fn the_shape_comes_from_the_tag_then_the_nesting_then_the_width() {
        let tagged = tensor_field("t", DataType::Float32, &[3, 4, 5], false).unwrap();
        assert_eq!(row_shape(&tagged).unwrap(), Some(vec![3, 4, 5]));
        let inner = DataType::new_fixed_size_list(DataType::Float32, 4, false);
        let nested = Field::new("t", DataType::new_fixed_size_list(inner, 3, false), false);
        assert_eq!(row_shape(&nested).unwrap(), Some(vec![3, 4]));
        let flat = Field::new(
            "t",
            DataType::new_fixed_size_list(DataType::Int64, 7, false),
            false,
        );
        assert_eq!(row_shape(&flat).unwrap(), Some(vec![7]));
        assert_eq!(
            row_shape(&Field::new("x", DataType::Float64, false)).unwrap(),
            None
        );
    }

    #[test]
    fn a_tag_that_disagrees_with_the_width_or_permutes_is_refused() {
        let tag = |json: &str| {
            Field::new(
                "t",
                DataType::new_fixed_size_list(DataType::Float32, 6, false),
                false,
            )
            .with_metadata(
                [
                    ("ARROW:extension:name".into(), FixedShapeTensor::NAME.into()),
                    ("ARROW:extension:metadata".into(), json.into()),
                ]
                .into(),
            )
        };
        assert_eq!(
            row_shape(&tag(r#"{"shape":[2,3]}"#)).unwrap(),
            Some(vec![2, 3])
        );
        let wrong = row_shape(&tag(r#"{"shape":[2,4]}"#)).unwrap_err();
        assert!(wrong.contains("list size mismatch"), "{wrong}");
        let permuted = row_shape(&tag(r#"{"shape":[2,3],"permutation":[1,0]}"#)).unwrap_err();
        assert!(permuted.contains("permutation"), "{permuted}");
    }

    #[test]
    fn flat_values_view_the_rows_of_a_sliced_nested_column() {
        let leaf = Float32Array::from_iter_values((0..24).map(|v| v as f32));
        let inner = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            2,
            Arc::new(leaf),
            None,
        )
        .unwrap();
        let outer = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", inner.data_type().clone(), false)),
            3,
            Arc::new(inner),
            None,
        )
        .unwrap();
        let column: ArrayRef = Arc::new(outer.slice(1, 2));
        let values = flat_values(&column).unwrap();
        let values = values.as_primitive::<Float32Type>().values();
        assert_eq!(
            values.to_vec(),
            (6..18).map(|v| v as f32).collect::<Vec<_>>()
        );
    }
}

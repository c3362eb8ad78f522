//! The argument columns of the training and metric aggregates as f64, with errors that name
//! the column a bad value came from.

use crate::features::numeric::as_f64;
use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use std::sync::Arc;

/// What to call an argument in an error: its column name, else the expression.
pub fn argument_names(exprs: &[Arc<dyn PhysicalExpr>]) -> Vec<String> {
    exprs
        .iter()
        .map(|e| match e.downcast_ref::<Column>() {
            Some(c) => c.name().to_string(),
            None => e.to_string(),
        })
        .collect()
}

/// The string literal an aggregate takes as its first argument.
pub fn literal_string(exprs: &[Arc<dyn PhysicalExpr>], function: &str) -> Result<String> {
    let literal = exprs
        .first()
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(|l| l.value().clone());
    match literal {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s))) => Ok(s),
        _ => Err(DataFusionError::Plan(format!(
            "{function}: the first argument must be a string literal"
        ))),
    }
}

/// A feature or label column as f64 values without nulls; booleans read as 0/1.
pub fn non_null_f64(column: &ArrayRef, name: &str, role: &str) -> Result<Float64Array> {
    let values = if column.data_type() == &DataType::Boolean {
        cast(column, &DataType::Float64)
            .map_err(DataFusionError::from)
            .map(|a| datafusion::arrow::array::AsArray::as_primitive(&a).clone())?
    } else {
        as_f64(column).map_err(|e| DataFusionError::Plan(format!("{role} '{name}': {e}")))?
    };
    if values.null_count() > 0 {
        return Err(DataFusionError::Execution(format!(
            "{role} '{name}' is null in {} row(s): filter those rows or fill the value \
             (e.g. coalesce({name}, 0))",
            values.null_count()
        )));
    }
    Ok(values)
}

/// Checks a binary label: every value 0 or 1.
pub fn check_binary_label(label: &Float64Array, name: &str) -> Result<()> {
    if let Some(bad) = label.values().iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(DataFusionError::Execution(format!(
            "label '{name}' must be 0 or 1 for a classifier, found {bad}"
        )));
    }
    Ok(())
}

/// A deterministic hash of a row's values, the same on every run and site whatever the
/// row order: it assigns rows to the held-out split.
pub fn row_hash(values: impl Iterator<Item = f64>, seed: u64) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in values {
        h ^= v.to_bits();
        // splitmix64's finaliser: every input bit moves every output bit.
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

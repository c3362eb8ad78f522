//! How many rows a statement's batches may hold when it builds a large tensor per row.
//!
//! A scan reads `batch_size` rows (8192) at a time, and a scalar function returns one array
//! for the whole batch: 8192 images at 224 x 224 x 3 Float32 would be 4.9 GB in one array.
//! So where a statement calls a function returning a tensor, the coordinator sizes the
//! statement's batches to keep one batch's tensors near [`TENSOR_BATCH_BYTES`] and sends
//! the size to the workers (`shoal.query.batch_rows`); the other statements keep theirs.

use super::model_pins::expression_schema;
use crate::features::MAX_BATCH_OUTPUT_BYTES;
use crate::files::FileBatchesExec;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// What one batch of a function's tensors may take: a quarter of what a kernel may
/// allocate, so a batch's input bytes, its tensors and the model's copy fit beside it.
pub const TENSOR_BATCH_BYTES: usize = MAX_BATCH_OUTPUT_BYTES / 4;

/// Rows per batch for `plan`: None when no function in it returns a tensor large enough to
/// need fewer rows than `current`.
pub fn batch_rows_for(plan: &LogicalPlan, current: usize) -> Result<Option<usize>> {
    let mut rows = current;
    plan.apply_with_subqueries(|node| {
        let Some(schema) = expression_schema(node) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(_) = e
                    && let Ok((_, field)) = e.to_field(&schema)
                    && let Some(bytes) = bytes_per_row(field.data_type())
                {
                    rows = rows.min((TENSOR_BATCH_BYTES / bytes.max(1)).max(1));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok((rows < current).then_some(rows))
}

/// Sets how many files a files scan gathers per batch when the plan above it builds a
/// large tensor per row: the physical twin of [`batch_rows_for`], for sessions whose batch
/// size no coordinator sizes (one process). A scan of image files gathers files up to
/// 64 MiB of content, which for small JPEGs is a thousand images, whose tensors would not
/// fit one batch.
#[derive(Debug, Default)]
pub struct FileBatchRows;

impl PhysicalOptimizerRule for FileBatchRows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let current = config.execution.batch_size.get();
        let mut rows = current;
        plan.apply(|node| {
            node.apply_expressions(&mut |expr| {
                expr.apply(|e| {
                    if let Some(function) = e.downcast_ref::<ScalarFunctionExpr>()
                        && let Ok(field) = function.return_field(&Schema::empty())
                        && let Some(bytes) = bytes_per_row(field.data_type())
                    {
                        rows = rows.min((TENSOR_BATCH_BYTES / bytes.max(1)).max(1));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        if rows >= current {
            return Ok(plan);
        }
        plan.transform_up(|node| match node.downcast_ref::<FileBatchesExec>() {
            Some(batches) => {
                let fewer = batches.max_rows().map_or(rows, |r| r.min(rows));
                let input = batches.input().clone();
                Ok(Transformed::yes(
                    Arc::new(FileBatchesExec::new(input).with_max_rows(Some(fewer)))
                        as Arc<dyn ExecutionPlan>,
                ))
            }
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "shoal_file_batch_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Bytes of one row of a (possibly nested) fixed-size list of numbers.
fn bytes_per_row(data_type: &DataType) -> Option<usize> {
    let DataType::FixedSizeList(item, width) = data_type else {
        return None;
    };
    let inner = match item.data_type() {
        nested @ DataType::FixedSizeList(_, _) => bytes_per_row(nested)?,
        value => value.primitive_width()?,
    };
    usize::try_from(*width).ok()?.checked_mul(inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::udf::feature::feature_udfs;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn image_tensors_shrink_the_batches_and_small_vectors_do_not() {
        let ctx = SessionContext::new();
        for udf in feature_udfs() {
            ctx.register_udf(udf.as_ref().clone());
        }
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { ctx.sql(sql).await.unwrap().logical_plan().clone() }
        };
        // 3 x 224 x 224 Float32 is 588 KiB a row: 222 rows make 128 MiB.
        let images =
            plan("SELECT image_tensor(arrow_cast('x', 'Binary'), 224, 224, 'nchw') AS t").await;
        assert_eq!(batch_rows_for(&images, 8192).unwrap(), Some(222));
        let words = plan("SELECT one_hot('a', 'a', 'b', 'c') AS v").await;
        assert_eq!(batch_rows_for(&words, 8192).unwrap(), None);
    }
}

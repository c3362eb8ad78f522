//! shoal's `EXPLAIN`: where each stage of a statement runs (which site reads which files),
//! answered while planning.

use super::{PlannedQuery, not_supported, query_frame, read_only};
use crate::error::Result;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::{DataFrame, SessionContext};
use shoal_planner::SiteCatalog;
use shoal_planner::explain::explain_stages;
use shoal_sql::ShoalStatement;
use std::sync::Arc;

/// The stage placement of `statement`, as one text column.
pub(super) async fn stages(
    ctx: &SessionContext,
    statement: &ShoalStatement,
    catalog: &SiteCatalog,
    models: &shoal_planner::policy::ListedModels,
) -> Result<PlannedQuery> {
    let df = explained_frame(ctx, statement).await?;
    let plan = df.create_physical_plan().await?;
    let text = explain_stages(&plan, catalog, models)?;
    let schema = explain_schema();
    let lines = StringArray::from(text.lines().collect::<Vec<_>>());
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(lines)])?;
    Ok(PlannedQuery::Batches {
        schema,
        batches: vec![batch],
    })
}

/// What shoal's `EXPLAIN` of `statement` shows the stages of: the statement's own plan, or
/// for `CREATE MODEL` the scan of its training rows (each training pass runs it).
pub(super) async fn explained_frame(
    ctx: &SessionContext,
    statement: &ShoalStatement,
) -> Result<DataFrame> {
    match statement {
        ShoalStatement::CreateModel(create) => {
            let sql = format!("SELECT * FROM ({}) AS training_rows", create.query);
            Ok(ctx.sql_with_options(&sql, read_only()).await?)
        }
        ShoalStatement::Explain(_) => Err(crate::Error::Sql(not_supported(
            "explained again",
            statement,
        ))),
        ShoalStatement::Sql(_) | ShoalStatement::ShowModels => query_frame(ctx, statement).await,
    }
}

/// shoal's EXPLAIN answers one text column.
pub(super) fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]))
}

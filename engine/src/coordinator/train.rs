//! `CREATE MODEL` on the cluster: every pass of the training is a statement run like any
//! other (distributed, with the same retries), and the model lands in the coordinator's
//! registry, from which workers fetch it by hash the first time `predict` names it.

use super::Coordinator;
use super::query::{PlannedQuery, read_only};
use crate::error::{Error, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use shoal_sql::train::{CreateModel, QueryRunner, create_model, result_schema_of};
use std::sync::Arc;

/// Runs the training's SQL on the cluster.
struct ClusterRunner(Arc<Coordinator>);

#[async_trait::async_trait]
impl QueryRunner for ClusterRunner {
    async fn schema(&self, sql: &str) -> shoal_sql::Result<SchemaRef> {
        let ctx = self.0.session().map_err(into_sql)?;
        let df = ctx.sql_with_options(sql, read_only()).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    async fn collect(&self, sql: &str) -> shoal_sql::Result<(Vec<RecordBatch>, u64)> {
        let output = self.0.run(sql).await.map_err(into_sql)?;
        Ok((output.batches, output.report.bytes_to_coordinator))
    }
}

/// Engine errors inside the training loop keep their text (they name the worker).
fn into_sql(e: Error) -> shoal_sql::Error {
    match e {
        Error::Sql(inner) => inner,
        other => shoal_sql::Error::DataFusion(datafusion::error::DataFusionError::External(
            Box::new(other),
        )),
    }
}

impl Coordinator {
    /// A `CREATE MODEL` statement as a plan: its schema now, the training when executed
    /// (Flight plans a statement once for its schema and again to run it).
    pub(crate) fn plan_create_model(self: &Arc<Self>, sql: &str) -> Result<PlannedQuery> {
        let statement = shoal_sql::train::parse(sql).map_err(|message| {
            Error::Sql(shoal_sql::Error::Training {
                model: model_name_of(sql),
                message,
            })
        })?;
        let schema = result_schema_of(&statement);
        let coordinator = self.clone();
        let statement = Arc::new(statement);
        Ok(PlannedQuery::Deferred {
            schema,
            run: Arc::new(move || {
                let coordinator = coordinator.clone();
                let statement = statement.clone();
                Box::pin(async move { coordinator.train(&statement).await.map(|b| vec![b]) })
            }),
        })
    }

    async fn train(self: &Arc<Self>, statement: &CreateModel) -> Result<RecordBatch> {
        let runner = ClusterRunner(self.clone());
        let batch = create_model(statement, &runner, self.models()).await?;
        tracing::info!(model = statement.name, "trained and registered");
        self.publish_registry().await;
        Ok(batch)
    }
}

/// The name after `CREATE MODEL`, for errors about a statement that does not parse.
fn model_name_of(sql: &str) -> String {
    sql.split_whitespace().nth(2).unwrap_or("?").to_string()
}

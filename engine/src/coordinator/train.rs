//! `CREATE MODEL` on the cluster: every pass of the training is a statement run like any
//! other (distributed, with the same retries), and the model lands in the coordinator's
//! registry, from which workers fetch it by hash the first time `predict` names it.

use super::Coordinator;
use super::pipeline::{Events, encode_rows};
use super::query::{PlannedQuery, read_only};
use crate::error::{Error, Result};
use crate::protocol::PipelineEvent;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use shoal_planner::pipeline::CompiledOutput;
use shoal_sql::train::{CreateModel, QueryRunner, create_model, result_schema_of};
use std::sync::Arc;

/// Runs the training's SQL on the cluster: as statements of their own (`CREATE MODEL`, with
/// the statements' retries), or in a pipeline's session where its train node's input is a
/// view.
struct ClusterRunner {
    coordinator: Arc<Coordinator>,
    pipeline_session: Option<SessionContext>,
}

#[async_trait::async_trait]
impl QueryRunner for ClusterRunner {
    async fn schema(&self, sql: &str) -> shoal_sql::Result<SchemaRef> {
        let ctx = match &self.pipeline_session {
            Some(ctx) => ctx.clone(),
            None => self.coordinator.session().map_err(into_sql)?,
        };
        let df = ctx.sql_with_options(sql, read_only()).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    async fn collect(&self, sql: &str) -> shoal_sql::Result<(Vec<RecordBatch>, u64)> {
        let Some(ctx) = &self.pipeline_session else {
            let output = self.coordinator.run(sql).await.map_err(into_sql)?;
            return Ok((output.batches, output.report.bytes_to_coordinator));
        };
        let started = std::time::Instant::now();
        let df = ctx.sql_with_options(sql, read_only()).await?;
        let df = self.coordinator.pinned(df).map_err(into_sql)?;
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(plan.clone(), task_ctx).await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let report = self
            .coordinator
            .report_plan(&super::query::uuid_like(), plan, rows, started)
            .await;
        Ok((batches, report.bytes_to_coordinator))
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
    pub(crate) fn plan_create_model(self: &Arc<Self>, statement: &CreateModel) -> PlannedQuery {
        let schema = result_schema_of(statement);
        let coordinator = self.clone();
        let statement = Arc::new(statement.clone());
        PlannedQuery::Deferred {
            schema,
            run: Arc::new(move || {
                let coordinator = coordinator.clone();
                let statement = statement.clone();
                Box::pin(async move { coordinator.train(&statement).await.map(|b| vec![b]) })
            }),
        }
    }

    async fn train(self: &Arc<Self>, statement: &CreateModel) -> Result<RecordBatch> {
        let runner = ClusterRunner {
            coordinator: self.clone(),
            pipeline_session: None,
        };
        self.train_with(statement, &runner).await
    }

    async fn train_with(
        self: &Arc<Self>,
        statement: &CreateModel,
        runner: &ClusterRunner,
    ) -> Result<RecordBatch> {
        let batch = create_model(statement, runner, self.models()).await?;
        // The next statement pins the new version; workers fetch it by hash.
        tracing::info!(model = statement.name, "trained and registered");
        Ok(batch)
    }
}

impl Coordinator {
    /// A pipeline's `[train.*]` node: trains on the node's input (a view in the pipeline's
    /// session) and sends the training table as the output's rows.
    pub(super) async fn run_train_output(
        self: &Arc<Self>,
        output: &CompiledOutput,
        statement: &CreateModel,
        events: &Events,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let (state, _) = output.dataframe.clone().into_parts();
        let ctx = SessionContext::new_with_state(state);
        // The site tables' schema takes no new tables: the input gets a schema of its own.
        let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
        datafusion::catalog::SchemaProvider::register_table(
            schema.as_ref(),
            statement.name.clone(),
            output.dataframe.clone().into_view(),
        )?;
        let catalog = ctx
            .catalog(&ctx.state().config_options().catalog.default_catalog)
            .ok_or_else(|| {
                datafusion::common::internal_datafusion_err!(
                    "the pipeline's session has no catalog"
                )
            })?;
        catalog.register_schema("shoal_training", schema)?;
        let mut statement = statement.clone();
        statement.query = format!("SELECT * FROM shoal_training.\"{}\"", statement.name);
        let runner = ClusterRunner {
            coordinator: self.clone(),
            pipeline_session: Some(ctx),
        };
        let batch = self.train_with(&statement, &runner).await?;
        let rows = batch.num_rows() as u64;
        events
            .send(PipelineEvent::Rows {
                output: output.sink.clone(),
                ipc: encode_rows(&batch)?,
            })
            .await?;
        events
            .send(PipelineEvent::Output {
                output: output.sink.clone(),
                kind: "train".into(),
                rows,
                files: Vec::new(),
                already_committed: false,
                elapsed_ms: started.elapsed().as_millis() as u64,
                bytes_scanned: 0,
                bytes_to_coordinator: 0,
            })
            .await
    }
}

//! `CREATE MODEL` on the cluster: every pass of the training is a statement run like any
//! other (distributed, with the same retries), and the model lands in the coordinator's
//! registry; the next statement pins the new version and workers fetch it by hash.

use super::execution::{Executor, Replan};
use super::ids::new_id;
use super::session::Sessions;
use super::statement::{PlannedQuery, Statements, read_only};
use crate::error::{Error, Result};
use crate::security::Principal;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use shoal_operators::model::DirectoryModels;
use shoal_sql::ShoalStatement;
use shoal_sql::train::{CreateModel, QueryRunner, create_model, result_schema_of};
use std::sync::Arc;

#[derive(Debug)]
pub struct Training {
    sessions: Arc<Sessions>,
    statements: Arc<Statements>,
    executor: Arc<Executor>,
    models: Arc<DirectoryModels>,
    /// Trials a hyperparameter search may run.
    max_search_trials: usize,
}

impl Training {
    pub fn new(
        sessions: Arc<Sessions>,
        statements: Arc<Statements>,
        executor: Arc<Executor>,
        models: Arc<DirectoryModels>,
        max_search_trials: usize,
    ) -> Self {
        Self {
            sessions,
            statements,
            executor,
            models,
            max_search_trials,
        }
    }

    /// Refuses a name the registry would refuse, and a shipped model's name to anyone but
    /// an admin: the operator's model is the operator's.
    fn check_name(&self, name: &str, principal: &Principal) -> Result<()> {
        shoal_operators::model::check_model_name(name).map_err(shoal_sql::Error::from)?;
        if !principal.may_train() {
            return Err(Error::Forbidden(format!(
                "{} has the analyst role: training model '{name}' needs the trainer or admin role",
                principal.owner()
            )));
        }
        if self.models.is_shipped(name) && !principal.is_admin() {
            return Err(Error::Forbidden(format!(
                "model '{name}' was shipped by the operator: training under its name needs the \
                 admin role; choose another name"
            )));
        }
        Ok(())
    }

    /// A `CREATE MODEL` statement as a plan: its schema now, the training when executed
    /// (Flight plans a statement once for its schema and again to run it).
    /// A name the registry would refuse is refused now, before the statement is accepted.
    pub fn plan(
        self: &Arc<Self>,
        statement: &CreateModel,
        principal: &Principal,
    ) -> Result<PlannedQuery> {
        self.check_name(&statement.name, principal)?;
        let schema = result_schema_of(statement);
        let training = self.clone();
        let statement = Arc::new(statement.clone());
        Ok(PlannedQuery::Deferred {
            schema,
            run: Arc::new(move || {
                let training = training.clone();
                let statement = statement.clone();
                Box::pin(async move {
                    let runner = ClusterRunner {
                        training: training.clone(),
                        pipeline_session: None,
                    };
                    training
                        .train_with(&statement, &runner)
                        .await
                        .map(|b| vec![b])
                })
            }),
        })
    }

    /// Trains `statement` on `input`, a pipeline's train node input (a view in the
    /// pipeline's session); the training table.
    pub async fn train_in_session(
        self: &Arc<Self>,
        ctx: SessionContext,
        statement: &CreateModel,
        input: Arc<dyn datafusion::catalog::TableProvider>,
        principal: &Principal,
    ) -> Result<RecordBatch> {
        self.check_name(&statement.name, principal)?;
        // The site tables' schema takes no new tables: the input gets a schema of its own.
        let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
        datafusion::catalog::SchemaProvider::register_table(
            schema.as_ref(),
            statement.name.clone(),
            input,
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
            training: self.clone(),
            pipeline_session: Some(ctx),
        };
        self.train_with(&statement, &runner).await
    }

    async fn train_with(
        &self,
        statement: &CreateModel,
        runner: &ClusterRunner,
    ) -> Result<RecordBatch> {
        let batch = create_model(statement, runner, &self.models).await?;
        tracing::info!(model = statement.name, "trained and registered");
        Ok(batch)
    }

    /// Runs one pass of a training as a statement of its own, re-run like any statement
    /// when a worker is lost.
    async fn run_sql(&self, sql: &str) -> Result<(Vec<RecordBatch>, u64)> {
        let replan: Replan = {
            let statements = self.statements.clone();
            let sql = sql.to_string();
            Arc::new(move || {
                let statements = statements.clone();
                let sql = sql.clone();
                Box::pin(async move { plan_pass(&statements, &sql).await })
            })
        };
        let planned = plan_pass(&self.statements, sql).await?;
        let output = self.executor.collect(&new_id(), planned, replan).await?;
        Ok((output.batches, output.report.bytes_to_coordinator))
    }
}

/// Plans one training pass (plain SQL: a pass is never a `CREATE MODEL` of its own).
async fn plan_pass(statements: &Statements, sql: &str) -> Result<PlannedQuery> {
    let statement = ShoalStatement::parse_internal(sql)?;
    statements
        .plan(&statement, None, |create| {
            Err(Error::Sql(shoal_sql::Error::Training {
                model: create.name.clone(),
                message: "a training query cannot itself train a model".into(),
            }))
        })
        .await
}

/// Runs the training's SQL on the cluster: as statements of their own (`CREATE MODEL`, with
/// the statements' retries), or in a pipeline's session where its train node's input is a
/// view.
struct ClusterRunner {
    training: Arc<Training>,
    pipeline_session: Option<SessionContext>,
}

#[async_trait::async_trait]
impl QueryRunner for ClusterRunner {
    fn max_search_trials(&self) -> usize {
        self.training.max_search_trials
    }

    async fn schema(&self, sql: &str) -> shoal_sql::Result<SchemaRef> {
        let ctx = match &self.pipeline_session {
            Some(ctx) => ctx.clone(),
            None => self.training.sessions.session().map_err(into_sql)?,
        };
        let df = ctx.sql_with_options(sql, read_only()).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    async fn collect(&self, sql: &str) -> shoal_sql::Result<(Vec<RecordBatch>, u64)> {
        let Some(ctx) = &self.pipeline_session else {
            return self.training.run_sql(sql).await.map_err(into_sql);
        };
        let started = std::time::Instant::now();
        let df = ctx.sql_with_options(sql, read_only()).await?;
        let df = self.training.sessions.pinned(df).map_err(into_sql)?;
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(plan.clone(), task_ctx).await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let report = self
            .training
            .executor
            .reports()
            .of_plan(&new_id(), plan, rows, started)
            .await;
        Ok((batches, report.bytes_to_coordinator))
    }
}

/// Engine errors inside the training loop keep their text and kind (they name the worker).
fn into_sql(e: Error) -> shoal_sql::Error {
    match e {
        Error::Sql(inner) => inner,
        other => shoal_sql::Error::DataFusion(datafusion::error::DataFusionError::External(
            Box::new(other),
        )),
    }
}

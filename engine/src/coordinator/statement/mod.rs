//! Statements: what a client sends, parsed once ([`ShoalStatement`]) and planned in a fresh
//! session into a [`PlannedQuery`] (a distributed plan, an answer computed while planning,
//! or work deferred to execution); and `describe`, which answers the schemas of a prepared
//! statement without running it.
//!
//! `CREATE MODEL` is planned by the caller's training component (passed in), so this module
//! knows nothing of training.

mod describe;
mod explain;
pub mod prepared;

use crate::coordinator::session::Sessions;
use crate::error::Result;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use shoal_planner::SiteCatalog;
use shoal_sql::ShoalStatement;
use shoal_sql::train::CreateModel;
use std::sync::Arc;

/// A statement ready to run.
pub enum PlannedQuery {
    /// A plan to execute (distributed when it reads site data).
    Plan {
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
    },
    /// An answer computed while planning (EXPLAIN).
    Batches {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// Work done when executed, with its schema known before (CREATE MODEL).
    Deferred { schema: SchemaRef, run: DeferredRun },
}

/// What a [`PlannedQuery::Deferred`] runs.
pub type DeferredRun =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<Vec<RecordBatch>>> + Send + Sync>;

impl PlannedQuery {
    pub fn schema(&self) -> SchemaRef {
        match self {
            PlannedQuery::Plan { plan, .. } => plan.schema(),
            PlannedQuery::Batches { schema, .. } | PlannedQuery::Deferred { schema, .. } => {
                schema.clone()
            }
        }
    }
}

/// Plans statements in the cluster's sessions.
#[derive(Debug)]
pub struct Statements {
    sessions: Arc<Sessions>,
    catalog: Arc<SiteCatalog>,
}

impl Statements {
    pub fn new(sessions: Arc<Sessions>, catalog: Arc<SiteCatalog>) -> Self {
        Self { sessions, catalog }
    }

    /// Plans `statement` with its placeholders bound to `parameters`; `create_model` plans
    /// a `CREATE MODEL`. Remote clients may only read (DDL, DML and `SET` are refused).
    pub async fn plan(
        &self,
        statement: &ShoalStatement,
        parameters: Option<ParamValues>,
        create_model: impl FnOnce(&CreateModel) -> Result<PlannedQuery>,
    ) -> Result<PlannedQuery> {
        match statement {
            ShoalStatement::CreateModel(create) => create_model(create),
            ShoalStatement::Explain(inner) => {
                let ctx = self.sessions.session()?;
                let models = self.sessions.listed_models();
                explain::stages(&ctx, inner, &self.catalog, &models).await
            }
            ShoalStatement::Sql(_) | ShoalStatement::ShowModels => {
                let ctx = self.sessions.session()?;
                let mut df = query_frame(&ctx, statement).await?;
                if let Some(parameters) = parameters {
                    df = df.with_param_values(parameters)?;
                }
                let df = self.sessions.pinned(df)?;
                let task_ctx = Arc::new(df.task_ctx());
                let plan = df.create_physical_plan().await?;
                Ok(PlannedQuery::Plan { plan, task_ctx })
            }
        }
    }
}

/// The DataFrame of a statement DataFusion plans (SQL, `SHOW MODELS`), as remote clients may
/// run it.
async fn query_frame(ctx: &SessionContext, statement: &ShoalStatement) -> Result<DataFrame> {
    statement
        .dataframe(ctx, read_only())
        .await?
        .ok_or_else(|| crate::Error::Sql(not_supported("planned as a query", statement)))
}

fn not_supported(what: &str, statement: &ShoalStatement) -> shoal_sql::Error {
    shoal_sql::Error::Statement {
        message: format!("{} cannot be {what}", statement.kind()),
        line: 1,
        column: 1,
    }
}

/// What remote clients may run: queries only.
pub fn read_only() -> SQLOptions {
    shoal_sql::statement::client_options()
}

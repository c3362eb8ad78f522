//! Planning and running one statement on the cluster.

use super::Coordinator;
use super::resilient::{Attempts, Replan};
use crate::error::Result;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
use futures::TryStreamExt;
use shoal_operators::ModelProvider;
use shoal_operators::codec::ShoalCodec;
use shoal_operators::udf::model_pins::{ModelPins, Pins};
use shoal_planner::explain::explain_stages;
use shoal_planner::locality::CatalogWorkerResolver;
use shoal_planner::{QueryReport, SiteLocality, SiteSchemaProvider};
use shoal_sql::train::result_schema_of;
use shoal_sql::{ShoalStatement, with_shoal_functions_at};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a finished query waits for its workers' metrics before reporting without them.
const METRICS_WAIT: Duration = Duration::from_secs(5);

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

/// A whole result with what it moved.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub report: QueryReport,
}

impl Coordinator {
    /// A fresh session per statement: the catalog is read live, and nothing one client sets
    /// leaks into another's queries.
    pub fn session(&self) -> Result<SessionContext> {
        let provider: Arc<dyn ModelProvider> = self.models.clone();
        let locality = SiteLocality::new(self.catalog.clone());
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("shoal_cluster", "public");
        let builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config);
        // shoal's extension nodes (sinks) are planned before the distributed planner wraps
        // the query planner, so they land inside the workers' stages.
        let state = with_shoal_functions_at(builder, provider.clone(), "coordinator")
            .with_query_planner(Arc::new(shoal_operators::sink::ShoalQueryPlanner))
            .with_distributed_worker_resolver(CatalogWorkerResolver::new(self.catalog.clone()))
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_planner()
            .with_distributed_user_codec(ShoalCodec::default())
            // Sent to the workers with every task; `pinned` fills it in per statement.
            .with_distributed_option_extension(ModelPins::default())
            .with_distributed_desired_task_count_handler(locality.clone())
            .with_distributed_scale_up_leaf_node_handler(locality.clone())
            .with_distributed_route_tasks_handler(locality)
            .build();
        let mut state = state;
        // Every branch of a UNION gets the stage's full task count: each task is one site,
        // and a branch given fewer tasks than sites could not keep its scans local.
        state
            .config_mut()
            .options_mut()
            .set("distributed.children_isolator_unions", "false")?;
        let ctx = SessionContext::new_with_state(state);
        let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
        datafusion::catalog::CatalogProvider::register_schema(
            catalog.as_ref(),
            "public",
            Arc::new(SiteSchemaProvider::new(self.catalog.clone())),
        )?;
        ctx.register_catalog("shoal_cluster", catalog);
        // The system schema lives in the same catalog as the site tables.
        shoal_sql::session::register_system_tables(&ctx, provider)?;
        Ok(ctx)
    }

    /// Plans `sql`. Remote clients may only read (DDL, DML and `SET` are refused), and
    /// train models (`CREATE MODEL`).
    pub async fn plan(self: &Arc<Self>, sql: &str) -> Result<PlannedQuery> {
        self.plan_with_parameters(sql, None).await
    }

    /// Plans `sql` with its placeholders (`$1`, `?`) bound to `parameters`.
    pub async fn plan_with_parameters(
        self: &Arc<Self>,
        sql: &str,
        parameters: Option<ParamValues>,
    ) -> Result<PlannedQuery> {
        let statement = ShoalStatement::parse(sql)?;
        match &statement {
            ShoalStatement::CreateModel(create) => Ok(self.plan_create_model(create)),
            ShoalStatement::Explain(inner) => {
                let ctx = self.session()?;
                let df = explained_frame(&ctx, inner).await?;
                let plan = df.create_physical_plan().await?;
                let text = explain_stages(&plan, &self.catalog)?;
                let schema = explain_schema();
                let lines = StringArray::from(text.lines().collect::<Vec<_>>());
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(lines)])?;
                Ok(PlannedQuery::Batches {
                    schema,
                    batches: vec![batch],
                })
            }
            ShoalStatement::Sql(_) | ShoalStatement::ShowModels => {
                let ctx = self.session()?;
                let mut df = query_frame(&ctx, &statement).await?;
                if let Some(parameters) = parameters {
                    df = df.with_param_values(parameters)?;
                }
                let df = self.pinned(df)?;
                let task_ctx = Arc::new(df.task_ctx());
                let plan = df.create_physical_plan().await?;
                Ok(PlannedQuery::Plan { plan, task_ctx })
            }
        }
    }

    /// `df` with the versions of the models its plan calls pinned, so the coordinator and
    /// every worker score with the same version even if one is registered meanwhile, or a
    /// worker has not heard of it yet. Called right before physical planning.
    pub(crate) fn pinned(&self, df: DataFrame) -> Result<DataFrame> {
        let pins = Pins::for_plan(df.logical_plan(), self.models.as_ref())?;
        let (mut state, plan) = df.into_parts();
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(pins.to_extension()?);
        Ok(DataFrame::new(state, plan))
    }

    /// The result schema of `sql` and the parameters it expects (`$1`, `$2`, ... in order,
    /// typed where the query implies a type), without running it.
    pub async fn describe(self: &Arc<Self>, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        let no_parameters = || Arc::new(Schema::empty());
        let statement = ShoalStatement::parse(sql)?;
        let ctx = self.session()?;
        let df = match &statement {
            ShoalStatement::CreateModel(create) => {
                return Ok((result_schema_of(create), no_parameters()));
            }
            ShoalStatement::Explain(inner) => {
                // Checked now, so a bad EXPLAIN fails at prepare time.
                explained_frame(&ctx, inner).await?;
                return Ok((explain_schema(), no_parameters()));
            }
            ShoalStatement::Sql(_) | ShoalStatement::ShowModels => {
                query_frame(&ctx, &statement).await?
            }
        };
        let mut parameters: Vec<(usize, String, DataType)> = df
            .logical_plan()
            .get_parameter_types()?
            .into_iter()
            .map(|(name, data_type)| {
                let position = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                (position, name, data_type.unwrap_or(DataType::Null))
            })
            .collect();
        parameters.sort();
        let parameter_schema = Schema::new(
            parameters
                .into_iter()
                .map(|(_, name, data_type)| Field::new(name, data_type, true))
                .collect::<Vec<_>>(),
        );
        let dataset: Schema = df.schema().as_arrow().clone();
        Ok((Arc::new(dataset), Arc::new(parameter_schema)))
    }

    /// Starts a planned query: the stream of its batches.
    pub fn execute(&self, planned: &PlannedQuery) -> Result<SendableRecordBatchStream> {
        match planned {
            PlannedQuery::Plan { plan, task_ctx } => {
                Ok(execute_stream(plan.clone(), task_ctx.clone())?)
            }
            PlannedQuery::Batches { schema, batches } => {
                let stream = futures::stream::iter(batches.clone().into_iter().map(Ok));
                Ok(Box::pin(
                    datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        schema.clone(),
                        stream,
                    ),
                ))
            }
            PlannedQuery::Deferred { schema, run } => {
                let run = run.clone();
                let stream = futures::stream::once(async move { run().await })
                    .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
                    .try_flatten();
                Ok(Box::pin(
                    datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        schema.clone(),
                        stream,
                    ),
                ))
            }
        }
    }

    /// The report of a query that has finished streaming (of its last attempt, with the
    /// workers lost on the way); keeps it under `query_id`.
    pub async fn finish(
        &self,
        query_id: &str,
        attempts: &Attempts,
        rows: u64,
        started: Instant,
    ) -> QueryReport {
        let planned = attempts.last_plan.lock().clone();
        let mut report = match planned.as_deref() {
            Some(PlannedQuery::Plan { plan, .. }) => {
                self.read_report(query_id, plan.clone(), rows, started)
                    .await
            }
            _ => QueryReport {
                rows_returned: rows,
                elapsed_ms: started.elapsed().as_millis() as u64,
                ..Default::default()
            },
        };
        report.retries = *attempts.retries.lock();
        let lost = attempts.lost.lock();
        report.lost_workers = lost.iter().map(|l| l.site.clone()).collect();
        report.lost_at_ms = lost
            .iter()
            .map(|l| l.noticed.saturating_duration_since(started).as_millis() as u64)
            .collect();
        drop(lost);
        self.keep_report(query_id.to_string(), report.clone());
        report
    }

    /// The report of an executed plan (waiting up to [`METRICS_WAIT`] for the workers'
    /// metrics); keeps it under `query_id`.
    pub(crate) async fn report_plan(
        &self,
        query_id: &str,
        plan: Arc<dyn ExecutionPlan>,
        rows: u64,
        started: Instant,
    ) -> QueryReport {
        let report = self.read_report(query_id, plan, rows, started).await;
        self.keep_report(query_id.to_string(), report.clone());
        report
    }

    /// The report of an executed plan, waiting up to [`METRICS_WAIT`] for the workers'
    /// metrics (without them when they do not come).
    async fn read_report(
        &self,
        query_id: &str,
        plan: Arc<dyn ExecutionPlan>,
        rows: u64,
        started: Instant,
    ) -> QueryReport {
        let reading = QueryReport::from_executed_plan(plan, rows, started.elapsed());
        match tokio::time::timeout(METRICS_WAIT, reading).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(query_id, "reading query metrics failed: {e}");
                QueryReport::default()
            }
            Err(_) => {
                tracing::warn!(
                    query_id,
                    "worker metrics did not arrive in {METRICS_WAIT:?}"
                );
                QueryReport::default()
            }
        }
    }

    /// Plans, runs and collects `sql` in process (the embedded cluster, tests, the demo),
    /// re-running it when a worker is lost mid-query.
    pub async fn run(self: &Arc<Self>, sql: &str) -> Result<QueryOutput> {
        let started = Instant::now();
        let planned = Arc::new(self.plan(sql).await?);
        let schema = planned.schema();
        let (stream, attempts) = self.execute_resilient(planned, self.replan(sql, None));
        let batches: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(crate::Error::from_datafusion)?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let report = self.finish(&uuid_like(), &attempts, rows, started).await;
        Ok(QueryOutput {
            schema,
            batches,
            report,
        })
    }

    /// Plans `sql` again with the same parameters: what a retry runs.
    pub fn replan(self: &Arc<Self>, sql: &str, parameters: Option<ParamValues>) -> Replan {
        let coordinator = self.clone();
        let sql = sql.to_string();
        Arc::new(move || {
            let coordinator = coordinator.clone();
            let sql = sql.clone();
            let parameters = parameters.clone();
            Box::pin(async move { coordinator.plan_with_parameters(&sql, parameters).await })
        })
    }
}

/// The DataFrame of a statement DataFusion plans (SQL, `SHOW MODELS`), as remote clients may
/// run it.
async fn query_frame(ctx: &SessionContext, statement: &ShoalStatement) -> Result<DataFrame> {
    statement
        .dataframe(ctx, read_only())
        .await?
        .ok_or_else(|| crate::Error::Sql(not_a_query(statement)))
}

/// What shoal's `EXPLAIN` of `statement` shows the stages of: the statement's own plan, or
/// for `CREATE MODEL` the scan of its training rows (each training pass runs it).
async fn explained_frame(ctx: &SessionContext, statement: &ShoalStatement) -> Result<DataFrame> {
    match statement {
        ShoalStatement::CreateModel(create) => {
            let sql = format!("SELECT * FROM ({}) AS training_rows", create.query);
            Ok(ctx.sql_with_options(&sql, read_only()).await?)
        }
        ShoalStatement::Explain(_) => Err(crate::Error::Sql(not_a_query(statement))),
        ShoalStatement::Sql(_) | ShoalStatement::ShowModels => query_frame(ctx, statement).await,
    }
}

fn not_a_query(statement: &ShoalStatement) -> shoal_sql::Error {
    shoal_sql::Error::Statement {
        message: format!("EXPLAIN of {} is not supported", statement.kind()),
        line: 1,
        column: 1,
    }
}

/// shoal's EXPLAIN answers one text column.
fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]))
}

pub(super) fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A unique id for a query (time + counter; no uuid dependency needed).
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("q{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

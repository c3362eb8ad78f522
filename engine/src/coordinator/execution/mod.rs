//! Running planned statements: plain, or resilient to lost workers (re-planned and re-run);
//! bounded by the query timeout, the result-row limit and cancellation; listed while they
//! run; and reported (bytes moved, rows, re-runs) once they end.

mod cancels;
mod limits;
mod reports;
pub mod resilient;
mod running;

pub use limits::{StreamLimits, bounded, flight_status};
pub use reports::QueryReports;
pub use resilient::Replan;
pub use running::RunningQueries;

use super::progress::WorkerProgress;
use super::statement::PlannedQuery;
use super::workers::WorkerCalls;
use crate::error::{Error, Result};
use cancels::Cancels;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;
use shoal_operators::ShoalOptions;
use shoal_planner::{QueryReport, SiteCatalog};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bounds and retry policy every statement runs under.
#[derive(Debug, Clone)]
pub struct ExecutionOptions {
    pub heartbeat_interval: Duration,
    /// A statement running longer is cancelled on every worker.
    pub query_timeout: Duration,
    /// A statement returning more rows fails.
    pub max_result_rows: u64,
    /// Times a statement is planned again and re-run when a worker is lost mid-query.
    pub task_retries: u32,
    /// A statement during which no worker scans a row and no batch arrives for this long
    /// fails with a no-progress error.
    pub stall_timeout: Duration,
}

/// A whole result with what it moved.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub report: QueryReport,
}

#[derive(Debug)]
pub struct Executor {
    catalog: Arc<SiteCatalog>,
    progress: Arc<WorkerProgress>,
    options: ExecutionOptions,
    reports: QueryReports,
    running: RunningQueries,
    cancels: Arc<Cancels>,
}

impl Executor {
    pub fn new(
        catalog: Arc<SiteCatalog>,
        progress: Arc<WorkerProgress>,
        workers: WorkerCalls,
        options: ExecutionOptions,
    ) -> Self {
        Self {
            catalog,
            progress,
            options,
            reports: QueryReports::new(workers.clone()),
            running: RunningQueries::default(),
            cancels: Arc::new(Cancels::new(workers)),
        }
    }

    /// The statements streaming now (each cancellable by its id).
    pub fn running(&self) -> &RunningQueries {
        &self.running
    }

    /// The reports of the most recent statements.
    pub fn reports(&self) -> &QueryReports {
        &self.reports
    }

    /// The bounds of one statement's stream.
    pub fn limits(&self) -> StreamLimits {
        StreamLimits {
            timeout: self.options.query_timeout,
            max_rows: self.options.max_result_rows,
        }
    }

    /// Starts a planned query: the stream of its batches.
    pub fn execute(&self, planned: &PlannedQuery) -> Result<SendableRecordBatchStream> {
        match planned {
            PlannedQuery::Plan { plan, task_ctx } => {
                let stream = with_planned_schema(execute_stream(plan.clone(), task_ctx.clone())?);
                let key = ShoalOptions::from_config(task_ctx.session_config().options())
                    .statement
                    .key;
                Ok(self.cancels.guard(key, stream))
            }
            PlannedQuery::Batches { schema, batches } => {
                let stream = futures::stream::iter(batches.clone().into_iter().map(Ok));
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    schema.clone(),
                    stream,
                )))
            }
            PlannedQuery::Deferred { schema, run } => {
                let run = run.clone();
                let stream = futures::stream::once(async move { run().await })
                    .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
                    .map_err(Error::into_datafusion)
                    .try_flatten();
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    schema.clone(),
                    stream,
                )))
            }
        }
    }

    /// Runs `planned` to the end and collects it (the embedded cluster, tests, training),
    /// re-running it with `replan` when a worker is lost mid-query; keeps its report under
    /// `query_id`.
    pub async fn collect(
        self: &Arc<Self>,
        query_id: &str,
        planned: PlannedQuery,
        replan: Replan,
    ) -> Result<QueryOutput> {
        let started = Instant::now();
        let schema = planned.schema();
        let (stream, attempts) = self.execute_resilient(Arc::new(planned), replan);
        let batches: Vec<RecordBatch> =
            stream.try_collect().await.map_err(Error::from_datafusion)?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let report = self
            .reports
            .finish(query_id, None, &attempts, rows, started)
            .await;
        Ok(QueryOutput {
            schema,
            batches,
            report,
        })
    }
}

/// Batches that crossed from a worker carry the schema the worker built, which has lost
/// field metadata the plan's own schema holds (datafusion-proto carries a function's return
/// type, not its field: an `image_tensor` column's fixed-shape tensor tag). Each batch gets
/// the planned schema back where it is the same schema with more metadata.
fn with_planned_schema(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let batches = stream.map_ok({
        let schema = schema.clone();
        move |batch| {
            if batch.schema_ref() != &schema && schema.contains(batch.schema_ref()) {
                // A clone is a few Arcs; the batch stays as it came if the schema is refused.
                batch.clone().with_schema(schema.clone()).unwrap_or(batch)
            } else {
                batch
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

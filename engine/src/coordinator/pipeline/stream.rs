//! Streaming one output's plan: its rows to the client (client sinks) or its manifest rows
//! gathered (Parquet sinks), bounded like a statement and reporting progress.

use super::events::{Events, encode_rows};
use super::{PROGRESS_EVERY, Pipelines};
use crate::coordinator::execution::bounded;
use crate::coordinator::ids::new_id;
use crate::error::{Error, Result};
use crate::protocol::PipelineEvent;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use shoal_planner::pipeline::Pipeline;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

impl Pipelines {
    /// Runs one output's plan, sending its rows (client sinks) or gathering its manifest
    /// rows (sinks), with a progress event every [`PROGRESS_EVERY`]. The stream is bounded
    /// like a Flight SQL statement's (query timeout, result-row limit) and listed among the
    /// running queries while it runs.
    pub(super) async fn stream_output(
        &self,
        pipeline: &Pipeline,
        name: &str,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<datafusion::execution::TaskContext>,
        send_rows: bool,
        events: &Events,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let started = Instant::now();
        let total = self.source_rows(pipeline);
        let scanned_at_start = self.progress.rows_scanned_total();
        let query_id = format!("pipeline-{}", new_id());
        let (_running, cancel) = self
            .executor
            .running()
            .start(
                &query_id,
                &events.principal.owner(),
                events.principal.is_admin(),
            )
            .map_err(|e| Error::Quota(e.to_string()))?;
        let limits = self.executor.limits();
        let stream = bounded(
            query_id,
            execute_stream(plan, task_ctx)?,
            cancel,
            limits,
            Arc::new(AtomicU64::new(0)),
        );
        tokio::pin!(stream);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.tick().await;
        let mut rows = 0u64;
        let mut manifest = Vec::new();
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    None => break,
                    Some(Err(FlightError::Tonic(status))) => return Err(Error::Rpc(status)),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(batch)) => {
                        rows += batch.num_rows() as u64;
                        if !send_rows {
                            manifest.push(batch);
                        } else if batch.num_rows() > 0 {
                            events.send(PipelineEvent::Rows { output: name.into(), ipc: encode_rows(&batch)? }).await?;
                        }
                    }
                },
                _ = ticker.tick() => {
                    events.send(PipelineEvent::Progress {
                        output: name.into(),
                        rows_done: self.progress.rows_scanned_total().saturating_sub(scanned_at_start).min(total),
                        rows_total: total,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    }).await?;
                }
            }
        }
        Ok((rows, manifest))
    }
}

//! Makes a worker's scans give the scheduler a turn after every batch, so a cancelled query
//! stops within one batch of scoring.
//!
//! Why: model inference is synchronous work inside a stream's poll. A partial aggregate
//! pulls batch after batch from its scan without ever returning `Pending` while the data is
//! in memory (a Parquet row group is read in one piece), so the task that runs it never
//! reaches a point where tokio can honour an abort: a client's cancel would only take effect
//! when the whole row group had been scored. A `Pending` after each batch is such a point.
//!
//! The wrapper stands in for the scan it wraps (same name, properties, children and metrics;
//! see [`shoal_planner::stand_in`]).

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use shoal_planner::stand_in::inner_with_children;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Rows this process's scans have produced: a worker reports it in its heartbeat, and the
/// coordinator turns the growth into progress of a long run.
static ROWS_SCANNED: AtomicU64 = AtomicU64::new(0);

pub fn rows_scanned() -> u64 {
    ROWS_SCANNED.load(Ordering::Relaxed)
}

/// Scan partitions streaming now: the load a worker reports, so the coordinator sends a
/// replicated file to the less busy of its holders.
static ACTIVE_SCANS: AtomicU64 = AtomicU64::new(0);

pub fn active_scans() -> u64 {
    ACTIVE_SCANS.load(Ordering::Relaxed)
}

/// Counts one active scan for as long as it lives.
struct ActiveScan;

impl ActiveScan {
    fn start() -> Self {
        ACTIVE_SCANS.fetch_add(1, Ordering::Relaxed);
        ActiveScan
    }
}

impl Drop for ActiveScan {
    fn drop(&mut self) {
        ACTIVE_SCANS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Fault injection for the fault-tolerance tests: `SHOAL_FAULT_BLOCK_SCAN_MS=N` makes every
/// scanned batch hold its thread for N ms, so a query is reliably still running when a test
/// kills or stops a worker, and every thread of the worker's runtime can be kept busy for
/// longer than the heartbeat timeout. Only in builds with the `fault-injection` feature
/// (the test build); a release build has no such switch.
#[cfg(feature = "fault-injection")]
fn fault_block_per_batch() -> Option<std::time::Duration> {
    static BLOCK: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| {
        std::env::var("SHOAL_FAULT_BLOCK_SCAN_MS")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    })
}

#[cfg(not(feature = "fault-injection"))]
fn fault_block_per_batch() -> Option<std::time::Duration> {
    None
}

#[derive(Debug)]
pub struct YieldingScan {
    inner: Arc<dyn ExecutionPlan>,
}

/// Wraps every `DataSourceExec` of `plan`.
pub fn yield_after_each_batch(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<DataSourceExec>().is_some() {
            Ok(Transformed::yes(Arc::new(YieldingScan { inner: node }) as _))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|t| t.data)
}

shoal_planner::display_as_stood_in!(YieldingScan, inner);

impl ExecutionPlan for YieldingScan {
    shoal_planner::stand_in_for!(inner);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(YieldingScan {
            inner: inner_with_children(&self.inner, children)?,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let block = fault_block_per_batch();
        let stream = self
            .inner
            .execute(partition, context)?
            .inspect_ok(move |batch| {
                ROWS_SCANNED.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                if let Some(block) = block {
                    // Holds the runtime thread, as slow synchronous model inference does.
                    std::thread::sleep(block);
                }
            });
        let schema = self.inner.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            YieldAfterItem {
                inner: stream,
                yield_next: false,
                _active: Some(ActiveScan::start()),
            },
        )))
    }
}

struct YieldAfterItem<S> {
    inner: S,
    yield_next: bool,
    _active: Option<ActiveScan>,
}

impl<S: Stream + Unpin> Stream for YieldAfterItem<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.yield_next {
            self.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = self.inner.poll_next_unpin(cx);
        if matches!(item, Poll::Ready(Some(_))) {
            self.yield_next = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_is_followed_by_one_pending() {
        let mut stream = YieldAfterItem {
            inner: futures::stream::iter([1, 2]),
            yield_next: false,
            _active: None,
        };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(x)) => seen.push(Some(x)),
                Poll::Ready(None) => break,
                Poll::Pending => seen.push(None),
            }
        }
        assert_eq!(seen, vec![Some(1), None, Some(2), None]);
    }
}

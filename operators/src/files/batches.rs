//! Gathers the one-row batches of a files scan into batches of many files.

use super::BATCH_CONTENT_BYTES;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Passes its input's rows on in batches of up to the session's batch size (or `max_rows`,
/// if lower), or of [`BATCH_CONTENT_BYTES`], whichever comes first.
#[derive(Debug)]
pub struct FileBatchesExec {
    input: Arc<dyn ExecutionPlan>,
    max_rows: Option<usize>,
}

impl FileBatchesExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            input,
            max_rows: None,
        }
    }

    /// At most `rows` files per batch: what a statement building a large tensor per file
    /// sets (`crate::udf::tensor_batches::FileBatchRows`).
    pub fn with_max_rows(mut self, rows: Option<usize>) -> Self {
        self.max_rows = rows;
        self
    }

    pub fn max_rows(&self) -> Option<usize> {
        self.max_rows
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for FileBatchesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let rows = self
            .max_rows
            .map_or("batch_size".to_string(), |r| r.to_string());
        write!(
            f,
            "FileBatchesExec: up to {rows} files or {} MiB of content per batch",
            BATCH_CONTENT_BYTES >> 20
        )
    }
}

impl ExecutionPlan for FileBatchesExec {
    fn name(&self) -> &str {
        "FileBatchesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Spreading its input over more partitions would split the batches it gathers.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("FileBatchesExec has one input".into()))?;
        Ok(Arc::new(Self::new(input).with_max_rows(self.max_rows)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let session_rows = context.session_config().batch_size();
        let max_rows = self
            .max_rows
            .map_or(session_rows, |r| r.min(session_rows))
            .max(1);
        // The content held while a batch gathers (up to 64 MiB a partition, and a copy while
        // it is joined) is the statement's memory: counted in its pool, so a statement over
        // many large files fails with resources exhausted instead of growing unbounded.
        let reservation = MemoryConsumer::new(format!("FileBatchesExec[{partition}]"))
            .register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            Gather {
                input,
                schema,
                held: Vec::new(),
                rows: 0,
                bytes: 0,
                max_rows,
                done: false,
                reservation,
            },
        )))
    }
}

struct Gather {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    held: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    max_rows: usize,
    done: bool,
    reservation: MemoryReservation,
}

impl Gather {
    fn flush(&mut self) -> Result<RecordBatch> {
        let held = std::mem::take(&mut self.held);
        // The joined copy exists beside the held batches until they are dropped.
        self.reservation.try_grow(self.bytes)?;
        self.rows = 0;
        self.bytes = 0;
        let joined = concat_batches(&self.schema, &held);
        drop(held);
        // Past here the batch is its consumer's to count.
        self.reservation.free();
        Ok(joined?)
    }
}

impl Stream for Gather {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                if self.held.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(self.flush()));
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    let size = batch.get_array_memory_size();
                    if let Err(e) = self.reservation.try_grow(size) {
                        self.done = true;
                        self.held.clear();
                        self.reservation.free();
                        return Poll::Ready(Some(Err(e)));
                    }
                    self.rows += batch.num_rows();
                    self.bytes += size;
                    self.held.push(batch);
                    if self.rows >= self.max_rows || self.bytes >= BATCH_CONTENT_BYTES {
                        return Poll::Ready(Some(self.flush()));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

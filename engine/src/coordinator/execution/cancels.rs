//! Telling every process to stop a statement's long loops. A statement's plan stream
//! carries a [`StopOnDrop`]: when the stream ends before its last batch (the client
//! cancelled, the timeout or the row limit stopped it, the client went away, an error), the
//! statement's key is cancelled here and on every live worker (`shoal.cancel`), so work
//! that holds a thread (local SGD, a slow model) stops at its next check rather than when
//! it is done. See `shoal_operators::cancel`.

use crate::coordinator::workers::WorkerCalls;
use crate::protocol::{ACTION_CANCEL_STATEMENT, CancelStatement};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::task::JoinSet;

/// How long a cancel broadcast waits for a worker (it is best effort: a worker that does
/// not answer stops at the statement's deadline).
const BROADCAST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub struct Cancels {
    workers: WorkerCalls,
    /// Broadcasts under way; owned here, so none outlives the coordinator.
    broadcasts: Mutex<JoinSet<()>>,
}

impl Cancels {
    pub fn new(workers: WorkerCalls) -> Self {
        Self {
            workers,
            broadcasts: Mutex::new(JoinSet::new()),
        }
    }

    /// `stream` of statement `key`, stopping the statement everywhere if it is dropped
    /// before its end.
    pub fn guard(
        self: &Arc<Self>,
        key: String,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        if key.is_empty() {
            return stream;
        }
        let schema = stream.schema();
        let guard = StopOnDrop {
            key,
            cancels: self.clone(),
            finished: false,
        };
        // The guard lives in the stream's tail: dropped unfinished if the stream is.
        let end =
            futures::stream::once(async move { guard.finish() }).filter_map(|()| async { None });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(end)))
    }

    fn stop(self: &Arc<Self>, key: String) {
        shoal_operators::cancel::cancel(&key);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancels = self.clone();
        let mut broadcasts = self.broadcasts.lock();
        while broadcasts.try_join_next().is_some() {}
        broadcasts.spawn_on(
            async move {
                let body = serde_json::to_vec(&CancelStatement { key }).unwrap_or_default();
                for site in cancels.workers.live_sites() {
                    let call = cancels
                        .workers
                        .call(&site, ACTION_CANCEL_STATEMENT, body.clone());
                    if let Ok(Err(e)) = tokio::time::timeout(BROADCAST_TIMEOUT, call).await {
                        tracing::debug!(worker = %site, "telling the worker to stop: {e}");
                    }
                }
            },
            &runtime,
        );
    }
}

/// Held by a statement's stream until its last batch.
struct StopOnDrop {
    key: String,
    cancels: Arc<Cancels>,
    finished: bool,
}

impl StopOnDrop {
    /// The stream reached its end: nothing to stop.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.finished {
            self.cancels.stop(std::mem::take(&mut self.key));
        }
    }
}

//! What bounds a statement's stream: the query timeout, the result-size limit and a
//! client's cancel. Each ends the stream with its own status; dropping the stream cancels
//! the work on every worker.

use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Status;

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub timeout: Duration,
    pub max_rows: u64,
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut,
}

/// `batches` bounded by `limits` and `cancel`; counts rows into `rows`. Errors are carried as
/// `FlightError::Tonic` with the status the client should see (their kind's).
pub fn bounded(
    query_id: String,
    batches: SendableRecordBatchStream,
    cancel: oneshot::Receiver<()>,
    limits: StreamLimits,
    rows: Arc<AtomicU64>,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    let stopped = Arc::new(Mutex::new(None::<Stop>));
    let stop = {
        let stopped = stopped.clone();
        async move {
            let cancelled = async {
                match cancel.await {
                    Ok(()) => Stop::Cancelled,
                    // The statement finished and forgot its cancel handle: never fires.
                    Err(_) => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                reason = cancelled => reason,
                _ = tokio::time::sleep(limits.timeout) => Stop::TimedOut,
            };
            *stopped.lock() = Some(reason);
        }
    };
    let max_rows = limits.max_rows;
    let query_id_for_errors = query_id.clone();
    // (rows seen, failed): the stream ends after its first error, whoever consumes it.
    let limited = batches
        .take_until(stop)
        .scan((0u64, false), move |(seen, failed), item| {
            if *failed {
                return futures::future::ready(None);
            }
            let out = match item {
                Ok(batch) => {
                    *seen += batch.num_rows() as u64;
                    rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    if *seen > max_rows {
                        Err(Status::resource_exhausted(format!(
                            "the result has more than {max_rows} rows (the coordinator's --max-result-rows); aggregate on the cluster or add a LIMIT"
                        )))
                    } else {
                        Ok(batch)
                    }
                }
                // A worker's own deadline (the same --query-timeout, counted from planning)
                // may stop the work a moment before this stream's timer: the client gets the
                // timeout either way.
                Err(e) if e.to_string().contains(DEADLINE_PASSED.as_str()) => {
                    Err(timed_out(&query_id_for_errors, limits.timeout))
                }
                Err(e) => Err(crate::Error::from_datafusion(e).to_status()),
            };
            *failed = out.is_err();
            futures::future::ready(Some(out.map_err(|s| FlightError::Tonic(Box::new(s)))))
        });
    let why_stopped =
        futures::stream::once(async move { *stopped.lock() }).filter_map(move |stop| {
            let status = match stop {
                None => None,
                Some(Stop::Cancelled) => {
                    Some(Status::cancelled(format!("query {query_id} was cancelled")))
                }
                Some(Stop::TimedOut) => Some(timed_out(&query_id, limits.timeout)),
            };
            futures::future::ready(status.map(|s| Err(FlightError::Tonic(Box::new(s)))))
        });
    limited.chain(why_stopped)
}

/// What a worker says when the statement's deadline stopped its work.
static DEADLINE_PASSED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| shoal_operators::cancel::Stopped::DeadlinePassed.to_string());

fn timed_out(query_id: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "query {query_id} ran past the {} s query timeout (the coordinator's --query-timeout) and was stopped on every worker",
        timeout.as_secs_f64()
    ))
}

/// The status a client sees for a stream error.
pub fn flight_status(error: FlightError) -> Status {
    match error {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::TryStreamExt;

    fn batches(n: usize, pending_after: bool) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let ready = futures::stream::iter((0..n).map(move |_| Ok(batch.clone())));
        let tail = futures::stream::once(async move {
            if pending_after {
                std::future::pending::<()>().await;
            }
        })
        .filter_map(|_| async { None });
        Box::pin(RecordBatchStreamAdapter::new(schema, ready.chain(tail)))
    }

    fn limits(timeout_ms: u64, max_rows: u64) -> StreamLimits {
        StreamLimits {
            timeout: Duration::from_millis(timeout_ms),
            max_rows,
        }
    }

    async fn run(
        stream: SendableRecordBatchStream,
        limits: StreamLimits,
        cancel: bool,
    ) -> Result<u64, Status> {
        let (tx, rx) = oneshot::channel();
        if cancel {
            tx.send(()).unwrap();
        } else {
            std::mem::forget(tx);
        }
        let rows = Arc::new(AtomicU64::new(0));
        let out: Vec<RecordBatch> = bounded("q".into(), stream, rx, limits, rows)
            .try_collect()
            .await
            .map_err(flight_status)?;
        Ok(out.iter().map(|b| b.num_rows() as u64).sum())
    }

    #[tokio::test]
    async fn a_stream_within_its_limits_is_untouched() {
        assert_eq!(
            run(batches(4, false), limits(10_000, 12), false)
                .await
                .unwrap(),
            12
        );
    }

    #[tokio::test]
    async fn the_stream_ends_at_its_first_error() {
        let (_tx, rx) = oneshot::channel();
        let items: Vec<_> = bounded(
            "q".into(),
            batches(4, false),
            rx,
            limits(10_000, 2),
            Arc::new(AtomicU64::new(0)),
        )
        .collect()
        .await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }

    #[tokio::test]
    async fn too_many_rows_end_with_resource_exhausted() {
        let err = run(batches(4, false), limits(10_000, 11), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.message(),
            "the result has more than 11 rows (the coordinator's --max-result-rows); aggregate \
             on the cluster or add a LIMIT"
        );
    }

    #[tokio::test]
    async fn a_stalled_stream_times_out() {
        let err = run(batches(1, true), limits(50, 100), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn cancel_ends_the_stream_with_cancelled() {
        let err = run(batches(1, true), limits(10_000, 100), true)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Cancelled);
    }
}

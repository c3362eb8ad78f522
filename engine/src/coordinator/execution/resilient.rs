//! Running a statement so that losing a worker does not lose the query.
//!
//! datafusion-distributed fixes a plan's tasks to workers when it plans, and does not re-run
//! a task elsewhere. shoal retries one level up: when an attempt fails because a worker was
//! lost (killed, cut off, or silent past the heartbeat timeout), the lost worker is marked
//! down, the statement is planned again (the catalog now places every file on a live holder
//! of it) and run again, a bounded number of times. The failed attempt's streams are dropped
//! first, which cancels its tasks, so late results of a worker that comes back are discarded.
//!
//! Results stay exact because a retry happens only while nothing of the failed attempt has
//! reached the caller: every result row comes from one attempt. Aggregates deliver nothing
//! until their inputs are complete, so they are always retryable; a query that has already
//! streamed rows fails instead, naming the lost worker.

use super::Executor;
use crate::coordinator::statement::PlannedQuery;
use crate::error::Result;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use url::Url;

/// How to plan the statement again for a retry.
pub type Replan = Arc<dyn Fn() -> BoxFuture<'static, Result<PlannedQuery>> + Send + Sync>;

/// What the attempts of one statement did; read after the stream ends for its report.
#[derive(Default)]
pub struct Attempts {
    /// The plan of the latest attempt (the one whose metrics describe the answer).
    pub last_plan: Mutex<Option<Arc<PlannedQuery>>>,
    /// Sites found lost, in order, and when each fault was found.
    pub lost: Mutex<Vec<LostWorker>>,
    pub retries: Mutex<u32>,
}

#[derive(Debug, Clone)]
pub struct LostWorker {
    pub site: String,
    /// When the coordinator noticed (error or heartbeat timeout).
    pub noticed: Instant,
}

/// One attempt in flight.
struct Running {
    stream: SendableRecordBatchStream,
    /// Resolves when a site the attempt may use stops heartbeating, or nothing progresses.
    watchdog: Pin<Box<dyn Future<Output = Fault> + Send>>,
    sites: Vec<(String, Url)>,
    /// Batches delivered by this attempt (progress the watchdog sees).
    delivered: Arc<AtomicU64>,
}

enum Fault {
    /// A site silent past the heartbeat timeout: lost, the attempt is retried without it.
    Silent(String),
    /// Every site answers but nothing moved for this long: the statement fails.
    Stalled(Duration),
}

struct State {
    executor: Arc<Executor>,
    replan: Replan,
    first: Option<Arc<PlannedQuery>>,
    running: Option<Running>,
    delivered: bool,
    done: bool,
    attempts: Arc<Attempts>,
}

impl Executor {
    /// Streams `planned`, re-planning with `replan` and re-running when a worker is lost
    /// before any batch was delivered (at most `task_retries` times).
    pub fn execute_resilient(
        self: &Arc<Self>,
        planned: Arc<PlannedQuery>,
        replan: Replan,
    ) -> (SendableRecordBatchStream, Arc<Attempts>) {
        let schema = planned.schema();
        let attempts = Arc::new(Attempts::default());
        let state = State {
            executor: self.clone(),
            replan,
            first: Some(planned),
            running: None,
            delivered: false,
            done: false,
            attempts: attempts.clone(),
        };
        let stream = futures::stream::unfold(state, next_batch);
        (
            Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            attempts,
        )
    }

    /// Starts one attempt of `planned`, watching the sites it may use and its progress.
    fn start_attempt(
        self: &Arc<Self>,
        planned: &PlannedQuery,
        sites: Vec<(String, Url)>,
    ) -> Result<Running> {
        let stream = self.execute(planned)?;
        let executor = self.clone();
        let every = (self.options.heartbeat_interval / 2).max(Duration::from_millis(20));
        let stall_timeout = self.options.stall_timeout;
        let watched: Vec<String> = sites.iter().map(|(s, _)| s.clone()).collect();
        let delivered = Arc::new(AtomicU64::new(0));
        let batches = delivered.clone();
        let watchdog = Box::pin(async move {
            // Progress: rows the workers scanned (their heartbeats) or batches delivered.
            let progress =
                || executor.progress.rows_scanned_total() + batches.load(Ordering::Relaxed);
            let (mut last, mut since) = (progress(), Instant::now());
            loop {
                tokio::time::sleep(every).await;
                if let Some(silent) = watched.iter().find(|s| !executor.catalog.is_responsive(s)) {
                    return Fault::Silent(silent.clone());
                }
                let now = progress();
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() >= stall_timeout {
                    return Fault::Stalled(since.elapsed());
                }
            }
        });
        Ok(Running {
            stream,
            watchdog,
            sites,
            delivered,
        })
    }

    /// The sites of a failed attempt that are gone. A transport error with every site
    /// still answering is probed again until the heartbeat timeout: a killed process's
    /// connections can break a moment before its listening port closes.
    async fn confirm_lost(&self, sites: &[(String, Url)], error: &DataFusionError) -> Vec<String> {
        let mut lost = self.lost_sites(sites).await;
        if lost.is_empty() && crate::error::is_transport_error(error) {
            let deadline = Instant::now() + self.catalog.heartbeat_timeout();
            while lost.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                lost = self.lost_sites(sites).await;
            }
        }
        lost
    }

    /// The sites of a failed attempt that are gone: silent past the heartbeat timeout, or
    /// refusing connections. An error alone does not make a worker lost: a query error
    /// (a bad model, a bad file) is answered as it is, without a retry.
    async fn lost_sites(&self, sites: &[(String, Url)]) -> Vec<String> {
        let probes = sites.iter().map(|(site, url)| async move {
            let gone = !self.catalog.is_responsive(site) || !accepts_connections(url).await;
            gone.then(|| site.clone())
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The URL of `site` among an attempt's sites, for errors.
fn url_of(sites: &[(String, Url)], site: &str) -> String {
    sites
        .iter()
        .find(|(name, _)| name == site)
        .map_or_else(|| "address unknown".to_string(), |(_, url)| url.to_string())
}

/// Whether something listens at the worker's address (a killed worker's port refuses).
async fn accepts_connections(url: &Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

async fn next_batch(mut state: State) -> Option<(datafusion::error::Result<RecordBatch>, State)> {
    loop {
        if state.done {
            return None;
        }
        if state.running.is_none() {
            let sites = state.executor.catalog.live_sites();
            let planned = match state.first.take() {
                Some(planned) => Ok(planned),
                None => (state.replan)().await.map(Arc::new),
            };
            let started = planned.and_then(|planned| {
                let running = state.executor.start_attempt(&planned, sites)?;
                *state.attempts.last_plan.lock() = Some(planned);
                Ok(running)
            });
            match started {
                Ok(running) => state.running = Some(running),
                Err(e) => {
                    state.done = true;
                    return Some((Err(e.into_datafusion()), state));
                }
            }
        }
        let running = state.running.as_mut()?;
        // Biased to the stream: a ready batch always wins over the watchdog, so a caller
        // that paused reading never finds its statement declared stalled on return.
        let outcome = tokio::select! {
            biased;
            item = running.stream.next() => match item {
                Some(Ok(batch)) => {
                    running.delivered.fetch_add(1, Ordering::Relaxed);
                    state.delivered = true;
                    return Some((Ok(batch), state));
                }
                Some(Err(e)) => Err(e),
                None => {
                    state.done = true;
                    return None;
                }
            },
            fault = &mut running.watchdog => match fault {
                Fault::Silent(site) => Ok(site),
                Fault::Stalled(idle) => {
                    state.done = true;
                    state.running = None;
                    let error = crate::Error::Stalled {
                        seconds: idle.as_secs_f64(),
                        limit: state.executor.options.stall_timeout.as_secs_f64(),
                    };
                    return Some((Err(error.into_datafusion()), state));
                }
            },
        };
        let running = state.running.take()?;
        // Dropping the attempt cancels its tasks on every worker.
        let Running { stream, sites, .. } = running;
        drop(stream);
        let (error, lost) = match outcome {
            Ok(silent) => {
                let error = DataFusionError::External(Box::new(crate::Error::WorkerLost {
                    url: url_of(&sites, &silent),
                    worker: silent.clone(),
                    cause: format!(
                        "(no heartbeat for {} ms)",
                        state.executor.catalog.heartbeat_timeout().as_millis()
                    ),
                }));
                (error, vec![silent])
            }
            Err(error) => {
                let lost = state.executor.confirm_lost(&sites, &error).await;
                (error, lost)
            }
        };
        if lost.is_empty() {
            state.done = true;
            return Some((Err(error), state));
        }
        let noticed = Instant::now();
        for site in &lost {
            state.executor.catalog.mark_down(site);
            tracing::warn!(worker = %site, "worker lost mid-query: {error}");
        }
        state
            .attempts
            .lost
            .lock()
            .extend(lost.iter().map(|site| LostWorker {
                site: site.clone(),
                noticed,
            }));
        let retries = *state.attempts.retries.lock();
        if state.delivered || retries >= state.executor.options.task_retries {
            state.done = true;
            let why = if state.delivered {
                "after part of the result was already sent, so it cannot be re-run without \
                 repeating rows: run the statement again"
                    .to_string()
            } else {
                format!("and the {retries} re-run(s) allowed (--task-retries) are used up")
            };
            let error = DataFusionError::External(Box::new(crate::Error::WorkerLost {
                url: lost
                    .iter()
                    .map(|site| url_of(&sites, site))
                    .collect::<Vec<_>>()
                    .join(", "),
                worker: lost.join("', '"),
                cause: format!("{why}; last error: {error}"),
            }));
            return Some((Err(error), state));
        }
        *state.attempts.retries.lock() += 1;
    }
}

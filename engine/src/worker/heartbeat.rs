//! Heartbeats on their own OS thread with their own runtime. Why a thread of their own:
//! inference runs on the CPU pool, but the runtime thread whose stream asked for a batch to
//! be scored waits for it (DataFusion's `ScalarUDFImpl::invoke_with_args` is synchronous, so
//! the poll cannot return until the batch is scored; `block_in_place` only moves the
//! runtime's other tasks away). With every runtime thread waiting on inference for seconds,
//! a heartbeat that needed one of them would arrive late and the coordinator would declare a
//! busy worker dead. On this thread nothing else runs. Model prefetches are tasks on the
//! worker's runtime, owned by the beat loop (aborted when it stops).

use super::models::RemoteModels;
use super::{Coordinator, register, yielding_scan};
use crate::error::Error;
use crate::protocol::{ACTION_HEARTBEAT, Heartbeat, HeartbeatReply, SiteReport};

/// The site's report as last registered: the re-listing replaces it, the heartbeat
/// re-registers with it when the coordinator has forgotten the site.
pub type SharedReport = Arc<parking_lot::RwLock<SiteReport>>;
use crate::security::PeerPasses;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The running heartbeat thread; stops (and joins) on [`HeartbeatThread::stop`] or drop.
#[derive(Debug)]
pub struct HeartbeatThread {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeartbeatThread {
    /// Starts beating every `interval`. Model prefetches run on `main`, the worker's
    /// runtime, so a slow download never delays a beat.
    pub fn start(
        coordinator: Coordinator,
        report: SharedReport,
        models: Arc<RemoteModels>,
        passes: Arc<PeerPasses>,
        interval: Duration,
        main: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("heartbeat-{}", report.read().name))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!("heartbeat runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped.cancelled() => {}
                        _ = beat_forever(coordinator, report, models, passes, interval, main) => {}
                    }
                });
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HeartbeatThread {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn beat_forever(
    coordinator: Coordinator,
    report: SharedReport,
    models: Arc<RemoteModels>,
    passes: Arc<PeerPasses>,
    interval: Duration,
    main: tokio::runtime::Handle,
) {
    let prefetching = Arc::new(AtomicBool::new(false));
    // The prefetch running now, if any: dropped (aborted) when the beats stop.
    let mut running: Option<tokio_util::task::AbortOnDropHandle<()>> = None;
    let mut prefetch = |models: &Arc<RemoteModels>| {
        // One prefetch at a time; a beat that finds one running skips it.
        if !prefetching.swap(true, Ordering::AcqRel) {
            let models = models.clone();
            let prefetching = prefetching.clone();
            running = Some(crate::tasks::spawn_owned_on(&main, async move {
                models.prefetch().await;
                prefetching.store(false, Ordering::Release);
            }));
        }
    };
    prefetch(&models);
    let name = report.read().name.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let beat = Heartbeat {
            name: name.clone(),
            model_runs: shoal_operators::model_runs(),
            rows_scanned: yielding_scan::rows_scanned(),
            active_scans: yielding_scan::active_scans(),
        };
        let Ok(body) = serde_json::to_vec(&beat) else {
            continue;
        };
        // A beat must not outlive the next one: a coordinator that does not answer is
        // retried at the next tick rather than waited for.
        let reply = tokio::time::timeout(interval.max(Duration::from_millis(500)), async {
            coordinator.action(ACTION_HEARTBEAT, body).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::Refused {
                action: ACTION_HEARTBEAT.into(),
                message: "no answer before the next beat".into(),
            })
        });
        match reply.and_then(|r| {
            serde_json::from_slice::<HeartbeatReply>(&r).map_err(|e| Error::Refused {
                action: ACTION_HEARTBEAT.into(),
                message: e.to_string(),
            })
        }) {
            Ok(reply) if reply.known => {
                models.set_registry(reply.models);
                passes.set(reply.peers);
                prefetch(&models);
            }
            Ok(_) => {
                // The coordinator restarted and forgot us: register again.
                let current = report.read().clone();
                match register(&coordinator, &current).await {
                    Ok(reply) => passes.set(reply.peers),
                    Err(e) => tracing::warn!(worker = %name, "re-registering: {e}"),
                }
            }
            Err(e) => tracing::warn!(worker = %name, "heartbeat: {e}"),
        }
    }
}

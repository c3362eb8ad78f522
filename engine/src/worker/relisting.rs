//! New, changed and removed files are picked up without a restart: the worker describes
//! its data again every `--rescan-interval` (only new or changed files are read, see
//! [`Describer`]) and, when its tables changed, registers the new listing. The coordinator
//! swaps a site's listing whole, so a statement plans over one listing or the next, never
//! a mix. A listing that breaks the site's policy (a column it names is gone) is not
//! published: the site keeps serving its last good one and logs why.
//!
//! A commit of an `object_store` sink asks for a listing at once ([`RelistNow`]), so the
//! run it committed is a table of the site when the pipeline returns, not at the next tick.

use super::data_dir::Describer;
use super::heartbeat::SharedReport;
use super::site_data::SiteData;
use super::{Coordinator, check_policy_columns, register};
use shoal_planner::policy::SitePolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// How long a commit waits for the listing it asked for to be registered.
const RELIST_WAIT: Duration = Duration::from_secs(30);

/// Asks the re-listing task for a listing now.
#[derive(Debug, Clone)]
pub struct RelistNow {
    requests: mpsc::Sender<oneshot::Sender<()>>,
}

/// The re-listing task's end of [`RelistNow`].
#[derive(Debug)]
pub struct RelistRequests(mpsc::Receiver<oneshot::Sender<()>>);

/// A pair made before the worker serves (its actions ask), started with the task.
pub fn relist_channel() -> (RelistNow, RelistRequests) {
    let (requests, receiver) = mpsc::channel(8);
    (RelistNow { requests }, RelistRequests(receiver))
}

impl RelistNow {
    /// Lists the site's data again and waits until the coordinator has the new listing
    /// (bounded: a coordinator that is away gets it with the next heartbeat).
    pub async fn relist(&self) {
        let asked = async {
            let (done, listed) = oneshot::channel();
            if self.requests.send(done).await.is_ok() {
                let _ = listed.await;
            }
        };
        if tokio::time::timeout(RELIST_WAIT, asked).await.is_err() {
            tracing::warn!("the listing asked for after a commit took over {RELIST_WAIT:?}");
        }
    }
}

/// The running re-listing task; stops when dropped.
#[derive(Debug)]
pub struct Relisting {
    task: Option<AbortOnDropHandle<()>>,
}

pub struct RelistingSetup {
    pub data: SiteData,
    pub describer: Arc<Describer>,
    pub report: SharedReport,
    pub coordinator: Coordinator,
    pub policy: Arc<SitePolicy>,
    /// Zero: never by itself (only when a commit asks).
    pub interval: Duration,
    pub requests: RelistRequests,
}

impl Relisting {
    pub fn start(setup: RelistingSetup) -> Self {
        Self {
            task: Some(crate::tasks::spawn_owned(relist_forever(setup))),
        }
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn relist_forever(mut setup: RelistingSetup) {
    let name = setup.report.read().name.clone();
    let ticking = !setup.interval.is_zero();
    let mut ticker = tokio::time::interval(setup.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut asking = true;
    loop {
        let asked = tokio::select! {
            _ = ticker.tick(), if ticking => None,
            request = setup.requests.0.recv(), if asking => match request {
                Some(done) => Some(done),
                None => {
                    asking = false;
                    continue;
                }
            },
            else => return,
        };
        relist_once(&setup, &name).await;
        if let Some(done) = asked {
            let _ = done.send(());
        }
    }
}

/// Describes the data and registers the listing if it changed.
async fn relist_once(setup: &RelistingSetup, name: &str) {
    let tables = match setup.describer.describe(&setup.data).await {
        Ok(tables) => tables,
        Err(e) => {
            tracing::warn!(worker = %name, "re-listing {}: {e}", setup.data.location);
            return;
        }
    };
    if tables == setup.report.read().tables {
        return;
    }
    if let Err(e) = check_policy_columns(&setup.policy, &tables) {
        tracing::error!(worker = %name, "not publishing the new listing: {e}");
        return;
    }
    let report = {
        let mut report = setup.report.write();
        report.tables = tables;
        report.clone()
    };
    match register(&setup.coordinator, &report).await {
        Ok(_) => tracing::info!(
            worker = %name,
            "listing changed: {} table(s), {} file(s)",
            report.tables.len(),
            report.tables.iter().map(|t| t.files.len()).sum::<usize>()
        ),
        // The heartbeat registers the new listing when the coordinator is back.
        Err(e) => tracing::warn!(worker = %name, "registering the new listing: {e}"),
    }
}

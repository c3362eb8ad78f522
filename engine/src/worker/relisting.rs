//! New, changed and removed files are picked up without a restart: the worker describes
//! its data again every `--rescan-interval` (only new or changed files are read, see
//! [`Describer`]) and, when its tables changed, registers the new listing. The coordinator
//! swaps a site's listing whole, so a statement plans over one listing or the next, never
//! a mix. A listing that breaks the site's policy (a column it names is gone) is not
//! published: the site keeps serving its last good one and logs why.

use super::data_dir::Describer;
use super::heartbeat::SharedReport;
use super::site_data::SiteData;
use super::{Coordinator, check_policy_columns, register};
use shoal_planner::policy::SitePolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

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
    /// Zero: never (the listing at start stays).
    pub interval: Duration,
}

impl Relisting {
    pub fn start(setup: RelistingSetup) -> Self {
        if setup.interval.is_zero() {
            return Self { task: None };
        }
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

async fn relist_forever(setup: RelistingSetup) {
    let name = setup.report.read().name.clone();
    let mut ticker = tokio::time::interval(setup.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let tables = match setup.describer.describe(&setup.data).await {
            Ok(tables) => tables,
            Err(e) => {
                tracing::warn!(worker = %name, "re-listing {}: {e}", setup.data.location);
                continue;
            }
        };
        if tables == setup.report.read().tables {
            continue;
        }
        if let Err(e) = check_policy_columns(&setup.policy, &tables) {
            tracing::error!(worker = %name, "not publishing the new listing: {e}");
            continue;
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
}

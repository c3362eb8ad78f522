//! Worker-side record of the files this worker was asked to scan, and a guard that it is
//! never asked to scan another site's files.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion_distributed::{
    WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse, WorkerPlanRewriteHandler,
};
use parking_lot::Mutex;
use shoal_planner::locality::scan_site;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct ScanLedger {
    inner: std::sync::Arc<LedgerState>,
}

#[derive(Debug)]
struct LedgerState {
    site: String,
    /// File path (relative to the data folder) -> number of scan tasks that read it.
    scans: Mutex<BTreeMap<String, u64>>,
}

impl ScanLedger {
    pub fn new(site: String) -> Self {
        Self {
            inner: std::sync::Arc::new(LedgerState {
                site,
                scans: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.inner.scans.lock().clone()
    }

    /// The handler datafusion-distributed calls on every plan this worker decodes.
    pub fn handler(&self) -> LedgerHandler {
        LedgerHandler {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LedgerHandler {
    inner: std::sync::Arc<LedgerState>,
}

impl WorkerPlanRewriteHandler for LedgerHandler {
    fn rewrite_worker_plan(
        &self,
        ev: WorkerPlanRewriteEvent,
    ) -> Result<WorkerPlanRewriteEventResponse> {
        let mut seen = Vec::new();
        ev.plan.apply(|node| {
            if let Some((site, config)) = scan_site(node) {
                if site != self.inner.site {
                    return datafusion::common::exec_err!(
                        "worker '{}' was sent a scan of site '{site}' files; refusing to read data it does not hold",
                        self.inner.site
                    );
                }
                seen.extend(
                    config
                        .file_groups
                        .iter()
                        .flat_map(|g| g.files())
                        .map(|f| f.object_meta.location.to_string()),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let mut scans = self.inner.scans.lock();
        for file in seen {
            *scans.entry(file).or_default() += 1;
        }
        drop(scans);
        Ok(WorkerPlanRewriteEventResponse::new(
            super::yielding_scan::yield_after_each_batch(ev.plan)?,
        ))
    }
}

//! What each finished statement moved and did, kept for `shoal.query_report` (the most
//! recent statements only).

use super::PlannedQuery;
use super::resilient::Attempts;
use crate::coordinator::workers::WorkerCalls;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use shoal_operators::ShoalOptions;
use shoal_planner::QueryReport;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports kept: the most recent statements only.
const KEPT_REPORTS: usize = 256;

/// How long a finished statement waits for its workers' metrics before reporting without
/// them.
const METRICS_WAIT: Duration = Duration::from_secs(5);

/// A kept report: its statement's id, the principal that ran it (none for the
/// coordinator's own statements: training passes, pipeline outputs), the report.
type Kept = (String, Option<String>, QueryReport);

#[derive(Debug, Default)]
pub struct QueryReports {
    kept: Mutex<VecDeque<Kept>>,
    /// Asked what each site sent; none in unit tests.
    workers: Option<WorkerCalls>,
}

impl QueryReports {
    pub fn new(workers: WorkerCalls) -> Self {
        Self {
            kept: Mutex::default(),
            workers: Some(workers),
        }
    }

    pub fn keep(&self, query_id: String, owner: Option<&str>, report: QueryReport) {
        let mut kept = self.kept.lock();
        if kept.len() == KEPT_REPORTS {
            kept.pop_front();
        }
        kept.push_back((query_id, owner.map(str::to_string), report));
    }

    /// The report of `query_id` if `owner` ran it (any report for an admin).
    pub fn get(&self, query_id: &str, owner: &str, admin: bool) -> Option<QueryReport> {
        self.kept
            .lock()
            .iter()
            .rev()
            .find(|(id, by, _)| id == query_id && (admin || by.as_deref() == Some(owner)))
            .map(|(_, _, r)| r.clone())
    }

    /// The report of a statement that has finished streaming (of its last attempt, with
    /// the workers lost on the way); kept under `query_id`.
    pub async fn finish(
        &self,
        query_id: &str,
        owner: Option<&str>,
        attempts: &Attempts,
        rows: u64,
        started: Instant,
    ) -> QueryReport {
        let planned = attempts.last_plan.lock().clone();
        let mut report = match planned.as_deref() {
            Some(PlannedQuery::Plan { plan, task_ctx }) => {
                let mut report = read_report(query_id, plan.clone(), rows, started).await;
                if let Some(workers) = &self.workers {
                    let key = ShoalOptions::from_config(task_ctx.session_config().options())
                        .statement
                        .key;
                    if report.distributed {
                        let sites = workers.statement_at_sites(&key).await;
                        report.set_from_sites(
                            sites
                                .into_iter()
                                .map(|(site, said)| (site, said.sent, said.device_fallbacks)),
                        );
                    }
                    report.coverage = workers.coverage_of(&key);
                }
                report
            }
            _ => QueryReport {
                rows_returned: rows,
                elapsed_ms: started.elapsed().as_millis() as u64,
                ..Default::default()
            },
        };
        report.retries = *attempts.retries.lock();
        let lost = attempts.lost.lock();
        report.lost_workers = lost.iter().map(|l| l.site.clone()).collect();
        report.lost_at_ms = lost
            .iter()
            .map(|l| l.noticed.saturating_duration_since(started).as_millis() as u64)
            .collect();
        drop(lost);
        self.keep(query_id.to_string(), owner, report.clone());
        report
    }

    /// The report of an executed plan (waiting up to [`METRICS_WAIT`] for the workers'
    /// metrics); kept under `query_id`.
    pub async fn of_plan(
        &self,
        query_id: &str,
        plan: Arc<dyn ExecutionPlan>,
        rows: u64,
        started: Instant,
    ) -> QueryReport {
        let report = read_report(query_id, plan, rows, started).await;
        self.keep(query_id.to_string(), None, report.clone());
        report
    }
}

/// The report of an executed plan, waiting up to [`METRICS_WAIT`] for the workers' metrics
/// (without them when they do not come).
async fn read_report(
    query_id: &str,
    plan: Arc<dyn ExecutionPlan>,
    rows: u64,
    started: Instant,
) -> QueryReport {
    let reading = QueryReport::from_executed_plan(plan, rows, started.elapsed());
    match tokio::time::timeout(METRICS_WAIT, reading).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            tracing::warn!(query_id, "reading query metrics failed: {e}");
            QueryReport::default()
        }
        Err(_) => {
            tracing::warn!(
                query_id,
                "worker metrics did not arrive in {METRICS_WAIT:?}"
            );
            QueryReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_reports_are_kept() {
        let reports = QueryReports::default();
        for i in 0..=KEPT_REPORTS {
            reports.keep(format!("q{i}"), Some("ana"), QueryReport::default());
        }
        assert!(reports.get("q0", "ana", false).is_none());
        assert!(reports.get("q1", "ana", false).is_some());
        assert!(
            reports
                .get(&format!("q{KEPT_REPORTS}"), "ana", false)
                .is_some()
        );
    }

    #[test]
    fn a_report_is_its_owners_and_the_admins() {
        let reports = QueryReports::default();
        reports.keep("q1".into(), Some("ana"), QueryReport::default());
        reports.keep("q2".into(), None, QueryReport::default());
        assert!(reports.get("q1", "bo", false).is_none());
        assert!(reports.get("q1", "bo", true).is_some());
        assert!(reports.get("q2", "ana", false).is_none());
    }
}

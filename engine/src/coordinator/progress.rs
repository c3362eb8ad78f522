//! What the workers' heartbeats say they did: model runs and rows scanned, per worker.
//! The resilient executor reads rows scanned as progress (a statement that scans nothing
//! for too long is stalled); pipelines report it; `shoal sites` lists model runs.

use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct WorkerProgress {
    /// Model runs per worker since it started.
    model_runs: Mutex<HashMap<String, u64>>,
    /// Rows scanned per worker since it started.
    rows_scanned: Mutex<HashMap<String, u64>>,
}

impl WorkerProgress {
    /// Records one heartbeat's counters.
    pub fn note(&self, worker: &str, model_runs: u64, rows_scanned: u64) {
        self.model_runs
            .lock()
            .insert(worker.to_string(), model_runs);
        self.rows_scanned
            .lock()
            .insert(worker.to_string(), rows_scanned);
    }

    /// Rows scanned by every worker, as of their last heartbeats.
    pub fn rows_scanned_total(&self) -> u64 {
        self.rows_scanned.lock().values().sum()
    }

    pub fn model_runs_of(&self, worker: &str) -> u64 {
        self.model_runs.lock().get(worker).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_heartbeat_of_each_worker_counts() {
        let progress = WorkerProgress::default();
        progress.note("w1", 3, 100);
        progress.note("w2", 1, 50);
        progress.note("w1", 4, 120);
        assert_eq!(progress.rows_scanned_total(), 170);
        assert_eq!(progress.model_runs_of("w1"), 4);
        assert_eq!(progress.model_runs_of("w3"), 0);
    }
}

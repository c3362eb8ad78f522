//! Statements streaming now, so a client can cancel one by its ticket (CancelFlightInfo)
//! and operators can see what runs.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Query id -> (which fetch of it, its cancel). A client may fetch the same ticket twice; each
/// fetch forgets only its own entry.
type Cancels = Arc<Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>>;

#[derive(Debug, Default)]
pub struct RunningQueries {
    cancels: Cancels,
}

/// Held while a statement streams; dropping it (end of stream, error, client gone)
/// forgets the statement.
#[derive(Debug)]
pub struct Running {
    id: String,
    fetch: u64,
    cancels: Cancels,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut cancels = self.cancels.lock();
        if cancels
            .get(&self.id)
            .is_some_and(|(fetch, _)| *fetch == self.fetch)
        {
            cancels.remove(&self.id);
        }
    }
}

impl RunningQueries {
    /// Registers `id`; the receiver fires when someone cancels it.
    pub fn start(&self, id: &str) -> (Running, oneshot::Receiver<()>) {
        static FETCHES: AtomicU64 = AtomicU64::new(0);
        let fetch = FETCHES.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.cancels.lock().insert(id.to_string(), (fetch, tx));
        (
            Running {
                id: id.to_string(),
                fetch,
                cancels: self.cancels.clone(),
            },
            rx,
        )
    }

    /// Cancels `id`; false if it is not running (finished, or never started).
    pub fn cancel(&self, id: &str) -> bool {
        match self.cancels.lock().remove(id) {
            Some((_, tx)) => tx.send(()).is_ok(),
            None => false,
        }
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.cancels.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reaches_the_statement_and_finished_ones_are_forgotten() {
        let running = RunningQueries::default();
        let (guard, mut rx) = running.start("q1");
        assert_eq!(running.ids(), vec!["q1".to_string()]);
        assert!(running.cancel("q1"));
        assert!(rx.try_recv().is_ok());
        assert!(!running.cancel("q1"));
        drop(guard);
        let (guard, _rx) = running.start("q2");
        drop(guard);
        assert!(running.ids().is_empty());
        // The same ticket fetched twice: the first fetch ending leaves the second cancellable.
        let (first, _rx1) = running.start("q3");
        let (_second, mut rx2) = running.start("q3");
        drop(first);
        assert!(running.cancel("q3"));
        assert!(rx2.try_recv().is_ok());
    }
}

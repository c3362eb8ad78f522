//! Statements streaming now, so a client can cancel one by its ticket (CancelFlightInfo)
//! and operators can see what runs.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct RunningQueries {
    cancels: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

/// Held while a statement streams; dropping it (end of stream, error, client gone)
/// forgets the statement.
#[derive(Debug)]
pub struct Running {
    id: String,
    cancels: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.id);
    }
}

impl RunningQueries {
    /// Registers `id`; the receiver fires when someone cancels it.
    pub fn start(&self, id: &str) -> (Running, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.cancels.lock().insert(id.to_string(), tx);
        (
            Running {
                id: id.to_string(),
                cancels: self.cancels.clone(),
            },
            rx,
        )
    }

    /// Cancels `id`; false if it is not running (finished, or never started).
    pub fn cancel(&self, id: &str) -> bool {
        match self.cancels.lock().remove(id) {
            Some(tx) => tx.send(()).is_ok(),
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
    }
}

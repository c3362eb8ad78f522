//! Statements streaming now, each with the principal that started it: a client sees and
//! cancels only its own (an admin all of them), and runs at most
//! [`MAX_RUNNING_PER_OWNER`] at once (admins, trusted operators, are not counted).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Statements one principal may run at once; the next is refused naming the quota.
pub const MAX_RUNNING_PER_OWNER: usize = 16;

/// One fetch of a statement: a client may fetch the same ticket twice, and each fetch
/// forgets only its own entry.
#[derive(Debug)]
struct Entry {
    id: String,
    owner: String,
    cancel: oneshot::Sender<()>,
}

type Entries = Arc<Mutex<HashMap<u64, Entry>>>;

#[derive(Debug, Default)]
pub struct RunningQueries {
    entries: Entries,
}

/// Held while a statement streams; dropping it (end of stream, error, client gone)
/// forgets the statement.
#[derive(Debug)]
pub struct Running {
    fetch: u64,
    entries: Entries,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.entries.lock().remove(&self.fetch);
    }
}

/// Over the per-principal quota of running statements.
#[derive(Debug, thiserror::Error)]
#[error(
    "{owner} already runs {MAX_RUNNING_PER_OWNER} statements, the quota per client: wait for \
     one to finish or cancel one"
)]
pub struct TooManyRunning {
    pub owner: String,
}

impl RunningQueries {
    /// Registers statement `id` of `owner`, within the quota unless `admin`; the receiver
    /// fires when it is cancelled.
    pub fn start(
        &self,
        id: &str,
        owner: &str,
        admin: bool,
    ) -> Result<(Running, oneshot::Receiver<()>), TooManyRunning> {
        static FETCHES: AtomicU64 = AtomicU64::new(0);
        let mut entries = self.entries.lock();
        let running = entries.values().filter(|e| e.owner == owner).count();
        if !admin && running >= MAX_RUNNING_PER_OWNER {
            return Err(TooManyRunning {
                owner: owner.to_string(),
            });
        }
        let fetch = FETCHES.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        entries.insert(
            fetch,
            Entry {
                id: id.to_string(),
                owner: owner.to_string(),
                cancel: tx,
            },
        );
        let running = Running {
            fetch,
            entries: self.entries.clone(),
        };
        Ok((running, rx))
    }

    /// Cancels every fetch of statement `id` that `owner` started (any owner's when
    /// `admin`); false if none runs.
    pub fn cancel(&self, id: &str, owner: &str, admin: bool) -> bool {
        let mut entries = self.entries.lock();
        let fetches: Vec<u64> = entries
            .iter()
            .filter(|(_, e)| e.id == id && (admin || e.owner == owner))
            .map(|(fetch, _)| *fetch)
            .collect();
        let mut cancelled = false;
        for fetch in fetches {
            if let Some(entry) = entries.remove(&fetch) {
                cancelled |= entry.cancel.send(()).is_ok();
            }
        }
        cancelled
    }

    /// Ids of the statements `owner` runs (everyone's when `admin`).
    pub fn ids(&self, owner: &str, admin: bool) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entries
            .lock()
            .values()
            .filter(|e| admin || e.owner == owner)
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reaches_the_statement_and_finished_ones_are_forgotten() {
        let running = RunningQueries::default();
        let (guard, mut rx) = running.start("q1", "ana", false).unwrap();
        assert_eq!(running.ids("ana", false), vec!["q1".to_string()]);
        assert!(running.cancel("q1", "ana", false));
        assert!(rx.try_recv().is_ok());
        assert!(!running.cancel("q1", "ana", false));
        drop(guard);
        let (guard, _rx) = running.start("q2", "ana", false).unwrap();
        drop(guard);
        assert!(running.ids("ana", true).is_empty());
        // The same ticket fetched twice: the first fetch ending leaves the second cancellable.
        let (first, _rx1) = running.start("q3", "ana", false).unwrap();
        let (_second, mut rx2) = running.start("q3", "ana", false).unwrap();
        drop(first);
        assert!(running.cancel("q3", "ana", false));
        assert!(rx2.try_recv().is_ok());
    }

    #[test]
    fn clients_see_and_cancel_only_their_own_within_a_quota() {
        let running = RunningQueries::default();
        let (_ana, mut ana_rx) = running.start("q1", "ana", false).unwrap();
        let (_bo, _) = running.start("q2", "bo", false).unwrap();
        assert_eq!(running.ids("bo", false), vec!["q2".to_string()]);
        assert_eq!(running.ids("admin", true).len(), 2);
        assert!(!running.cancel("q1", "bo", false), "bo cannot cancel ana's");
        assert!(ana_rx.try_recv().is_err());
        assert!(running.cancel("q1", "admin", true));
        let held: Vec<_> = (1..MAX_RUNNING_PER_OWNER)
            .map(|i| running.start(&format!("b{i}"), "bo", false).unwrap())
            .collect();
        let err = running
            .start("one-more", "bo", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("quota"), "{err}");
        assert!(running.start("q9", "ana", false).is_ok());
        assert!(
            running.start("admin-work", "bo", true).is_ok(),
            "admins are not counted"
        );
        drop(held);
        assert!(running.start("one-more", "bo", false).is_ok());
    }
}

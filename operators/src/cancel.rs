//! Stopping work that holds a thread. DataFusion stops a statement by dropping its streams,
//! which works between batches; but some of shoal's work runs long inside one call (local
//! SGD over a site's rows, a tree ensemble or a model over a big batch) and cannot be
//! dropped mid-way. Such loops check a [`CancelToken`] at a bounded interval and stop with
//! an error when it fires.
//!
//! A token belongs to a statement, by the key the coordinator gives each planned statement
//! (`shoal.statement.key`, sent to the workers with every task, with the statement's
//! deadline `shoal.statement.deadline_ms`). It fires when:
//! - the statement's deadline passes (its timeout: checked by the loop itself);
//! - [`cancel`] is called with its key: the coordinator does so, and tells every worker to
//!   (`shoal.cancel`), when the statement's stream ends before its last batch (cancelled by
//!   the client, timed out, client gone);
//! - the process is stopping ([`shut_down`]: SIGTERM, Ctrl-C).

use datafusion::error::DataFusionError;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many loop iterations pass between checks in the hottest loops (a check reads two
/// atomics and the clock).
pub const CHECK_EVERY: usize = 256;

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Live tokens by statement key, and the keys cancelled recently (a cancel may arrive
/// before a task of the statement has made its token).
#[derive(Default)]
struct Registry {
    live: HashMap<String, Weak<State>>,
    cancelled: VecDeque<String>,
}

/// The longest statement key taken.
const MAX_KEY_BYTES: usize = 64;

/// Cancelled keys remembered for tokens made later.
const REMEMBERED: usize = 4096;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

#[derive(Debug)]
struct State {
    key: String,
    cancelled: AtomicBool,
    /// Milliseconds since the epoch; 0: none.
    deadline_ms: u64,
}

/// Why a token fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("the statement was cancelled")]
    Cancelled,
    #[error("the statement ran past its time limit (the coordinator's --query-timeout)")]
    DeadlinePassed,
    #[error("the process is shutting down")]
    ShuttingDown,
}

/// A statement's cancellation, as loops see it. Cheap to clone and to check.
#[derive(Debug, Clone)]
pub struct CancelToken(Arc<State>);

impl CancelToken {
    /// The token of statement `key` (shared by every task of it in this process), with the
    /// statement's deadline (ms since the epoch, 0 for none). An empty key gives a token
    /// of its own that fires only on the deadline or shutdown.
    pub fn for_statement(key: &str, deadline_ms: u64) -> Self {
        let fresh = || {
            Arc::new(State {
                key: key.to_string(),
                cancelled: AtomicBool::new(false),
                deadline_ms,
            })
        };
        if key.is_empty() {
            return Self(fresh());
        }
        let mut registry = REGISTRY.lock();
        if let Some(state) = registry.live.get(key).and_then(Weak::upgrade) {
            return Self(state);
        }
        let state = fresh();
        if registry.cancelled.iter().any(|k| k == key) {
            state.cancelled.store(true, Ordering::Relaxed);
        }
        registry.live.retain(|_, weak| weak.strong_count() > 0);
        registry
            .live
            .insert(key.to_string(), Arc::downgrade(&state));
        Self(state)
    }

    /// A token that fires only when the process shuts down.
    pub fn none() -> Self {
        Self::for_statement("", 0)
    }

    /// The statement's key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// Why the work must stop, if it must.
    pub fn stopped(&self) -> Option<Stopped> {
        if SHUTDOWN.load(Ordering::Relaxed) {
            return Some(Stopped::ShuttingDown);
        }
        if self.0.cancelled.load(Ordering::Relaxed) {
            return Some(Stopped::Cancelled);
        }
        let deadline = self.0.deadline_ms;
        if deadline > 0 && now_ms() > deadline {
            return Some(Stopped::DeadlinePassed);
        }
        None
    }

    /// `Err` naming `what` stopped when the token has fired (shoal's error type).
    pub fn stop_error(&self, what: &str) -> Result<(), crate::Error> {
        match self.stopped() {
            None => Ok(()),
            Some(reason) => Err(crate::Error::Stopped {
                what: what.to_string(),
                reason,
            }),
        }
    }

    /// `Err` naming `what` stopped when the token has fired.
    pub fn check(&self, what: &str) -> Result<(), DataFusionError> {
        self.stop_error(what)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// Work that cannot check a token itself (one ONNX Runtime run of a slow model) is
/// watched: while `work` runs, a watchdog thread calls `interrupt` once `stop` fires
/// (checked every [`WATCH_INTERVAL`]), e.g. to terminate the run.
pub fn watched<T>(
    stop: &CancelToken,
    interrupt: impl Fn() + Send + Sync + 'static,
    work: impl FnOnce() -> T,
) -> T {
    let id = WATCHED.register(stop.clone(), Box::new(interrupt));
    let out = work();
    WATCHED.remove(id);
    out
}

/// How often the watchdog looks at the watched work's tokens.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(50);

type Interrupt = Box<dyn Fn() + Send + Sync>;

/// The work being watched, and the one thread that watches it (started with the first).
struct Watched {
    entries: Mutex<HashMap<u64, (CancelToken, Interrupt)>>,
    next: std::sync::atomic::AtomicU64,
    started: std::sync::Once,
}

static WATCHED: LazyLock<Watched> = LazyLock::new(|| Watched {
    entries: Mutex::default(),
    next: std::sync::atomic::AtomicU64::new(0),
    started: std::sync::Once::new(),
});

impl Watched {
    fn register(&'static self, stop: CancelToken, interrupt: Interrupt) -> u64 {
        self.started.call_once(|| {
            // A plain thread: it must run while every runtime and pool thread is busy
            // with the very work it watches.
            let spawned = std::thread::Builder::new()
                .name("shoal-cancel-watch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(WATCH_INTERVAL);
                        let mut entries = self.entries.lock();
                        entries.retain(|_, (token, interrupt)| {
                            if token.stopped().is_some() {
                                interrupt();
                                return false;
                            }
                            true
                        });
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("no cancel watchdog ({e}): slow model runs stop only at the end");
            }
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().insert(id, (stop, interrupt));
        id
    }

    fn remove(&self, id: u64) {
        self.entries.lock().remove(&id);
    }
}

/// Fires the tokens of statement `key` in this process (and any made for it later);
/// whether a live one was there.
pub fn cancel(key: &str) -> bool {
    // Keys are the coordinator's ids (33 characters): anything longer is not one, and is
    // not remembered (a sender cannot grow the list of cancelled keys by their size).
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return false;
    }
    let mut registry = REGISTRY.lock();
    if registry.cancelled.len() == REMEMBERED {
        registry.cancelled.pop_front();
    }
    registry.cancelled.push_back(key.to_string());
    match registry.live.get(key).and_then(Weak::upgrade) {
        Some(state) => {
            state.cancelled.store(true, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// The process is stopping: every token fires.
pub fn shut_down() {
    SHUTDOWN.store(true, Ordering::Relaxed);
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The deadline `timeout` from now, in ms since the epoch.
pub fn deadline_after(timeout: Duration) -> u64 {
    now_ms().saturating_add(timeout.as_millis().min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_work_is_interrupted_when_its_token_fires() {
        let token = CancelToken::for_statement("k-test-watch", 0);
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        let started = std::time::Instant::now();
        watched(
            &token,
            move || flag.store(true, Ordering::Relaxed),
            || {
                cancel("k-test-watch");
                while !interrupted.load(Ordering::Relaxed) {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "never interrupted"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        );
    }

    #[test]
    fn a_token_fires_on_cancel_even_one_made_after_it_and_on_its_deadline() {
        let token = CancelToken::for_statement("k-test-1", 0);
        let same = CancelToken::for_statement("k-test-1", 0);
        assert!(token.check("x").is_ok());
        assert!(cancel("k-test-1"));
        assert_eq!(same.stopped(), Some(Stopped::Cancelled));
        let err = token.check("training").unwrap_err().to_string();
        assert!(
            err.contains("training") && err.contains("cancelled"),
            "{err}"
        );
        assert!(!cancel("k-test-2"));
        assert!(
            !cancel(&"k".repeat(MAX_KEY_BYTES + 1)),
            "an oversized key is ignored"
        );
        let late = CancelToken::for_statement("k-test-2", 0);
        assert_eq!(late.stopped(), Some(Stopped::Cancelled));
        let past = CancelToken::for_statement("", now_ms() - 1);
        assert_eq!(past.stopped(), Some(Stopped::DeadlinePassed));
        assert!(
            CancelToken::for_statement("", deadline_after(Duration::from_secs(60)))
                .stopped()
                .is_none()
        );
    }
}

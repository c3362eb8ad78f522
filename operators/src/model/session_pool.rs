//! One ONNX Runtime session per concurrency slot: `Session::run` takes `&mut self`, so
//! sessions are checked out, used by one batch, and returned.

use crate::error::{Error, Result};
use crate::runtime;
use ort::session::Session;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

#[derive(Debug)]
pub struct SessionPool {
    model: String,
    bytes: Arc<[u8]>,
    capacity: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Debug)]
struct PoolState {
    idle: Vec<Session>,
    created: usize,
}

impl SessionPool {
    /// `first` is the session the model was validated with; it becomes the first slot.
    pub fn new(model: &str, bytes: Arc<[u8]>, first: Session, capacity: usize) -> Self {
        Self {
            model: model.to_string(),
            bytes,
            capacity: capacity.max(1),
            state: Mutex::new(PoolState {
                idle: vec![first],
                created: 1,
            }),
            returned: Condvar::new(),
        }
    }

    pub fn build_session(model: &str, bytes: &[u8]) -> Result<Session> {
        let env = runtime::environment()?;
        let invalid = |e: ort::Error| Error::InvalidModel {
            name: model.to_string(),
            origin: "ONNX Runtime".into(),
            message: e.to_string(),
        };
        // Parallelism comes from running one batch per slot concurrently, not from threads
        // inside a session: one intra-op thread per session keeps the core count honest.
        Session::builder(env)
            .map_err(invalid)?
            .with_intra_threads(1)
            .map_err(|e| invalid(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| invalid(e.into()))?
            .commit_from_memory(bytes)
            .map_err(invalid)
    }

    /// Runs `f` with exclusive use of one session, creating one if fewer than `capacity`
    /// exist, else waiting for one to be returned.
    pub fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let mut session = self.checkout()?;
        let out = f(&mut session);
        self.state.lock().idle.push(session);
        self.returned.notify_one();
        out
    }

    fn checkout(&self) -> Result<Session> {
        let mut state = self.state.lock();
        loop {
            if let Some(s) = state.idle.pop() {
                return Ok(s);
            }
            if state.created < self.capacity {
                state.created += 1;
                drop(state);
                return Self::build_session(&self.model, &self.bytes).inspect_err(|_| {
                    self.state.lock().created -= 1;
                });
            }
            self.returned.wait(&mut state);
        }
    }
}

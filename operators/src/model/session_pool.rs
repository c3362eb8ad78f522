//! One ONNX Runtime session per concurrency slot: `Session::run` takes `&mut self`, so
//! sessions are checked out, used by one batch, and returned.
//!
//! Each session is counted in the process's memory pool when it is built (ONNX Runtime
//! does not report its own use: [`SESSION_MEMORY_FACTOR`] times the model's size is the
//! estimate for its optimised graph and buffers). A session the pool cannot hold beside
//! everything else is not built: the batch waits for one of the sessions that exist, so a
//! model uses fewer slots under memory pressure instead of failing. Only the first session,
//! without which the model cannot run at all, is an error when it does not fit.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::runtime;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use ort::session::Session;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// A session's memory, as a multiple of its model's size (an estimate: the optimised graph,
/// its initialisers and the buffers of a run).
pub const SESSION_MEMORY_FACTOR: usize = 2;

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
    /// The sessions' memory in the process's pool (None: no pool, nothing counted).
    memory: Option<MemoryReservation>,
}

impl SessionPool {
    /// `first` is the session the model was validated with; it becomes the first slot.
    /// With `memory`, every session built is counted there; the first not fitting is
    /// [`Error::ModelTooLarge`].
    pub fn new(
        model: &str,
        bytes: Arc<[u8]>,
        first: Session,
        capacity: usize,
        memory: Option<&Arc<dyn MemoryPool>>,
    ) -> Result<Self> {
        let session_bytes = bytes.len() * SESSION_MEMORY_FACTOR;
        let memory = match memory {
            Some(pool) => {
                let reservation =
                    MemoryConsumer::new(format!("model '{model}' sessions")).register(pool);
                reservation
                    .try_grow(session_bytes)
                    .map_err(|e| Error::model_too_large(model, session_bytes, pool.as_ref(), e))?;
                Some(reservation)
            }
            None => None,
        };
        Ok(Self {
            model: model.to_string(),
            bytes,
            capacity: capacity.max(1),
            state: Mutex::new(PoolState {
                idle: vec![first],
                created: 1,
                memory,
            }),
            returned: Condvar::new(),
        })
    }

    /// Sessions built so far, and the bytes they are counted as.
    pub fn sessions_built(&self) -> (usize, usize) {
        let state = self.state.lock();
        (
            state.created,
            state.memory.as_ref().map_or(0, MemoryReservation::size),
        )
    }

    pub fn build_session(model: &str, bytes: &[u8]) -> Result<Session> {
        Self::build_session_on(model, bytes, Device::Cpu, None)
    }

    /// A session of `bytes` on `device`. On a GPU the CUDA provider is registered so that
    /// failing to register it is an error naming CUDA and the reason (never a quiet CPU
    /// session), with its memory arena capped at `arena_limit` bytes when given.
    pub fn build_session_on(
        model: &str,
        bytes: &[u8],
        device: Device,
        arena_limit: Option<usize>,
    ) -> Result<Session> {
        let env = runtime::environment()?;
        let invalid = |e: ort::Error| Error::InvalidModel {
            name: model.to_string(),
            origin: "ONNX Runtime".into(),
            message: e.to_string(),
        };
        // Parallelism comes from running one batch per slot concurrently, not from threads
        // inside a session: one intra-op thread per session keeps the core count honest.
        let builder = Session::builder(env)
            .map_err(invalid)?
            .with_intra_threads(1)
            .map_err(|e| invalid(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| invalid(e.into()))?;
        let mut builder = match device {
            Device::Cpu => builder,
            Device::Cuda(index) => {
                let unavailable = |e: ort::Error| Error::DeviceUnavailable {
                    device: device.to_string(),
                    reason: format!("CUDA provider not available: {e}"),
                };
                crate::device::cuda::provider_ready().map_err(|reason| {
                    Error::DeviceUnavailable {
                        device: device.to_string(),
                        reason,
                    }
                })?;
                let mut cuda = ort::ep::CUDA::default()
                    .with_device_id(index as i32)
                    .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
                if let Some(limit) = arena_limit {
                    cuda = cuda.with_memory_limit(limit);
                }
                builder
                    .with_execution_providers([cuda.build().error_on_failure()])
                    .map_err(|e| unavailable(e.into()))?
            }
        };
        builder.commit_from_memory(bytes).map_err(|e| match device {
            Device::Cpu => invalid(e),
            Device::Cuda(_) => crate::device::slots::device_error(model, device, arena_limit, e),
        })
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
            let session_bytes = self.bytes.len() * SESSION_MEMORY_FACTOR;
            let fits = |state: &PoolState| {
                state
                    .memory
                    .as_ref()
                    .is_none_or(|m| m.try_grow(session_bytes).is_ok())
            };
            if state.created < self.capacity && fits(&state) {
                state.created += 1;
                drop(state);
                return Self::build_session(&self.model, &self.bytes).inspect_err(|_| {
                    let mut state = self.state.lock();
                    state.created -= 1;
                    if let Some(m) = &state.memory {
                        m.shrink(session_bytes);
                    }
                });
            }
            self.returned.wait(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    fn model_bytes() -> Arc<[u8]> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/models/return_risk.onnx"
        ))
        .unwrap()
        .into()
    }

    /// Every session is counted when built; a pool with room for two makes a model of four
    /// slots run on two (four threads all get their answer), and a pool without room for
    /// one refuses the model naming it.
    #[test]
    fn sessions_are_counted_as_built_and_memory_bounds_how_many() {
        let bytes = model_bytes();
        let per_session = bytes.len() * SESSION_MEMORY_FACTOR;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(2 * per_session + 10));
        let first = SessionPool::build_session("return_risk", &bytes).unwrap();
        let sessions = Arc::new(
            SessionPool::new("return_risk", bytes.clone(), first, 4, Some(&pool)).unwrap(),
        );
        assert_eq!(sessions.sessions_built(), (1, per_session));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sessions = sessions.clone();
                std::thread::spawn(move || {
                    sessions
                        .with_session(|_| {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            Ok(())
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sessions.sessions_built(), (2, 2 * per_session));
        assert_eq!(pool.reserved(), 2 * per_session);
        drop(sessions);
        assert_eq!(
            pool.reserved(),
            0,
            "dropping the model frees its sessions' memory"
        );

        let small: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(per_session / 2));
        let first = SessionPool::build_session("return_risk", &bytes).unwrap();
        let err = SessionPool::new("return_risk", bytes, first, 4, Some(&small))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model 'return_risk'") && err.contains("memory limit"),
            "{err}"
        );
    }
}

//! A device's streams: at most `streams` ONNX Runtime sessions live on one device at a time,
//! across every model, each with its memory arena capped at the device's limit divided by
//! the streams. A batch takes an idle session of its model, or builds one while fewer than
//! `streams` exist, or evicts the least recently used idle session of another model; else
//! it waits (checking its statement's cancellation) instead of overcommitting the device.
//!
//! Feature work for the next batch runs on the CPU pool while this one runs on the device:
//! the CPU pool has a thread per core and a device only `streams` runs, so the other
//! threads stack features (and wait here) meanwhile.

use super::Device;
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::model::{LoadedModel, SessionPool};
use ort::session::Session;
use parking_lot::{Condvar, Mutex};
use std::time::Duration;

/// How often a waiting batch looks at its statement's cancellation.
const WAIT_STEP: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct DeviceSlots {
    device: Device,
    streams: usize,
    /// Each session's arena cap (the device's `--gpu-memory-limit` / streams).
    arena_limit: Option<usize>,
    state: Mutex<SlotsState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct SlotsState {
    idle: Vec<IdleSession>,
    in_use: usize,
    /// Batches waiting for a stream now, and the most there ever were running at once.
    waiting: usize,
    peak_in_use: usize,
    /// Sessions built and evicted since start.
    built: u64,
    evicted: u64,
    clock: u64,
}

#[derive(Debug)]
struct IdleSession {
    /// The model's content hash: a new version is a different model.
    model: String,
    session: Session,
    last_used: u64,
}

/// What a device's slots have done: for tests and the operator's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotsUse {
    pub in_use: usize,
    pub waiting: usize,
    pub peak_in_use: usize,
    pub sessions: usize,
    pub built: u64,
    pub evicted: u64,
}

impl DeviceSlots {
    /// `memory_limit`: bytes the device's sessions may hold together (None: ONNX Runtime's
    /// default, the whole device).
    pub fn new(device: Device, streams: usize, memory_limit: Option<usize>) -> Self {
        let streams = streams.max(1);
        Self {
            device,
            streams,
            arena_limit: memory_limit.map(|limit| limit / streams),
            state: Mutex::new(SlotsState::default()),
            freed: Condvar::new(),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn usage(&self) -> SlotsUse {
        let state = self.state.lock();
        SlotsUse {
            in_use: state.in_use,
            waiting: state.waiting,
            peak_in_use: state.peak_in_use,
            sessions: state.in_use + state.idle.len(),
            built: state.built,
            evicted: state.evicted,
        }
    }

    /// Runs `f` with a session of `model` on this device, waiting for a stream.
    pub fn run<T>(
        &self,
        model: &LoadedModel,
        stop: &CancelToken,
        f: impl FnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let mut session = self.acquire(model, stop)?;
        let out = f(&mut session);
        let mut state = self.state.lock();
        state.in_use -= 1;
        state.clock += 1;
        let last_used = state.clock;
        state.idle.push(IdleSession {
            model: model.hash.clone(),
            session,
            last_used,
        });
        drop(state);
        self.freed.notify_all();
        out.map_err(|e| match e {
            Error::Inference { message, .. } if is_out_of_memory(&message) => {
                self.out_of_memory(&model.name, &message)
            }
            other => other,
        })
    }

    fn acquire(&self, model: &LoadedModel, stop: &CancelToken) -> Result<Session> {
        let mut state = self.state.lock();
        let mut counted_waiting = false;
        let outcome = loop {
            if let Some(i) = state.idle.iter().position(|s| s.model == model.hash) {
                break Ok(Some(state.idle.swap_remove(i).session));
            }
            let live = state.in_use + state.idle.len();
            if live >= self.streams && !state.idle.is_empty() {
                // The least recently used idle session of another model makes room.
                if let Some(lru) = (0..state.idle.len()).min_by_key(|i| state.idle[*i].last_used) {
                    drop(state.idle.swap_remove(lru));
                    state.evicted += 1;
                    continue;
                }
            }
            if live < self.streams {
                break Ok(None);
            }
            if !counted_waiting {
                state.waiting += 1;
                counted_waiting = true;
            }
            if let Err(e) = stop.stop_error(&format!(
                "model '{}' waiting for {}",
                model.name, self.device
            )) {
                break Err(e);
            }
            self.freed.wait_for(&mut state, WAIT_STEP);
        };
        if counted_waiting {
            state.waiting -= 1;
        }
        let reused = outcome?;
        state.in_use += 1;
        state.peak_in_use = state.peak_in_use.max(state.in_use);
        if let Some(session) = reused {
            return Ok(session);
        }
        state.built += 1;
        drop(state);
        SessionPool::build_session_on(&model.name, &model.bytes, self.device, self.arena_limit)
            .inspect_err(|_| {
                self.state.lock().in_use -= 1;
                self.freed.notify_all();
            })
    }

    fn out_of_memory(&self, model: &str, message: &str) -> Error {
        Error::DeviceOutOfMemory {
            model: model.to_string(),
            device: self.device.to_string(),
            limit: limit_words(self.arena_limit),
            message: message.to_string(),
        }
    }
}

fn limit_words(arena_limit: Option<usize>) -> String {
    match arena_limit {
        Some(bytes) => format!("{bytes} bytes per session (--gpu-memory-limit / --gpu-streams)"),
        None => "no limit set (--gpu-memory-limit)".into(),
    }
}

/// ONNX Runtime's words for a device allocation that failed.
fn is_out_of_memory(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("out of memory")
        || lower.contains("failed to allocate memory")
        || lower.contains("cudaerrormemoryallocation")
}

/// The error for a session that could not be built on a device: out of memory names the
/// model, device and limit; anything else is the device being unusable, with ORT's words.
pub fn device_error(
    model: &str,
    device: Device,
    arena_limit: Option<usize>,
    e: ort::Error,
) -> Error {
    let message = e.to_string();
    if is_out_of_memory(&message) {
        Error::DeviceOutOfMemory {
            model: model.to_string(),
            device: device.to_string(),
            limit: limit_words(arena_limit),
            message,
        }
    } else {
        Error::DeviceUnavailable {
            device: device.to_string(),
            reason: format!("building model '{model}''s session: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn model(name: &str) -> Arc<LoadedModel> {
        let models = crate::model::DirectoryModels::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/models"
        )))
        .unwrap();
        use crate::ModelProvider;
        models.model(name, None).unwrap()
    }

    /// A deliberately slow model run (each holds its session 150 ms) from six threads on a
    /// device of two streams: never more than two at once, the others wait, and every run
    /// gets its answer.
    #[test]
    fn batches_wait_for_a_stream_and_never_exceed_the_device() {
        let slots = Arc::new(DeviceSlots::new(Device::Cpu, 2, None));
        let risk = model("return_risk");
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (slots, risk, running, most) =
                    (slots.clone(), risk.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    slots
                        .run(&risk, &CancelToken::none(), |_session| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(150));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(60));
        assert!(slots.usage().waiting >= 3, "{:?}", slots.usage());
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        let usage = slots.usage();
        assert_eq!((usage.peak_in_use, usage.sessions, usage.built), (2, 2, 2));
        assert_eq!((usage.in_use, usage.waiting), (0, 0));
    }

    /// A device of one stream: a second model evicts the first's idle session; a waiting
    /// batch whose statement is cancelled stops waiting with a cancellation.
    #[test]
    fn the_least_recently_used_session_makes_room_and_waiting_can_be_cancelled() {
        let slots = Arc::new(DeviceSlots::new(Device::Cpu, 1, Some(64 << 20)));
        let (risk, other) = (model("return_risk"), model("price"));
        slots.run(&risk, &CancelToken::none(), |_| Ok(())).unwrap();
        slots.run(&other, &CancelToken::none(), |_| Ok(())).unwrap();
        let usage = slots.usage();
        assert_eq!((usage.sessions, usage.built, usage.evicted), (1, 2, 1));

        let holder = {
            let (slots, risk) = (slots.clone(), risk.clone());
            std::thread::spawn(move || {
                slots.run(&risk, &CancelToken::none(), |_| {
                    std::thread::sleep(Duration::from_millis(400));
                    Ok(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let key = "slots-test-cancel";
        let stop = CancelToken::for_statement(key, 0);
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            crate::cancel::cancel(key);
        });
        let err = slots.run(&other, &stop, |_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::Stopped { .. }), "{err}");
        assert!(err.to_string().contains("waiting for cpu"), "{err}");
        canceller.join().unwrap();
        holder.join().unwrap().unwrap();
        assert_eq!(slots.usage().in_use, 0);
    }

    #[test]
    fn out_of_memory_names_the_model_device_and_limit() {
        let slots = DeviceSlots::new(Device::Cuda(0), 2, Some(1 << 30));
        let err = slots
            .out_of_memory("resnet", "CUDA failure 2: out of memory ; GPU=0")
            .to_string();
        assert!(
            err.contains("'resnet'") && err.contains("cuda:0") && err.contains("536870912 bytes"),
            "{err}"
        );
        assert!(is_out_of_memory(
            "Failed to allocate memory for requested buffer of size 4096"
        ));
        assert!(!is_out_of_memory("Invalid input name: x"));
    }
}

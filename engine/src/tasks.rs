//! The only place the engine starts a tokio task. Every task is owned: the handle aborts it
//! when dropped, so nothing outlives the component that started it (DataFusion's rule: no
//! bare `tokio::spawn`, which `clippy.toml` enforces).

use tokio_util::task::AbortOnDropHandle;

/// Runs `future` on the current runtime until it finishes or the handle is dropped.
#[allow(clippy::disallowed_methods)] // the one owned wrapper around tokio's spawn
pub fn spawn_owned<F>(future: F) -> AbortOnDropHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(tokio::task::spawn(future))
}

/// As [`spawn_owned`], on `runtime` (a thread with a runtime of its own handing work to the
/// main one).
#[allow(clippy::disallowed_methods)] // the one owned wrapper around tokio's spawn
pub fn spawn_owned_on<F>(
    runtime: &tokio::runtime::Handle,
    future: F,
) -> AbortOnDropHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(runtime.spawn(future))
}

/// Runs `future`, which may hold its thread for long (planning a large statement: DataFusion
/// names, simplifies and optimises expressions synchronously), without starving the tasks
/// queued behind it on a runtime thread (heartbeats, other clients): on a multi-threaded
/// runtime the thread hands its queue to another and becomes a blocking thread for the
/// duration. Callers bound how many run at once ([`PlanningGate`]).
pub async fn off_runtime_threads<F: Future>(future: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| Handle::current().block_on(future))
        }
        // A single-threaded runtime (a test's) has no other thread to hand work to.
        _ => future.await,
    }
}

/// At most so many statements plan at once, each off the runtime's threads; the others
/// wait their turn without holding a thread.
#[derive(Debug)]
pub struct PlanningGate {
    permits: tokio::sync::Semaphore,
}

impl PlanningGate {
    /// One statement planning per core.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: tokio::sync::Semaphore::new(cores),
        }
    }

    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        // The semaphore is never closed, so acquiring cannot fail; if it did, planning
        // without a permit is still correct.
        let _permit = self.permits.acquire().await.ok();
        off_runtime_threads(future).await
    }
}

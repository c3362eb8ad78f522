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

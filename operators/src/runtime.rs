//! Where ONNX Runtime comes from, and the CPU pool inference runs on.
//!
//! shoal uses `ort` with `load-dynamic`: nothing is downloaded at build time. The shared
//! library is the one inside the `onnxruntime` wheel from PyPI, which `make setup` copies to
//! `.shoal/onnxruntime/` in the repository. `ORT_DYLIB_PATH` overrides the lookup.

use crate::config::{InferenceOptions, ShoalOptions};
use crate::error::{Error, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Folder, relative to the repository root, that `make setup` fills with the library.
pub const LOCAL_RUNTIME_DIR: &str = ".shoal/onnxruntime";

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
static CPU_POOL: OnceLock<std::result::Result<rayon::ThreadPool, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the shared library on first use.
pub fn environment() -> Result<&'static Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = find_library().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| {
            Error::RuntimeInit {
                path: path.clone(),
                message: e.to_string(),
            }
            .to_string()
        })?;
        builder.with_name("shoal").build().map_err(|e| {
            Error::RuntimeInit {
                path,
                message: e.to_string(),
            }
            .to_string()
        })
    });
    env.as_ref().map_err(|message| Error::RuntimeUnavailable {
        message: message.clone(),
    })
}

/// Locates `libonnxruntime.so*`: `ORT_DYLIB_PATH`, else `.shoal/onnxruntime/` next to the
/// executable or in the checkout this crate was built from (where `make setup` writes it).
/// Never the working directory or its ancestors: on a shared host anyone may create a
/// `.shoal/onnxruntime/` in a parent folder (the shared temp folder), and a library found
/// there would run its code inside shoal. A library, or a folder holding it, that others
/// may write is refused for the same reason.
pub fn find_library() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        if path.is_file() {
            check_not_writable_by_others(&path)?;
            return Ok(path);
        }
        return Err(Error::RuntimeLibraryNotFound {
            tried: format!("ORT_DYLIB_PATH={} (no such file)", path.display()),
        });
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push(dir);
    }
    // The checkout this crate was built from (the workspace root): lets tests, `cargo run`
    // and the binaries under target/ find the library from any working directory.
    if let Some(checkout) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        roots.push(checkout.to_path_buf());
    }
    let mut tried = Vec::new();
    for root in roots {
        let dir = root.join(LOCAL_RUNTIME_DIR);
        if tried.contains(&dir) {
            continue;
        }
        if let Some(lib) = library_in(&dir) {
            check_not_writable_by_others(&lib)?;
            return Ok(lib);
        }
        tried.push(dir);
    }
    Err(Error::RuntimeLibraryNotFound {
        tried: tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Refuses `library` if it, or the folders it is in, can be written by users other than
/// its owner (group or world write, without the sticky bit that stops others replacing it).
fn check_not_writable_by_others(library: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let unsafe_path = |path: &Path, why: &str| Error::RuntimeLibraryUnsafe {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let file_mode = std::fs::metadata(library)
        .map_err(|e| unsafe_path(library, &e.to_string()))?
        .permissions()
        .mode();
    if file_mode & 0o022 != 0 {
        return Err(unsafe_path(library, "it is writable by other users"));
    }
    for dir in library.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_path(
                library,
                &format!("its folder {} is writable by other users", dir.display()),
            ));
        }
    }
    Ok(())
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the most specific (versioned) name: the wheel ships only `.so.1.x.y`.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// The process's memory pool (the worker's or the coordinator's), for the memory shoal's
/// kernels build outside DataFusion's operators. The first pool set wins (an embedded
/// cluster runs several in one process).
static MEMORY_POOL: OnceLock<Arc<dyn MemoryPool>> = OnceLock::new();

pub fn set_memory_pool(pool: Arc<dyn MemoryPool>) {
    let _ = MEMORY_POOL.set(pool);
}

/// The process's memory pool, when one was set.
pub fn memory_pool() -> Option<&'static Arc<dyn MemoryPool>> {
    MEMORY_POOL.get()
}

/// Reserves `bytes` for `what` in the process's pool, while the caller builds them: an
/// allocation the pool cannot hold beside everything else running is an error naming
/// `what` and the pool's limit, before anything is allocated. `None` without a pool.
pub fn reserve(what: &str, bytes: usize) -> datafusion::common::Result<Option<MemoryReservation>> {
    let Some(pool) = MEMORY_POOL.get() else {
        return Ok(None);
    };
    let reservation = MemoryConsumer::new(what).register(pool);
    reservation.try_grow(bytes)?;
    Ok(Some(reservation))
}

static INFERENCE: OnceLock<InferenceOptions> = OnceLock::new();

/// Sets this process's `shoal.inference.*` settings (from the command line), before any
/// model runs; a second call, or one after the inference pool started, changes nothing
/// and says so.
pub fn configure(options: InferenceOptions) -> std::result::Result<(), InferenceOptions> {
    INFERENCE.set(options)
}

/// This process's `shoal.inference.*` settings: as configured, or the defaults.
pub fn inference_options() -> InferenceOptions {
    // Fixed once read: the pool and every session see the same settings.
    INFERENCE
        .get_or_init(|| ShoalOptions::default().inference)
        .clone()
}

/// The `shoal.*` settings a new session of this process starts with.
pub fn session_options() -> ShoalOptions {
    ShoalOptions {
        inference: inference_options(),
        ..ShoalOptions::default()
    }
}

/// Number of inference slots: concurrent model runs, each with its own session
/// (`shoal.inference.slots`; 0 means one per core).
pub fn inference_slots() -> usize {
    match inference_options().slots {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    }
}

/// Runs CPU-heavy work (feature stacking, inference) on the inference pool, never on an IO
/// runtime thread. On a multi-threaded tokio runtime the calling worker thread is handed
/// off with `block_in_place`, so heartbeats and network streams keep being served meanwhile.
pub fn run_on_cpu_pool<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T> {
    let pool = CPU_POOL
        .get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(inference_slots())
                .thread_name(|i| format!("shoal-infer-{i}"))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::InferencePool { message: e.clone() })?;
    let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_multi_thread_runtime {
        Ok(tokio::task::block_in_place(|| pool.install(work)))
    } else {
        Ok(pool.install(work))
    }
}

#[cfg(test)]
mod library_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_library_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so.1");
        std::fs::write(&lib, b"not really").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_not_writable_by_others(&lib).is_ok());
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = check_not_writable_by_others(&lib).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_not_writable_by_others(&lib).unwrap_err().to_string();
        assert!(err.contains("its folder"), "{err}");
    }
}

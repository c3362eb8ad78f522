//! NVIDIA GPUs through ONNX Runtime's CUDA execution provider: which GPUs this machine has,
//! whether each can be used, and the libraries the provider needs.
//!
//! The CUDA provider is part of the `onnxruntime-gpu` wheel (`SHOAL_GPU=1 make setup`, or
//! automatically on a machine with an NVIDIA GPU): its `libonnxruntime_providers_cuda.so`
//! sits next to `libonnxruntime.so`, and the CUDA and cuDNN libraries come from NVIDIA's
//! PyPI wheels. Those are not on the loader's path (a known ONNX Runtime problem with pip
//! installs), so set-up links them into `cuda/` next to the library, and [`preload`] loads
//! them, in dependency order, before the first CUDA session: the provider's own `dlopen`
//! then finds them already loaded.

use crate::runtime;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Folder beside `libonnxruntime.so` that set-up fills with links to the CUDA libraries.
pub const LIBRARY_FOLDER: &str = "cuda";

/// CUDA indices of the NVIDIA GPUs this process can see: one per `/dev/nvidiaN`, limited
/// by `CUDA_VISIBLE_DEVICES` the way CUDA applies it.
pub fn detect() -> Vec<u32> {
    gpus_in(
        Path::new("/dev"),
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    )
}

fn gpus_in(dev: &Path, visible: Option<&str>) -> Vec<u32> {
    let present = std::fs::read_dir(dev)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name().to_str().is_some_and(|name| {
                        name.strip_prefix("nvidia")
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
                })
                .count()
        })
        .unwrap_or(0);
    // CUDA reads the list up to its first invalid entry ("-1" hides every GPU).
    let count = match visible {
        None => present,
        Some(list) => list
            .split(',')
            .map(str::trim)
            .take_while(|entry| !entry.is_empty() && !entry.starts_with('-'))
            .count()
            .min(present),
    };
    (0..count as u32).collect()
}

/// Why this machine has no GPU to offer, in words an operator can act on.
pub fn why_none() -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let present = gpus_in(Path::new("/dev"), None).len();
    match (present, visible) {
        (0, _) if Path::new("/proc/driver/nvidia").exists() => {
            "the NVIDIA driver is loaded but no GPU device file /dev/nvidiaN exists".into()
        }
        (0, _) => "no NVIDIA GPU on this machine (no /dev/nvidia0, and no NVIDIA driver: \
                   /proc/driver/nvidia is absent)"
            .into(),
        (n, Some(list)) => {
            format!("CUDA_VISIBLE_DEVICES='{list}' hides this machine's {n} GPU(s)")
        }
        (n, None) => format!("this machine has {n} GPU(s)"),
    }
}

/// Checks that `index` can run models: the GPU is there, the loaded ONNX Runtime has the
/// CUDA provider, its libraries load, and a one-node model runs on it. `Err` says which
/// of these failed and why, naming CUDA.
pub fn check(index: u32) -> Result<(), String> {
    let gpus = detect();
    if !gpus.contains(&index) {
        let why = if gpus.is_empty() {
            why_none()
        } else {
            format!(
                "this machine has {} GPU(s), cuda:0 to cuda:{}",
                gpus.len(),
                gpus.len() - 1
            )
        };
        return Err(format!("cannot use CUDA device cuda:{index}: {why}"));
    }
    provider_ready().map_err(|why| format!("cannot use CUDA device cuda:{index}: {why}"))?;
    probe(index).map_err(|why| format!("cannot use CUDA device cuda:{index}: {why}"))
}

/// Whether the loaded ONNX Runtime can make CUDA sessions at all: it is the GPU build and
/// the CUDA libraries load. Checked once per process.
pub fn provider_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            runtime::environment().map_err(|e| e.to_string())?;
            let library = runtime::find_library().map_err(|e| e.to_string())?;
            let built_in = <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available()
                .map_err(|e| format!("asking ONNX Runtime for its providers: {e}"))?;
            if !built_in {
                return Err(format!(
                    "CUDA provider not available: the ONNX Runtime library {} is the CPU build \
                     (install the onnxruntime-gpu wheel with `SHOAL_GPU=1 make setup`)",
                    library.display()
                ));
            }
            preload(&library)
        })
        .clone()
}

/// Loads the CUDA and cuDNN libraries set-up linked beside `library`, dependencies first.
/// Without that folder the system's loader path must have them (a CUDA install), and the
/// provider's own error names what it could not find.
fn preload(library: &Path) -> Result<(), String> {
    let Some(folder) = library.parent().map(|p| p.join(LIBRARY_FOLDER)) else {
        return Ok(());
    };
    if !folder.is_dir() {
        return Ok(());
    }
    let names = ort::ep::cuda::CUDA_DYLIBS
        .iter()
        .chain(ort::ep::cuda::CUDNN_DYLIBS.iter());
    for name in names {
        let path: PathBuf = folder.join(name);
        if !path.exists() {
            return Err(format!(
                "CUDA provider not available: {name} not found in {} (run `SHOAL_GPU=1 make \
                 setup` again)",
                folder.display()
            ));
        }
        ort::util::preload_dylib(&path).map_err(|e| {
            // libloading's own words are "dlopen failed"; the loader's are in its source.
            let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            let driver = if why.contains("libcuda.so") {
                " (libcuda.so.1 comes with the NVIDIA driver, not with a wheel: is the driver \
                 installed?)"
            } else {
                ""
            };
            format!(
                "CUDA provider not available: loading {}: {why}{driver}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Builds a session of [`crate::train::onnx_export::probe_model`] on `index` and runs it.
fn probe(index: u32) -> Result<(), String> {
    use ort::value::TensorRef;
    let bytes = crate::train::onnx_export::probe_model();
    let mut session = crate::model::SessionPool::build_session_on(
        "shoal-probe",
        &bytes,
        crate::device::Device::Cuda(index),
        None,
    )
    .map_err(|e| e.to_string())?;
    let input = [1.5f32, -2.0];
    let tensor =
        TensorRef::from_array_view(([2usize, 1], &input[..])).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs!["x" => tensor])
        .map_err(|e| format!("running a one-node model: {e}"))?;
    let (_, doubled) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if doubled != [3.0, -4.0] {
        return Err(format!(
            "a one-node model answered {doubled:?}, not [3, -4]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_counted_from_device_files_and_cuda_visible_devices() {
        let dev = tempfile::tempdir().unwrap();
        assert!(gpus_in(dev.path(), None).is_empty());
        for name in [
            "nvidia0",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps",
        ] {
            std::fs::write(dev.path().join(name), b"").unwrap();
        }
        assert_eq!(gpus_in(dev.path(), None), vec![0, 1]);
        assert_eq!(gpus_in(dev.path(), Some("1")), vec![0]);
        assert_eq!(
            gpus_in(dev.path(), Some("GPU-8f2c,GPU-1a2b,GPU-ffff")),
            vec![0, 1]
        );
        assert!(gpus_in(dev.path(), Some("")).is_empty());
        assert!(gpus_in(dev.path(), Some("-1")).is_empty());
        assert_eq!(gpus_in(dev.path(), Some("0,-1,1")), vec![0]);
    }

    /// The machines CI runs on have no GPU and the CPU build of ONNX Runtime: asking for
    /// CUDA names CUDA and the first thing missing.
    #[test]
    fn without_a_gpu_the_check_names_cuda_and_the_reason() {
        if !detect().is_empty() {
            return;
        }
        let err = check(0).unwrap_err();
        assert!(err.contains("CUDA") && err.contains("cuda:0"), "{err}");
        assert!(
            err.contains("no NVIDIA GPU") || err.contains("GPU device file"),
            "{err}"
        );
    }

    #[test]
    fn the_cpu_build_says_it_has_no_cuda_provider() {
        if std::fs::read_dir(
            runtime::find_library()
                .unwrap()
                .parent()
                .unwrap()
                .join(LIBRARY_FOLDER),
        )
        .is_ok()
        {
            return; // set up with the GPU wheel
        }
        let err = provider_ready().unwrap_err();
        assert!(err.contains("CUDA provider not available"), "{err}");
        assert!(
            err.contains("CPU build") && err.contains("SHOAL_GPU=1"),
            "{err}"
        );
    }
}

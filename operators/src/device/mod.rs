//! Where a model runs: the CPU, or an NVIDIA GPU through ONNX Runtime's CUDA execution
//! provider.
//!
//! A worker declares its devices at start ([`declare`]: `--devices cuda:0,cuda:1`, or the
//! GPUs it detects), after checking each one can actually be used ([`cuda::check`]); a
//! device it was told to use and cannot is a refusal to start, naming CUDA and the reason.
//! A statement asks for a device with `shoal.inference.device` (`auto`, `cpu`, `cuda`,
//! `cuda:N`); [`choose`] turns that and the site's devices into the device a model runs on,
//! or a refusal, or — where `shoal.inference.device_fallback` allows — the CPU with the
//! reason noted for the statement's report ([`fallbacks`]).
//!
//! Every model run on a device goes through that device's slots ([`slots::DeviceSlots`]):
//! one ONNX Runtime session per stream, batches waiting for a free stream instead of
//! overcommitting the GPU's memory.

pub mod cuda;
mod fallbacks;
pub mod slots;

pub use fallbacks::{fallbacks_of, note_fallback};

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// One device a session can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Cpu,
    /// A CUDA device index, as CUDA numbers the visible GPUs.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// `cpu` or `cuda:N`.
    fn from_str(text: &str) -> Result<Self> {
        match DeviceRequest::from_str(text)? {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Cuda(Some(index)) => Ok(Device::Cuda(index)),
            DeviceRequest::Cuda(None) | DeviceRequest::Auto => Err(invalid(
                text,
                "a worker's device is cpu or cuda:N (N = the GPU's CUDA index)",
            )),
        }
    }
}

/// What a statement or pipeline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceRequest {
    /// A GPU of the site's where it has one, else the CPU (never an error).
    #[default]
    Auto,
    Cpu,
    /// `cuda` (any of the site's GPUs) or `cuda:N` (that one).
    Cuda(Option<u32>),
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(index)) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(None)),
            other => {
                let index = other
                    .strip_prefix("cuda:")
                    .ok_or_else(|| invalid(text, "use auto, cpu, cuda or cuda:N"))?;
                // Bounded: CUDA numbers a machine's GPUs from 0, and no machine has 1024.
                match index.parse::<u32>() {
                    Ok(n) if n < 1024 => Ok(DeviceRequest::Cuda(Some(n))),
                    _ => Err(invalid(text, "N in cuda:N is a GPU index, 0 to 1023")),
                }
            }
        }
    }
}

/// Whether `text` is an [`Error::DeviceUnavailable`]'s message: errors cross from a site to
/// the coordinator as text, and the coordinator still answers FAILED_PRECONDITION.
pub fn is_unavailable_message(text: &str) -> bool {
    text.contains("cannot score on ") && text.contains("SET shoal.inference.device_fallback")
}

fn invalid(text: &str, why: &str) -> Error {
    let mut shown = text.to_string();
    shown.truncate(64);
    Error::InvalidDevice {
        text: shown,
        why: why.to_string(),
    }
}

/// Parses a worker's `--devices` list: `cpu`, `cuda:0,cuda:1`, ... (`cpu` is always
/// available and need not be named).
pub fn parse_list(text: &str) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let device = Device::from_str(part)?;
        if !devices.contains(&device) {
            devices.push(device);
        }
    }
    devices.sort();
    Ok(devices)
}

/// The devices this process scores on, as its worker declared them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteDevices {
    /// GPUs checked usable at start, in CUDA index order.
    pub gpus: Vec<u32>,
    /// Why this process has no GPU (none detected, or the ones detected cannot be used):
    /// what a statement that asks for one is told.
    pub no_gpu_reason: String,
}

impl SiteDevices {
    /// `cpu`, then each GPU: what `shoal sites` shows.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(Device::Cpu)
            .chain(self.gpus.iter().map(|i| Device::Cuda(*i)))
            .map(|d| d.to_string())
            .collect()
    }
}

/// How a worker uses its GPUs (`--gpu-streams`, `--gpu-memory-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Sessions (CUDA streams) running at once on each GPU.
    pub streams: usize,
    /// Bytes the sessions on one GPU may hold together; None: ONNX Runtime's default.
    pub memory_limit: Option<usize>,
    /// Rows per batch a statement's scans read on a site with a GPU, where its models may
    /// run there: a GPU's run costs a launch and a copy each, so it wants bigger batches
    /// than the CPU's 8192 rows.
    pub batch_rows: usize,
}

/// Rows per batch on a GPU site by default.
pub const GPU_BATCH_ROWS: usize = 65_536;

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            streams: 1,
            memory_limit: None,
            batch_rows: GPU_BATCH_ROWS,
        }
    }
}

/// The rows per batch a statement's scans read on a site with `site`'s GPUs, when bigger
/// than the session's `own`: the GPU batch size where the statement's models may run on a
/// GPU (its device is not `cpu`) and it does not already read fewer rows for large tensors
/// (`tensor_rows` > 0). None: the session's own. A pipeline node's `batch_size` still
/// bounds each model run.
pub fn scan_batch_rows(
    site: &SiteDevices,
    gpu: &GpuOptions,
    request: DeviceRequest,
    tensor_rows: usize,
    own: usize,
) -> Option<usize> {
    let may_use_gpu = !site.gpus.is_empty() && request != DeviceRequest::Cpu;
    (may_use_gpu && tensor_rows == 0 && gpu.batch_rows > own).then_some(gpu.batch_rows)
}

/// Whether a statement's models may run on a GPU, so that a file a GPU site holds a copy
/// of is better read there: it calls a model (`calls_model`) and neither the statement
/// (`request`) nor every pipeline node that names a device (`nodes`) asks for the CPU.
pub fn prefers_gpu(
    calls_model: bool,
    request: DeviceRequest,
    mut nodes: impl Iterator<Item = DeviceRequest>,
) -> bool {
    calls_model && (request != DeviceRequest::Cpu || nodes.any(|d| d != DeviceRequest::Cpu))
}

/// The devices a worker scores on: `requested` (its `--devices`) each checked, a GPU that
/// cannot be used being an error that names CUDA and the reason (the worker refuses to
/// start); or, without a request, the GPUs detected that pass the check (one that does not
/// is left out, with a warning, and its reason is what a statement asking for a GPU is
/// told).
pub fn resolve(requested: Option<&[Device]>) -> std::result::Result<SiteDevices, String> {
    let mut site = SiteDevices::default();
    match requested {
        Some(devices) => {
            for device in devices {
                if let Device::Cuda(index) = device {
                    cuda::check(*index)?;
                    site.gpus.push(*index);
                }
            }
            if site.gpus.is_empty() {
                site.no_gpu_reason = "the worker was started with --devices cpu".into();
            }
        }
        None => {
            let detected = cuda::detect();
            for index in &detected {
                match cuda::check(*index) {
                    Ok(()) => site.gpus.push(*index),
                    Err(reason) => {
                        tracing::warn!("scoring on the CPU only: {reason}");
                        if site.no_gpu_reason.is_empty() {
                            site.no_gpu_reason = reason;
                        }
                    }
                }
            }
            if detected.is_empty() {
                site.no_gpu_reason = cuda::why_none();
            }
        }
    }
    Ok(site)
}

static DECLARED: OnceLock<SiteDevices> = OnceLock::new();
static GPU_SLOTS: OnceLock<Vec<slots::DeviceSlots>> = OnceLock::new();
static GPU_OPTIONS: OnceLock<GpuOptions> = OnceLock::new();

/// Sets this process's devices (a worker, at start) and makes each GPU's slots. The first
/// declaration wins: the workers of an embedded cluster share one process, and so one
/// machine's devices.
pub fn declare(devices: SiteDevices, gpu: GpuOptions) {
    let slots = devices
        .gpus
        .iter()
        .map(|index| slots::DeviceSlots::new(Device::Cuda(*index), gpu.streams, gpu.memory_limit))
        .collect();
    if DECLARED.set(devices).is_ok() {
        let _ = GPU_SLOTS.set(slots);
        let _ = GPU_OPTIONS.set(gpu);
    }
}

/// This process's GPU settings, as declared (the defaults otherwise).
pub fn gpu_options() -> GpuOptions {
    GPU_OPTIONS.get().copied().unwrap_or_default()
}

/// The slots of GPU `index`, when this process declared it.
pub fn gpu_slots(index: u32) -> Option<&'static slots::DeviceSlots> {
    GPU_SLOTS
        .get()?
        .iter()
        .find(|s| s.device() == Device::Cuda(index))
}

/// This process's devices: as declared, or the CPU only (a process that declared nothing,
/// such as a single-node session, runs on the CPU unless it checked a GPU).
pub fn declared() -> &'static SiteDevices {
    DECLARED.get_or_init(|| SiteDevices {
        gpus: Vec::new(),
        no_gpu_reason: "this process declared no GPU (a worker's --devices)".into(),
    })
}

/// Where one model's runs go for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub device: Device,
    /// Set when the statement asked for a GPU and is scored on the CPU instead: why.
    pub fallback: Option<String>,
}

/// The device for a statement that asks for `request`, on a site with `site`'s devices. A
/// GPU the statement requires but the site cannot give is an error unless `fallback`
/// allows the CPU; `auto` never fails.
pub fn choose(
    request: DeviceRequest,
    fallback: bool,
    site: &SiteDevices,
    spread: usize,
) -> Result<Placement> {
    let on_cpu = |reason: Option<String>| Placement {
        device: Device::Cpu,
        fallback: reason,
    };
    // Runs spread over the site's GPUs by a caller-chosen number (a partition's index),
    // so two GPUs serve two streams of batches.
    let any_gpu = |gpus: &[u32]| gpus.get(spread % gpus.len().max(1)).copied();
    match request {
        DeviceRequest::Cpu => Ok(on_cpu(None)),
        DeviceRequest::Auto => Ok(match any_gpu(&site.gpus) {
            Some(index) => Placement {
                device: Device::Cuda(index),
                fallback: None,
            },
            None => on_cpu(None),
        }),
        DeviceRequest::Cuda(wanted) => {
            let found = match wanted {
                Some(index) => site.gpus.contains(&index).then_some(index),
                None => any_gpu(&site.gpus),
            };
            match found {
                Some(index) => Ok(Placement {
                    device: Device::Cuda(index),
                    fallback: None,
                }),
                None => {
                    let reason = match wanted {
                        Some(index) if !site.gpus.is_empty() => format!(
                            "this site has no cuda:{index} (it declared {})",
                            site.names().join(", ")
                        ),
                        _ => site.no_gpu_reason.clone(),
                    };
                    if fallback {
                        Ok(on_cpu(Some(reason)))
                    } else {
                        Err(Error::DeviceUnavailable {
                            device: request.to_string(),
                            reason,
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_prefers_gpu_sites_only_when_its_models_may_run_there() {
        let none = || std::iter::empty();
        assert!(prefers_gpu(true, DeviceRequest::Auto, none()));
        assert!(prefers_gpu(true, DeviceRequest::Cuda(Some(1)), none()));
        assert!(!prefers_gpu(false, DeviceRequest::Cuda(None), none()));
        assert!(!prefers_gpu(true, DeviceRequest::Cpu, none()));
        let cuda_node = [DeviceRequest::Cuda(None)];
        assert!(prefers_gpu(true, DeviceRequest::Cpu, cuda_node.into_iter()));
    }

    #[test]
    fn statements_that_may_use_a_gpu_read_bigger_batches_there() {
        let gpu = GpuOptions::default();
        let bigger = |site: &SiteDevices, request, tensor_rows| {
            scan_batch_rows(site, &gpu, request, tensor_rows, 8192)
        };
        let with_gpu = site(&[0]);
        assert_eq!(
            bigger(&with_gpu, DeviceRequest::Auto, 0),
            Some(GPU_BATCH_ROWS)
        );
        assert_eq!(
            bigger(&with_gpu, DeviceRequest::Cuda(None), 0),
            Some(GPU_BATCH_ROWS)
        );
        // Asked for the CPU, on a CPU-only site, or reading fewer rows for big tensors.
        assert_eq!(bigger(&with_gpu, DeviceRequest::Cpu, 0), None);
        assert_eq!(bigger(&site(&[]), DeviceRequest::Auto, 0), None);
        assert_eq!(bigger(&with_gpu, DeviceRequest::Auto, 256), None);
        // Never smaller than the session's own.
        assert_eq!(
            scan_batch_rows(&with_gpu, &gpu, DeviceRequest::Auto, 0, 1 << 20),
            None
        );
    }

    #[test]
    fn devices_and_requests_parse_and_print() {
        assert_eq!(Device::from_str("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::from_str(" CUDA:1 ").unwrap(), Device::Cuda(1));
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in [
            "cuda",
            "auto",
            "tpu:0",
            "cuda:-1",
            "cuda:x",
            "cuda:4096",
            "",
        ] {
            let err = Device::from_str(bad).unwrap_err().to_string();
            assert!(err.contains("device"), "{bad}: {err}");
        }
        assert_eq!(
            DeviceRequest::from_str("cuda").unwrap(),
            DeviceRequest::Cuda(None)
        );
        assert_eq!(
            DeviceRequest::from_str("cuda:2").unwrap().to_string(),
            "cuda:2"
        );
        assert_eq!(
            parse_list("cuda:1, cuda:0,cuda:1,cpu").unwrap(),
            vec![Device::Cpu, Device::Cuda(0), Device::Cuda(1)]
        );
        let err = parse_list("cuda:0,npu").unwrap_err().to_string();
        assert!(err.contains("'npu'"), "{err}");
    }

    fn site(gpus: &[u32]) -> SiteDevices {
        SiteDevices {
            gpus: gpus.to_vec(),
            no_gpu_reason: "no NVIDIA GPU on this machine".into(),
        }
    }

    #[test]
    fn a_gpu_request_is_met_refused_or_falls_back_with_its_reason() {
        let gpu = Device::Cuda(0);
        assert_eq!(
            choose(DeviceRequest::Auto, false, &site(&[0]), 0)
                .unwrap()
                .device,
            gpu
        );
        // auto on a CPU-only site: the CPU, and nothing to report.
        let auto = choose(DeviceRequest::Auto, false, &site(&[]), 0).unwrap();
        assert_eq!(
            auto,
            Placement {
                device: Device::Cpu,
                fallback: None
            }
        );
        // cuda on a CPU-only site: refused, naming the reason...
        let err = choose(DeviceRequest::Cuda(None), false, &site(&[]), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cuda")
                && err.contains("no NVIDIA GPU")
                && err.contains("device_fallback"),
            "{err}"
        );
        assert!(is_unavailable_message(&format!("External error: {err}")));
        // ...or, allowed, the CPU with the reason for the report.
        let fell = choose(DeviceRequest::Cuda(None), true, &site(&[]), 0).unwrap();
        assert_eq!(fell.device, Device::Cpu);
        assert_eq!(
            fell.fallback.as_deref(),
            Some("no NVIDIA GPU on this machine")
        );
        // A GPU the site does not have, though it has others.
        let err = choose(DeviceRequest::Cuda(Some(3)), false, &site(&[0, 1]), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no cuda:3") && err.contains("cpu, cuda:0, cuda:1"),
            "{err}"
        );
        // Runs spread over two GPUs.
        let second = choose(DeviceRequest::Cuda(None), false, &site(&[0, 1]), 5).unwrap();
        assert_eq!(second.device, Device::Cuda(1));
        assert_eq!(
            choose(DeviceRequest::Cpu, false, &site(&[0]), 0)
                .unwrap()
                .device,
            Device::Cpu
        );
    }
}

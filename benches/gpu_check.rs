//! What `scripts/gpu-check.sh` runs on a machine with an NVIDIA GPU: the bench's MLP and its
//! ResNet-18-shaped image model, each on the CPU and on a GPU through shoal's device slots
//! (the CUDA execution provider, registered so that failing to use it is an error), their
//! outputs compared and their speed printed.
//!
//! ```text
//! gpu_check --models target/shoal-bench-models [--devices cpu,cuda:0] [--seconds 5]
//! ```
//!
//! One line per model and device, then one verdict line per model (the format the README
//! gives):
//!
//! ```text
//! gpu-check model=bench_mlp device=cpu provider=CPUExecutionProvider threads=16 batch=65536 rows/s=...
//! gpu-check model=bench_mlp device=cuda:0 provider=CUDAExecutionProvider streams=1 batch=65536 rows/s=...
//! gpu-check model=bench_mlp cuda:0/cpu=12.34x max_abs_diff=... tolerance=... same_top=.../... ok
//! ```
//!
//! Tolerances: the MLP's probabilities within 1e-4 absolute; the ResNet's logits within 1e-2
//! of their largest magnitude (the CUDA provider's convolutions may use TF32), and the same
//! top class for every image.

use anyhow::{Context, bail};
use ort::session::Session;
use ort::value::TensorRef;
use rand::{Rng, SeedableRng};
use shoal_operators::cancel::CancelToken;
use shoal_operators::device::slots::DeviceSlots;
use shoal_operators::device::{self, Device};
use shoal_operators::model::{DirectoryModels, LoadedModel, SessionPool};
use shoal_operators::{ModelProvider, runtime};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One model's check.
struct Job {
    model: &'static str,
    input: &'static str,
    /// Values per row after the batch dimension.
    row_shape: &'static [usize],
    /// The output compared between devices.
    output: &'static str,
    batch: usize,
    unit: &'static str,
    tolerance: Tolerance,
}

#[derive(Clone, Copy)]
enum Tolerance {
    /// |cuda - cpu| at most this.
    Absolute(f32),
    /// |cuda - cpu| at most this times the largest |cpu| value, and the same argmax per row.
    RelativeToMaxSameTop(f32),
}

const JOBS: [Job; 2] = [
    Job {
        model: "bench_mlp",
        input: "X",
        row_shape: &[4],
        output: "probabilities",
        batch: 65_536,
        unit: "rows/s",
        tolerance: Tolerance::Absolute(1e-4),
    },
    Job {
        model: "bench_resnet18",
        input: "image",
        row_shape: &[3, 224, 224],
        output: "logits",
        batch: 32,
        unit: "images/s",
        tolerance: Tolerance::RelativeToMaxSameTop(1e-2),
    },
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let models_dir = PathBuf::from(flag("--models").unwrap_or("target/shoal-bench-models".into()));
    let seconds: f64 = flag("--seconds").map_or(Ok(5.0), |s| s.parse())?;
    let devices = match flag("--devices") {
        Some(list) => device::parse_list(&list)?,
        None => std::iter::once(Device::Cpu)
            .chain(device::cuda::detect().into_iter().map(Device::Cuda))
            .collect(),
    };
    for d in &devices {
        if let Device::Cuda(index) = d {
            device::cuda::check(*index).map_err(anyhow::Error::msg)?;
        }
    }
    let models = DirectoryModels::load(&models_dir).with_context(|| {
        format!(
            "the bench models (scripts/bench-setup.sh makes them) in {}",
            models_dir.display()
        )
    })?;
    let budget = Duration::from_secs_f64(seconds);
    let mut failed = false;
    for job in &JOBS {
        let model = models.model(job.model, None)?;
        let input = inputs(job);
        let mut reference: Option<(Device, Vec<f32>, usize, f64)> = None;
        for d in &devices {
            let (rate, output, width, line) = measure(job, &model, *d, &input, budget)?;
            println!(
                "gpu-check model={} device={d} {line} batch={} {}={rate:.1}",
                job.model, job.batch, job.unit
            );
            match &reference {
                None => reference = Some((*d, output, width, rate)),
                Some((base, expected, _, base_rate)) => {
                    let verdict = compare(job.tolerance, expected, &output, width);
                    failed |= verdict.is_err();
                    println!(
                        "gpu-check model={} {d}/{base}={:.2}x {}",
                        job.model,
                        rate / base_rate.max(f64::MIN_POSITIVE),
                        verdict.unwrap_or_else(|e| e)
                    );
                }
            }
        }
    }
    if failed {
        bail!("outputs differ beyond the tolerance (lines above)");
    }
    Ok(())
}

/// One batch of deterministic inputs: lineitem-like features for the MLP (quantity, price,
/// discount, tax), values in [0, 1) for an image.
fn inputs(job: &Job) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let per_row: usize = job.row_shape.iter().product();
    (0..job.batch * per_row)
        .map(|i| match (job.row_shape, i % per_row) {
            ([4], 0) => rng.random_range(1.0..50.0),
            ([4], 1) => rng.random_range(900.0..105_000.0),
            ([4], _) => rng.random_range(0.0..0.1),
            _ => rng.random::<f32>(),
        })
        .collect()
}

fn run_once(
    session: &mut Session,
    job: &Job,
    input: &[f32],
) -> shoal_operators::Result<(Vec<f32>, usize)> {
    let failed = |e: ort::Error| shoal_operators::Error::Inference {
        model: job.model.into(),
        rows: job.batch,
        message: e.to_string(),
    };
    let shape: Vec<usize> = std::iter::once(job.batch)
        .chain(job.row_shape.iter().copied())
        .collect();
    let tensor = TensorRef::from_array_view((shape, input)).map_err(failed)?;
    let outputs = session
        .run(ort::inputs![job.input => tensor])
        .map_err(failed)?;
    let (shape, values) = outputs[job.output]
        .try_extract_tensor::<f32>()
        .map_err(failed)?;
    let width = shape.get(1).copied().unwrap_or(1).max(1) as usize;
    Ok((values.to_vec(), width))
}

/// Runs `job` on `device` for about `budget`: its rate, its first output, the output's row
/// width, and what the line says about how it ran.
fn measure(
    job: &Job,
    model: &Arc<LoadedModel>,
    device: Device,
    input: &[f32],
    budget: Duration,
) -> anyhow::Result<(f64, Vec<f32>, usize, String)> {
    match device {
        Device::Cpu => {
            // One session per core, as a worker's inference slots run them.
            let threads = runtime::inference_slots();
            let mut sessions = (0..threads)
                .map(|_| SessionPool::build_session_on(job.model, &model.bytes, Device::Cpu, None))
                .collect::<Result<Vec<_>, _>>()?;
            let (output, width) = run_once(&mut sessions[0], job, input)?;
            let started = Instant::now();
            let batches: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = sessions
                    .iter_mut()
                    .map(|session| {
                        scope.spawn(move || {
                            let mut done = 0;
                            while started.elapsed() < budget {
                                if run_once(session, job, input).is_err() {
                                    break;
                                }
                                done += 1;
                            }
                            done
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            let rate = (batches * job.batch) as f64 / started.elapsed().as_secs_f64();
            Ok((
                rate,
                output,
                width,
                format!("provider=CPUExecutionProvider threads={threads}"),
            ))
        }
        Device::Cuda(_) => {
            let slots = DeviceSlots::new(device, 1, None);
            let stop = CancelToken::none();
            // The first run builds the session and warms the device: not timed.
            let (output, width) = slots.run(model, &stop, |s| run_once(s, job, input))?;
            let started = Instant::now();
            let mut batches = 0usize;
            while started.elapsed() < budget {
                slots.run(model, &stop, |s| run_once(s, job, input))?;
                batches += 1;
            }
            let rate = (batches * job.batch) as f64 / started.elapsed().as_secs_f64();
            Ok((
                rate,
                output,
                width,
                "provider=CUDAExecutionProvider streams=1".into(),
            ))
        }
    }
}

fn compare(
    tolerance: Tolerance,
    expected: &[f32],
    got: &[f32],
    width: usize,
) -> Result<String, String> {
    if expected.len() != got.len() {
        return Err(format!(
            "FAILED: {} values against {}",
            got.len(),
            expected.len()
        ));
    }
    let max_diff = expected
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let (limit, said) = match tolerance {
        Tolerance::Absolute(limit) => (limit, format!("{limit:e} absolute")),
        Tolerance::RelativeToMaxSameTop(share) => {
            let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            (
                share * scale,
                format!("{share:e} x max|cpu| = {:e}", share * scale),
            )
        }
    };
    let top = |values: &[f32]| -> Vec<usize> {
        values
            .chunks(width)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |best, (i, v)| if *v > best.1 { (i, *v) } else { best },
                    )
                    .0
            })
            .collect()
    };
    let same_top = top(expected)
        .iter()
        .zip(top(got))
        .filter(|(a, b)| **a == *b)
        .count();
    let rows = expected.len() / width.max(1);
    let line = format!("max_abs_diff={max_diff:e} tolerance={said} same_top={same_top}/{rows}");
    let top_ok = !matches!(tolerance, Tolerance::RelativeToMaxSameTop(_)) || same_top == rows;
    if max_diff <= limit && top_ok {
        Ok(format!("{line} ok"))
    } else {
        Err(format!("{line} FAILED"))
    }
}

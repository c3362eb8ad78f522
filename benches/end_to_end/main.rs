//! End-to-end benchmark: shoal against the floor and against the engines a user would pick
//! instead, side by side in one run on the same machine and data.
//!
//! ```text
//! make bench                           # TPC-H lineitem scale factor 1 (6M rows)
//! SHOAL_BENCH_SCALE=0.1 make bench     # quicker
//! SHOAL_BENCH_PEERS=duckdb,daft        # a subset of the peers (default: all four)
//! SHOAL_BENCH_RUNS=5                   # runs per phase (default 3)
//! ```
//!
//! Jobs (see `jobs.rs`): (a) an MLP `predict_proba` aggregate per key over filtered rows,
//! (b) gradient-boosted-tree predictions for every row written as Parquet. Phases: the floor
//! (Parquet decode of the needed columns alone; ONNX Runtime alone on the precomputed
//! features with the same batches and threads), shoal on one process, shoal on 3 workers,
//! and DuckDB, DataFusion-python, Daft and Ray Data (`peers.py`, in `.shoal/bench-venv`).
//! Every phase runs in its own process; its peak RSS is that of its whole process tree.
//! Answers are checked against shoal's one-process answer. Results print as Markdown tables
//! and are saved to `target/shoal-bench-results.md`.
//!
//! Job (c), image classification (`images.rs`), runs shoal, Daft and Ray Data on a few
//! thousand JPEG files:
//!
//! ```text
//! SHOAL_BENCH_JOBS=images make bench   # only the image job (default: lineitem,images)
//! SHOAL_BENCH_IMAGES=4000              # files over the two sites (default 2000)
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod images;
mod jobs;
mod phases;
mod rss;

use jobs::Job;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn flag(args: &[String], name: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("missing {name}"));
    args[i + 1].clone()
}

fn main() {
    // The bench's thread budget, as `shoal --inference-slots` reads it (shoal.inference.slots):
    // for shoal in process and for the ORT-alone floor alike.
    if let Some(slots) = std::env::var("SHOAL_INFERENCE_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let _ = shoal_operators::runtime::configure(shoal_operators::config::InferenceOptions {
            slots,
            ..shoal_operators::ShoalOptions::default().inference
        });
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--phase") && flag(&args, "--phase").starts_with("images-") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(images::run_phase(
            &flag(&args, "--phase"),
            Path::new(&flag(&args, "--data")),
            Path::new(&flag(&args, "--model-dir")),
            flag(&args, "--runs").parse().unwrap(),
        ));
        println!("{result}");
        return;
    }
    if args.iter().any(|a| a == "--phase") {
        let phase = phases::Args {
            phase: flag(&args, "--phase"),
            job: Job::parse(&flag(&args, "--job")),
            data: PathBuf::from(flag(&args, "--data")),
            models: PathBuf::from(flag(&args, "--model-dir")),
            out: PathBuf::from(flag(&args, "--out")),
            runs: flag(&args, "--runs").parse().unwrap(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(phases::run(phase));
        println!("{result}");
        return;
    }
    orchestrate();
}

/// One measured phase: its times, peak memory and answer, or why it failed.
struct Measured {
    name: String,
    peer: bool,
    times: Vec<f64>,
    peak_mib: f64,
    answer: Value,
    failed: Option<String>,
}

impl Measured {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.times.iter().copied().fold(0.0, f64::max)
    }
}

fn measure(name: &str, peer: bool, mut command: Command) -> Measured {
    eprintln!("bench: {name} ...");
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(name, peer, format!("could not start: {e}")),
    };
    let sampler = rss::TreeSampler::start(child.id());
    let output = {
        // Take the pipes first so a chatty child cannot fill them and stall.
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out = std::thread::spawn(move || read_all(stdout));
        let err = std::thread::spawn(move || read_all(stderr));
        let status = child.wait();
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    };
    let peak_mib = sampler.peak_mib();
    let (status, stdout, stderr) = output;
    let last = stdout.lines().rev().find(|l| l.starts_with('{'));
    match (
        status,
        last.and_then(|l| serde_json::from_str::<Value>(l).ok()),
    ) {
        (Ok(s), Some(v)) if s.success() => Measured {
            name: name.into(),
            peer,
            times: v["times"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
            peak_mib,
            answer: v["answer"].clone(),
            failed: None,
        },
        (status, _) => {
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let why = format!(
                "{status:?}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
            failed(name, peer, why)
        }
    }
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut s);
    }
    s
}

fn failed(name: &str, peer: bool, why: String) -> Measured {
    eprintln!("bench: {name} failed: {why}");
    Measured {
        name: name.into(),
        peer,
        times: vec![],
        peak_mib: f64::NAN,
        answer: Value::Null,
        failed: Some(why),
    }
}

struct Setup {
    data: PathBuf,
    small: PathBuf,
    models: PathBuf,
    out: PathBuf,
    runs: usize,
    python: PathBuf,
    peers: Vec<String>,
}

fn shoal_phase(setup: &Setup, phase: &str, job: Job, data: &Path, runs: usize) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--phase",
        phase,
        "--job",
        job.name(),
        "--runs",
        &runs.to_string(),
    ])
    .arg("--data")
    .arg(data)
    .arg("--model-dir")
    .arg(&setup.models)
    .arg("--out")
    .arg(&setup.out);
    c
}

fn peer_phase(setup: &Setup, engine: &str, job: Job) -> Command {
    let mut c = Command::new(&setup.python);
    c.current_dir(root())
        .args([
            "benches/peers.py",
            engine,
            job.name(),
            "--since",
            jobs::SINCE,
        ])
        .args(["--runs", &setup.runs.to_string()])
        .arg("--data")
        .arg(&setup.data)
        .arg("--model")
        .arg(setup.models.join(format!("{}.onnx", job.model())))
        .arg("--out")
        .arg(&setup.out);
    c
}

fn peer_title(engine: &str) -> &'static str {
    match engine {
        "duckdb" => "DuckDB + onnxruntime per batch",
        "datafusion" => "DataFusion-python, Python UDF",
        "daft" => "Daft, batch UDF class",
        "ray" => "Ray Data, map_batches actors",
        _ => "peer",
    }
}

fn orchestrate() {
    let scale: f64 = env_or("SHOAL_BENCH_SCALE", 1.0);
    let runs: usize = env_or("SHOAL_BENCH_RUNS", 3);
    let jobs: String = env_or("SHOAL_BENCH_JOBS", "lineitem,images".to_string());
    let root = root();
    let data = root.join(format!("target/shoal-bench-data/tpch-{scale}"));
    let small = root.join(format!("target/shoal-bench-data/tpch-{}", scale / 10.0));
    let lineitem = jobs.split(',').any(|j| j == "lineitem");
    if lineitem {
        shoal_engine::tpch::generate_lineitem(&data, scale, 3, 4).unwrap();
        // The same layout (3 sites x 4 files) with a tenth of the rows: memory must not grow
        // with the rows. (Its files hold one row group of 50k rows each, the full set's 128k.)
        shoal_engine::tpch::generate_lineitem(&small, scale / 10.0, 3, 4).unwrap();
    }
    let models = root.join("target/shoal-bench-models");
    let python = root.join(".shoal/bench-venv/bin/python");
    assert!(
        models.join("bench_gbdt.onnx").exists()
            && models.join(format!("{}.onnx", images::MODEL)).exists()
            && python.exists(),
        "run scripts/bench-setup.sh first (make bench does)"
    );
    let peers = std::env::var("SHOAL_BENCH_PEERS")
        .unwrap_or_else(|_| "duckdb,datafusion,daft,ray".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let setup = Setup {
        data,
        small,
        models,
        out: root.join("target/shoal-bench-out"),
        runs,
        python,
        peers,
    };
    let slots = shoal_operators::runtime::inference_slots();
    let data_line = if lineitem {
        format!("Scale factor {scale}, ")
    } else {
        String::new()
    };
    let mut report = format!(
        "{data_line}{} cores, {slots} inference slot(s); median of {runs} runs (min-max).\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let lineitem_jobs: &[Job] = if lineitem {
        &[Job::Aggregate, Job::Predictions]
    } else {
        &[]
    };
    for &job in lineitem_jobs {
        let mut phases = vec![
            measure(
                "floor: Parquet decode alone",
                false,
                shoal_phase(&setup, "floor-decode", job, &setup.data, runs),
            ),
            measure(
                "floor: ONNX Runtime alone",
                false,
                shoal_phase(&setup, "floor-ort", job, &setup.data, runs),
            ),
        ];
        if job == Job::Predictions {
            phases.push(measure(
                "shoal native trees alone",
                false,
                shoal_phase(&setup, "floor-native", job, &setup.data, runs),
            ));
        }
        phases.push(measure(
            "shoal, 1 process",
            false,
            shoal_phase(&setup, "shoal-1", job, &setup.data, runs),
        ));
        phases.push(measure(
            "shoal, 3 workers",
            false,
            shoal_phase(&setup, "shoal-3", job, &setup.data, runs),
        ));
        if job == Job::Aggregate {
            phases.push(measure(
                GUARDED,
                false,
                shoal_phase(&setup, "shoal-3-guarded", job, &setup.data, runs),
            ));
        }
        if job == Job::Predictions {
            phases.push(measure(
                "shoal, 3 workers, 1/10 of the rows",
                false,
                shoal_phase(&setup, "shoal-3", job, &setup.small, runs),
            ));
        }
        for engine in &setup.peers {
            phases.push(measure(
                peer_title(engine),
                true,
                peer_phase(&setup, engine, job),
            ));
        }
        report.push_str(&job_table(job, &phases));
        report.push_str(&policy_overhead_line(&phases));
    }
    if lineitem {
        let trivial = measure(
            "trivial query",
            false,
            shoal_phase(&setup, "trivial", Job::Aggregate, &setup.data, 50),
        );
        report.push_str(&trivial_line(&trivial));
    }
    if jobs.split(',').any(|j| j == "images") {
        report.push_str(&image_job(&setup));
    }
    println!("\n{report}");
    let path = root.join("target/shoal-bench-results.md");
    std::fs::write(&path, &report).unwrap();
    eprintln!("bench: results saved to {}", path.display());
}

/// The guarded run's median over the open run's, side by side in this run.
fn policy_overhead_line(phases: &[Measured]) -> String {
    let median = |name: &str| {
        phases
            .iter()
            .find(|p| p.name == name && p.failed.is_none())
            .map(Measured::median)
    };
    match (median(GUARDED), median("shoal, 3 workers")) {
        (Some(guarded), Some(open)) => format!(
            "\nsite policy (plan check + group-size guard): {:+.1}% of the open run's time\n",
            100.0 * (guarded / open - 1.0)
        ),
        _ => String::new(),
    }
}

/// The aggregate with `lineitem` aggregates-only on every site: the site policy's cost.
const GUARDED: &str = "shoal, 3 workers, lineitem aggregates-only (site policy checked)";

/// Job (c): the image files, shoal on one process and on 2 workers, Daft and Ray Data.
fn image_job(setup: &Setup) -> String {
    let total: usize = env_or("SHOAL_BENCH_IMAGES", 2000);
    let data = root().join(format!("target/shoal-bench-data/images-{total}"));
    eprintln!("bench: writing {total} JPEG files under {}", data.display());
    images::generate(&data, total);
    let shoal = |phase: &str| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--phase", phase, "--runs", &setup.runs.to_string()])
            .arg("--data")
            .arg(&data)
            .arg("--model-dir")
            .arg(&setup.models);
        c
    };
    let mut phases = vec![
        measure("shoal, 1 process", false, shoal("images-shoal-1")),
        measure(
            "shoal, 2 workers (one per site)",
            false,
            shoal("images-shoal-2"),
        ),
    ];
    for engine in setup.peers.iter().filter(|e| *e == "daft" || *e == "ray") {
        let mut c = Command::new(&setup.python);
        c.current_dir(root())
            .args(["benches/images.py", engine])
            .args(["--runs", &setup.runs.to_string()])
            .arg("--data")
            .arg(&data)
            .arg("--model")
            .arg(setup.models.join(format!("{}.onnx", images::MODEL)));
        let title = match engine.as_str() {
            "daft" => "Daft: download, decode_image, resize, batch UDF class",
            _ => "Ray Data: read_images(size=224), map_batches actors",
        };
        phases.push(measure(title, true, c));
    }
    image_table(total, &phases)
}

fn image_table(total: usize, phases: &[Measured]) -> String {
    let fastest_peer = phases
        .iter()
        .filter(|p| p.peer && p.failed.is_none())
        .map(Measured::median)
        .fold(f64::INFINITY, f64::min);
    let reference = phases
        .iter()
        .find(|p| p.name == "shoal, 1 process" && p.failed.is_none())
        .map(|p| p.answer.clone())
        .unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n(c) Image classification: {total} JPEGs (320-640 x 240-480) on 2 sites; decode, \
         resize to 224 x 224, normalise, ResNet-18-shaped ONNX network, top class per file\n"
    );
    let _ = writeln!(
        out,
        "| phase | median s | min-max s | images/s | peak RSS MiB | fastest peer / this | same class as shoal, 1 process |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for p in phases {
        if failed_row(&mut out, p, 4) {
            continue;
        }
        let (same, files) = images::agreement(&reference, &p.answer);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} - {:.2} | {:.1} | {:.0} | {:.2} | {:.1}% of {files} files |",
            p.name,
            p.median(),
            p.min(),
            p.max(),
            total as f64 / p.median(),
            p.peak_mib,
            fastest_peer / p.median(),
            100.0 * same,
        );
    }
    out
}

/// A failed phase's row (its name, `failed`, `empty` blank cells and why), if it failed.
fn failed_row(out: &mut String, p: &Measured, empty: usize) -> bool {
    let Some(why) = &p.failed else {
        return false;
    };
    let _ = writeln!(
        out,
        "| {} | failed |{} {} |",
        p.name,
        " |".repeat(empty),
        why.replace('|', "/")
    );
    true
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job_table(job: Job, phases: &[Measured]) -> String {
    let find = |name: &str| phases.iter().find(|p| p.name == name && p.failed.is_none());
    let rows = find("floor: Parquet decode alone")
        .and_then(|p| p.answer["rows"].as_f64())
        .unwrap_or(f64::NAN);
    let floor = find("floor: Parquet decode alone").map_or(f64::NAN, Measured::median)
        + find("floor: ONNX Runtime alone").map_or(f64::NAN, Measured::median);
    let fastest_peer = phases
        .iter()
        .filter(|p| p.peer && p.failed.is_none())
        .map(Measured::median)
        .fold(f64::INFINITY, f64::min);
    let reference = find("shoal, 1 process").map(|p| p.answer.clone());
    let mut out = String::new();
    let _ = writeln!(out, "\n{}\n", job.title());
    let _ = writeln!(
        out,
        "floor = decode + ONNX Runtime alone = {floor:.3} s; {rows:.0} input rows\n"
    );
    let _ = writeln!(
        out,
        "| phase | median s | min-max s | rows/s | peak RSS MiB | x floor | fastest peer / this | answer |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in phases {
        if failed_row(&mut out, p, 5) {
            continue;
        }
        let check = match (
            &reference,
            p.name.starts_with("floor: Parquet") || p.name.contains("1/10"),
        ) {
            (_, true) => "-".to_string(),
            (Some(r), false) if job == Job::Aggregate && p.name.starts_with("floor") => {
                let _ = r;
                "-".to_string()
            }
            (Some(r), false) => match job.same_answer(r, &p.answer) {
                Ok(()) => "same".into(),
                Err(e) => format!("DIFFERS: {}", e.replace('|', "/")),
            },
            (None, false) => "?".into(),
        };
        let rows_here = if p.name.contains("1/10") {
            rows / 10.0
        } else {
            rows
        };
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} - {:.3} | {:.2} M | {:.0} | {:.2} | {:.2} | {} |",
            p.name,
            p.median(),
            p.min(),
            p.max(),
            rows_here / p.median() / 1e6,
            p.peak_mib,
            p.median() / floor,
            fastest_peer / p.median(),
            check
        );
    }
    out
}

fn trivial_line(p: &Measured) -> String {
    if let Some(why) = &p.failed {
        return format!("\nTrivial query failed: {why}\n");
    }
    let mut t = p.times.clone();
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() as f64 - 1.0) * q).round() as usize] * 1e3;
    format!(
        "\nTrivial query (`{}` over Flight SQL, 3 workers on loopback, {} runs, submit to last batch): p50 {:.1} ms (of which planning, GetFlightInfo: {:.1} ms), p95 {:.1} ms, max {:.1} ms\n",
        phases::TRIVIAL_SQL,
        t.len(),
        at(0.5),
        p.answer["plan_p50"].as_f64().unwrap_or(f64::NAN) * 1e3,
        at(0.95),
        at(1.0)
    )
}

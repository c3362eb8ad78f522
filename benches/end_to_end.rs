//! End-to-end benchmark: the `predict_proba` aggregate over TPC-H lineitem, on one process
//! and on a 3-worker embedded cluster, against the floor measured in the same run: Parquet
//! decode of the needed columns alone, plus ONNX Runtime alone on the same features.
//!
//! ```text
//! make bench                                   # scale factor 1 (6M rows), release build
//! SHOAL_BENCH_SCALE=0.1 make bench             # quicker
//! ```
//! Each figure is the median of 3 runs (min-max beside it); peak RSS is the highest resident
//! set size sampled (every 5 ms) during that phase, for the whole process.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use ort::session::Session;
use ort::value::TensorRef;
use shoal_engine::tpch::generate_lineitem;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_operators::ModelProvider;
use shoal_operators::features::stack_as_f32;
use shoal_operators::model::DirectoryModels;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FEATURES: [&str; 4] = ["l_quantity", "l_extendedprice", "l_discount", "l_tax"];
const RUNS: usize = 3;
const BATCH_ROWS: usize = 8192;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn query() -> String {
    format!(
        "SELECT l_returnflag, count(*) AS n, avg(predict_proba('return_risk', {})) AS risk \
         FROM lineitem WHERE l_shipdate >= DATE '1992-01-01' GROUP BY l_returnflag ORDER BY l_returnflag",
        FEATURES.join(", ")
    )
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples the resident set size until dropped; `peak()` is the highest seen.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak_kib.fetch_max((rss_mib() * 1024.0) as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            peak_kib,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_mib(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

struct Phase {
    name: &'static str,
    times: Vec<Duration>,
    peak_mib: f64,
}

impl Phase {
    fn median(&self) -> f64 {
        let mut t: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
    fn range(&self) -> (f64, f64) {
        let t: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        (
            t.iter().copied().fold(f64::MAX, f64::min),
            t.iter().copied().fold(0.0, f64::max),
        )
    }
}

async fn measure<F, Fut, T>(name: &'static str, mut run: F) -> (Phase, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let sampler = RssSampler::start();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        last = Some(run().await);
        times.push(started.elapsed());
    }
    let phase = Phase {
        name,
        times,
        peak_mib: sampler.peak_mib(),
    };
    (phase, last.expect("at least one run"))
}

fn decode_sql() -> String {
    format!(
        "SELECT {}, l_returnflag, l_shipdate FROM lineitem",
        FEATURES.join(", ")
    )
}

/// Decodes the feature columns (and the filter and group columns the query reads), keeping
/// nothing: the decode floor. Returns the row count.
async fn decode(ctx: &SessionContext) -> usize {
    let mut stream = ctx
        .sql(&decode_sql())
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
    }
    rows
}

/// Row-major f32 feature matrices, one per batch: the input ORT alone is timed on (made
/// outside the timed phases).
async fn feature_matrices(ctx: &SessionContext) -> Vec<(usize, Vec<f32>)> {
    let batches: Vec<RecordBatch> = ctx
        .sql(&decode_sql())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches
        .iter()
        .map(|b| {
            let features = &b.columns()[..4];
            (b.num_rows(), stack_as_f32(features).unwrap())
        })
        .collect()
}

/// ONNX Runtime alone: the same model, batch size and thread budget as shoal's slots.
fn infer_only(model_bytes: &[u8], matrices: &[(usize, Vec<f32>)], slots: usize) -> f64 {
    let env = shoal_operators::runtime::environment().unwrap();
    let chunks: Vec<&[(usize, Vec<f32>)]> =
        matrices.chunks(matrices.len().div_ceil(slots)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut session: Session = Session::builder(env)
                        .unwrap()
                        .with_intra_threads(1)
                        .unwrap()
                        .commit_from_memory(model_bytes)
                        .unwrap();
                    let mut sum = 0.0f64;
                    for (n, m) in chunk {
                        let input =
                            TensorRef::from_array_view(([*n, 4usize], m.as_slice())).unwrap();
                        let out = session.run(ort::inputs![input]).unwrap();
                        let (_, p) = out[1].try_extract_tensor::<f32>().unwrap();
                        sum += p
                            .iter()
                            .skip(1)
                            .step_by(2)
                            .map(|v| f64::from(*v))
                            .sum::<f64>();
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn main() {
    let scale: f64 = std::env::var("SHOAL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(scale));
}

async fn run(scale: f64) {
    let data = root().join(format!("target/shoal-bench-data/tpch-{scale}"));
    let started = Instant::now();
    let sites = generate_lineitem(&data, scale, 3, 4).expect("bench data");
    println!(
        "lineitem at scale {scale}: {} ({:.1}s to prepare)",
        data.display(),
        started.elapsed().as_secs_f64()
    );

    let models_dir = root().join("tests/data/models");
    let registry: Arc<dyn ModelProvider> = Arc::new(DirectoryModels::load(&models_dir).unwrap());
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let local = shoal_sql::local_context(&dirs, registry.clone())
        .await
        .unwrap();
    let slots = shoal_operators::runtime::inference_slots();

    let (decode_phase, rows) = measure("floor: Parquet decode alone", || decode(&local)).await;

    // The same query with a plain column in place of the model: what the SQL around the
    // model costs (filter, grouping, aggregation).
    let plain = query().replace(
        &format!("predict_proba('return_risk', {})", FEATURES.join(", ")),
        "l_discount",
    );
    let (plain_phase, _) = measure("1 process, SQL without model", || async {
        local.sql(&plain).await.unwrap().collect().await.unwrap()
    })
    .await;

    let sql = query();
    let (local_phase, local_out) = measure("shoal, 1 process", || async {
        local.sql(&sql).await.unwrap().collect().await.unwrap()
    })
    .await;

    let options = CoordinatorOptions {
        models_dir: Some(models_dir.clone()),
        ..Default::default()
    };
    let cluster = EmbeddedCluster::start(options, &sites).await.unwrap();
    let (cluster_phase, cluster_out) = measure("shoal, 3 workers", || async {
        cluster.sql(&sql).await.unwrap()
    })
    .await;
    cluster.stop().await;

    // Last, so the feature matrices it holds do not inflate the other phases' peak RSS.
    let matrices = feature_matrices(&local).await;
    let model_bytes = std::fs::read(models_dir.join("return_risk.onnx")).unwrap();
    let (infer_phase, _) = measure("floor: ONNX Runtime alone", || async {
        infer_only(&model_bytes, &matrices, slots)
    })
    .await;
    drop(matrices);

    // The two answers agree (counts exactly, averages to float-merge precision).
    let a = shoal_tests_rows(&local_out);
    let b = shoal_tests_rows(&cluster_out.batches);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert_eq!(x.1, y.1);
        assert!((x.2 - y.2).abs() < 1e-9, "{x:?} vs {y:?}");
    }
    assert_eq!(a.iter().map(|r| r.1).sum::<i64>() as usize, rows);

    let floor = decode_phase.median() + infer_phase.median();
    println!(
        "\n{rows} rows, {slots} inference slot(s), batch {BATCH_ROWS} rows; floor = decode + inference = {floor:.3}s\n"
    );
    println!(
        "| {:<30} | {:>9} | {:>17} | {:>12} | {:>13} | {:>8} |",
        "phase", "median s", "min-max s", "rows/s", "peak RSS MiB", "x floor"
    );
    println!(
        "|{:-<32}|{:-<11}|{:-<19}|{:-<14}|{:-<15}|{:-<10}|",
        "", "", "", "", "", ""
    );
    for phase in [
        &decode_phase,
        &infer_phase,
        &plain_phase,
        &local_phase,
        &cluster_phase,
    ] {
        let (lo, hi) = phase.range();
        println!(
            "| {:<30} | {:>9.3} | {:>7.3} - {:>7.3} | {:>12.0} | {:>13.0} | {:>8.2} |",
            phase.name,
            phase.median(),
            lo,
            hi,
            rows as f64 / phase.median(),
            phase.peak_mib,
            phase.median() / floor
        );
    }
    println!(
        "\nbytes moved on the cluster run: {}",
        cluster_out.report.summary()
    );
}

fn shoal_tests_rows(batches: &[RecordBatch]) -> Vec<(String, i64, f64)> {
    let mut rows = Vec::new();
    for b in batches {
        let flag = cast(b.column(0), &DataType::Utf8).unwrap();
        let flag = flag.as_string::<i32>();
        let n = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let risk = b
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((flag.value(i).to_string(), n.value(i), risk.value(i)));
        }
    }
    rows
}

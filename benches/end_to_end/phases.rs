//! The shoal side of the bench, each phase run in a child process of the bench (so its
//! memory is measured alone, as the peers' are): the two floors, shoal on one process, shoal
//! on 3 workers, and the trivial-query latency. Each prints one JSON line:
//! `{"times": [seconds per run], "answer": ...}`.

use crate::jobs::{FEATURES, Job};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use ort::session::Session;
use ort::value::TensorRef;
use serde_json::{Value, json};
use shoal_engine::protocol::{PipelineEvent, PipelineMode, PipelineRequest};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_operators::ModelProvider;
use shoal_operators::features::stack_as_f32;
use shoal_operators::model::DirectoryModels;
use shoal_operators::model::trees::NativeTrees;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A point lookup: every site gets a scan task, row-group statistics leave almost nothing
/// to read, and a handful of rows come back.
pub const TRIVIAL_SQL: &str =
    "SELECT l_orderkey, l_linenumber, l_quantity FROM lineitem WHERE l_orderkey = 1";

pub struct Args {
    pub phase: String,
    pub job: Job,
    pub data: PathBuf,
    pub models: PathBuf,
    pub out: PathBuf,
    pub runs: usize,
}

fn sites(data: &Path) -> Vec<PathBuf> {
    let mut sites: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("site-"))
        })
        .collect();
    sites.sort();
    sites
}

async fn local(args: &Args) -> SessionContext {
    let registry: Arc<dyn ModelProvider> = Arc::new(DirectoryModels::load(&args.models).unwrap());
    let dirs = sites(&args.data);
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    shoal_sql::local_context(&dirs, registry).await.unwrap()
}

pub async fn run(args: Args) -> Value {
    let mut times = Vec::new();
    let answer = match args.phase.as_str() {
        "floor-decode" => {
            let ctx = local(&args).await;
            let mut rows = 0;
            for _ in 0..args.runs {
                let started = Instant::now();
                rows = count_rows(&ctx, &args.job.decode_sql()).await;
                times.push(started.elapsed().as_secs_f64());
            }
            json!({ "rows": rows })
        }
        "floor-ort" | "floor-native" => {
            let ctx = local(&args).await;
            let matrices = feature_matrices(&ctx, args.job).await;
            let bytes =
                std::fs::read(args.models.join(format!("{}.onnx", args.job.model()))).unwrap();
            let slots = shoal_operators::runtime::inference_slots();
            let mut sum = 0.0;
            for _ in 0..args.runs {
                let started = Instant::now();
                sum = if args.phase == "floor-ort" {
                    ort_alone(&bytes, &matrices, slots)
                } else {
                    native_alone(&bytes, &matrices, slots)
                };
                times.push(started.elapsed().as_secs_f64());
            }
            let rows: usize = matrices.iter().map(|(n, _)| n).sum();
            json!({ "rows": rows, "sum": sum })
        }
        "shoal-1" => {
            let ctx = local(&args).await;
            let mut answer = Value::Null;
            for run in 0..args.runs {
                let out = args.out.join(format!("shoal-1/run-{run}"));
                let _ = std::fs::remove_dir_all(&out);
                let started = Instant::now();
                match args.job {
                    Job::Aggregate => {
                        let batches = ctx
                            .sql(&args.job.sql())
                            .await
                            .unwrap()
                            .collect()
                            .await
                            .unwrap();
                        times.push(started.elapsed().as_secs_f64());
                        answer = aggregate_answer(&batches);
                    }
                    Job::Predictions => {
                        std::fs::create_dir_all(&out).unwrap();
                        let copy = format!(
                            "COPY ({}) TO '{}/' STORED AS PARQUET",
                            args.job.sql(),
                            out.display()
                        );
                        ctx.sql(&copy).await.unwrap().collect().await.unwrap();
                        times.push(started.elapsed().as_secs_f64());
                        answer = predictions_answer(&parquet_files(&out)).await;
                    }
                }
                let _ = std::fs::remove_dir_all(&out);
            }
            answer
        }
        "shoal-3" | "shoal-3-guarded" => {
            let options = CoordinatorOptions {
                models_dir: Some(args.models.clone()),
                ..Default::default()
            };
            let site_dirs = sites(&args.data);
            // Guarded: lineitem aggregates-only, so every site checks each group's size
            // (and the plan) before anything leaves: the cost of the site policy.
            let policy = if args.phase == "shoal-3-guarded" {
                shoal_engine::SitePolicy::default()
            } else {
                shoal_engine::demo_site_policy()
            };
            let cluster = EmbeddedCluster::start_with_policy(options, &site_dirs, policy)
                .await
                .unwrap();
            let mut answer = Value::Null;
            for run in 0..args.runs {
                let started = Instant::now();
                match args.job {
                    Job::Aggregate => {
                        let out = cluster.sql(&args.job.sql()).await.unwrap();
                        times.push(started.elapsed().as_secs_f64());
                        answer = aggregate_answer(&out.batches);
                    }
                    Job::Predictions => {
                        let run_id = format!("bench-{}-{run}", std::process::id());
                        let files = run_pipeline(&cluster, args.job, &run_id).await;
                        times.push(started.elapsed().as_secs_f64());
                        let paths: Vec<PathBuf> = files
                            .iter()
                            .map(|(site, file)| {
                                let dir = site_dirs.iter().find(|d| d.ends_with(site)).unwrap();
                                dir.join(".shoal-output").join(file)
                            })
                            .collect();
                        answer = predictions_answer(&paths).await;
                        for dir in &site_dirs {
                            let _ = std::fs::remove_dir_all(dir.join(".shoal-output/bench"));
                        }
                    }
                }
            }
            cluster.stop().await;
            answer
        }
        "trivial" => {
            let options = CoordinatorOptions {
                models_dir: Some(args.models.clone()),
                ..Default::default()
            };
            let cluster = EmbeddedCluster::start_with_policy(
                options,
                &sites(&args.data),
                shoal_engine::demo_site_policy(),
            )
            .await
            .unwrap();
            let connector = shoal_engine::security::Connector::new(None, None).unwrap();
            let mut client = shoal_engine::client::flight_sql(&connector, &cluster.url)
                .await
                .unwrap();
            let sql = TRIVIAL_SQL;
            let mut rows = 0;
            // Time to the plan (GetFlightInfo) and to the last batch (DoGet), per run.
            let mut planned = Vec::new();
            for i in 0..args.runs + 3 {
                let started = Instant::now();
                let info = client.execute(sql.to_string(), None).await.unwrap();
                let plan_s = started.elapsed().as_secs_f64();
                rows = 0;
                for endpoint in info.endpoint {
                    let ticket = endpoint.ticket.unwrap();
                    let batches: Vec<RecordBatch> = client
                        .do_get(ticket)
                        .await
                        .unwrap()
                        .try_collect()
                        .await
                        .unwrap();
                    rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
                }
                // The first runs warm connections and caches: not counted.
                if i >= 3 {
                    times.push(started.elapsed().as_secs_f64());
                    planned.push(plan_s);
                }
            }
            cluster.stop().await;
            planned.sort_by(f64::total_cmp);
            json!({ "rows": rows, "plan_p50": planned[planned.len() / 2] })
        }
        other => panic!("unknown phase {other}"),
    };
    json!({ "times": times, "answer": answer })
}

async fn count_rows(ctx: &SessionContext, sql: &str) -> usize {
    let mut stream = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
    }
    rows
}

/// Row-major f32 feature matrices, one per scanned batch (made before the timed runs).
async fn feature_matrices(ctx: &SessionContext, job: Job) -> Vec<(usize, Vec<f32>)> {
    let batches = ctx
        .sql(&job.features_sql())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| (b.num_rows(), stack_as_f32(b.columns()).unwrap()))
        .collect()
}

/// Splits the matrices over `slots` threads and sums what `score` returns for each.
fn on_slots(
    matrices: &[(usize, Vec<f32>)],
    slots: usize,
    score: impl Fn(&[(usize, Vec<f32>)]) -> f64 + Sync,
) -> f64 {
    let chunks: Vec<&[(usize, Vec<f32>)]> = matrices
        .chunks(matrices.len().div_ceil(slots).max(1))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(|| score(chunk)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// ONNX Runtime alone: the same model, batch size and thread budget as shoal's slots.
fn ort_alone(model: &[u8], matrices: &[(usize, Vec<f32>)], slots: usize) -> f64 {
    let env = shoal_operators::runtime::environment().unwrap();
    on_slots(matrices, slots, |chunk| {
        let mut session: Session = Session::builder(env)
            .unwrap()
            .with_intra_threads(1)
            .unwrap()
            .commit_from_memory(model)
            .unwrap();
        let mut sum = 0.0f64;
        for (n, m) in chunk {
            let input = TensorRef::from_array_view(([*n, FEATURES.len()], m.as_slice())).unwrap();
            let out = session.run(ort::inputs![input]).unwrap();
            let (_, p) = out[1].try_extract_tensor::<f32>().unwrap();
            sum += positive_sum(p);
        }
        sum
    })
}

/// Sum of P(positive) over a binary classifier's [N, 2] probabilities, row-major.
fn positive_sum(probabilities: &[f32]) -> f64 {
    probabilities
        .iter()
        .skip(1)
        .step_by(2)
        .map(|v| f64::from(*v))
        .sum()
}

/// shoal's native tree evaluator alone, on the same matrices and threads.
fn native_alone(model: &[u8], matrices: &[(usize, Vec<f32>)], slots: usize) -> f64 {
    let trees = NativeTrees::from_onnx(model, FEATURES.len()).unwrap();
    on_slots(matrices, slots, |chunk| {
        let mut sum = 0.0f64;
        for (n, m) in chunk {
            let outputs = trees.run(m, *n);
            if let shoal_operators::model::trees::NativeTensor::Float32 { data, .. } = &outputs[1] {
                sum += positive_sum(data);
            }
        }
        sum
    })
}

/// Runs the predictions pipeline; returns (site, file under the output folder) per file.
async fn run_pipeline(cluster: &EmbeddedCluster, job: Job, run_id: &str) -> Vec<(String, String)> {
    let request = PipelineRequest {
        file: "bench.toml".into(),
        text: job.pipeline("bench/predictions"),
        params: vec![],
        mode: PipelineMode::Run,
        run_id: Some(run_id.into()),
        resume: false,
        partial: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let coordinator = cluster.coordinator.clone();
    let mut files = Vec::new();
    let collect = async {
        while let Some(event) = rx.recv().await {
            if let PipelineEvent::Output { files: f, .. } = event {
                files.extend(f.into_iter().map(|m| (m.site, m.file)));
            }
        }
    };
    let (outcome, ()) = tokio::join!(
        coordinator.pipeline(request, &shoal_engine::security::Principal::Open, tx),
        collect
    );
    outcome.unwrap();
    files
}

fn aggregate_answer(batches: &[RecordBatch]) -> Value {
    let mut groups = BTreeMap::new();
    for b in batches {
        let flags = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let flags = flags.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let p = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            groups.insert(flags.value(i).to_string(), json!([n.value(i), p.value(i)]));
        }
    }
    json!(groups)
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Rows and the sum of `p` over written Parquet files, as a streaming aggregate: reading
/// them back must not weigh on the phase's peak memory.
async fn predictions_answer(files: &[PathBuf]) -> Value {
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    use datafusion::prelude::{cast, col};
    if files.is_empty() {
        return json!({ "rows": 0, "sum": 0.0 });
    }
    let ctx = SessionContext::new();
    let paths: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect();
    let batches = ctx
        .read_parquet(paths, ParquetReadOptions::default())
        .await
        .unwrap()
        .aggregate(
            vec![],
            vec![
                count(col("p")),
                sum(cast(
                    col("p"),
                    datafusion::arrow::datatypes::DataType::Float64,
                )),
            ],
        )
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    let sum = batches[0].column(1).as_primitive::<Float64Type>().value(0);
    json!({ "rows": rows, "sum": sum })
}

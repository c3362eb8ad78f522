//! `shoal demo`: the first thing a new user runs. Generates TPC-H lineitem and a `visits`
//! table split over three sites, starts an embedded cluster and runs predict queries, then
//! trains models where the data is, evaluates and compares them per site, and predicts with
//! them, printing results, stage placement and bytes moved.

use super::output::section;
use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use shoal_engine::tpch::generate_lineitem;
use shoal_engine::visits::generate_visits;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster, demo_site_policy};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// TPC-H scale factor (1.0 is 6M lineitem rows).
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// Number of workers (sites); the data is split evenly between them.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Where to generate the data (reused when already generated with the same settings).
    #[arg(long, default_value = "demo-data")]
    data: PathBuf,
    /// Models to start from; defaults to the repository's tests/data/models. They are
    /// copied into DATA/models, where the models the demo trains are registered too.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Rows of the `visits` training table per site.
    #[arg(long, default_value_t = DEMO_VISITS_PER_SITE)]
    visits_per_site: usize,
    /// After the demo queries, keep the cluster up for Flight SQL clients (pyarrow, ADBC,
    /// examples/python) until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Where the coordinator listens with --serve (otherwise a free loopback port).
    #[arg(long, default_value = "127.0.0.1:50050")]
    listen: String,
}

/// The sample models shipped in the repository.
pub(crate) fn default_models() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("tests/data/models"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .context("cannot find tests/data/models; pass --models DIR")
}

/// Rows per site of the sample `visits` table (demo and embedded pipeline runs).
pub(crate) const DEMO_VISITS_PER_SITE: usize = 50_000;

const FEATURES: &str = "l_quantity, l_extendedprice, l_discount, l_tax";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.scale > 0.0, "--scale must be positive");
    let models = match args.models {
        Some(m) => m,
        None => default_models()?,
    };
    let started = Instant::now();
    let visits_per_site = args.visits_per_site;
    let sites = tokio::task::spawn_blocking({
        let data = args.data.clone();
        move || -> anyhow::Result<Vec<PathBuf>> {
            let sites = generate_lineitem(&data, args.scale, args.workers, 2)?;
            generate_visits(&sites, visits_per_site, 2)?;
            Ok(sites)
        }
    })
    .await??;
    let models = registry_in(&args.data, &models, true)?;
    println!(
        "TPC-H lineitem at scale {} in {} ({} sites) ready in {:.1}s",
        args.scale,
        args.data.display(),
        sites.len(),
        started.elapsed().as_secs_f64()
    );

    let options = CoordinatorOptions {
        models_dir: Some(models),
        ..Default::default()
    };
    let listen = if args.serve {
        args.listen.as_str()
    } else {
        "127.0.0.1:0"
    };
    let cluster = EmbeddedCluster::start_on(listen, options, &sites, demo_site_policy()).await?;
    println!("\nEmbedded cluster: coordinator at {}", cluster.url);
    for w in &cluster.workers {
        println!("  worker '{}' at {}", w.name, w.url);
    }

    section("SHOW MODELS");
    let models = cluster.sql("SHOW MODELS").await?;
    println!("{}", pretty_format_batches(&models.batches)?);

    let total = cluster.sql("SELECT count(*) AS n FROM lineitem").await?;
    println!(
        "\nlineitem rows across the sites:\n{}",
        pretty_format_batches(&total.batches)?
    );

    let aggregate = format!(
        "SELECT l_returnflag, count(*) AS orders, \
         avg(predict_proba('return_risk', {FEATURES})) AS avg_return_risk \
         FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
    );
    section(&format!("EXPLAIN {aggregate}"));
    let explain = cluster.sql(&format!("EXPLAIN {aggregate}")).await?;
    for batch in &explain.batches {
        let lines = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .context("EXPLAIN returns text")?;
        for line in lines.iter().flatten() {
            println!("{line}");
        }
    }

    section(&aggregate);
    let out = cluster.sql(&aggregate).await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());
    let scored = rows(&total)?;
    if out.report.elapsed_ms > 0 {
        println!(
            "scored {scored} rows with return_risk in {} ms: {:.0} rows/s",
            out.report.elapsed_ms,
            scored as f64 * 1000.0 / out.report.elapsed_ms as f64
        );
    }

    let by_mode = format!(
        "SELECT l_shipmode, sum(predict('return_risk', {FEATURES})) AS predicted_returns, \
         avg(predict('price', l_quantity, l_discount)) AS avg_price_estimate \
         FROM lineitem WHERE l_shipdate >= DATE '1995-01-01' \
         GROUP BY l_shipmode ORDER BY l_shipmode"
    );
    section(&by_mode);
    let out = cluster.sql(&by_mode).await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());

    let rows_query = "SELECT l_orderkey, l_linenumber, l_extendedprice, \
         predict('price', l_quantity, l_discount) AS price_estimate, \
         predict_proba('ship_mode', l_quantity, l_discount, l_tax) AS ship_mode_probabilities \
         FROM lineitem WHERE l_orderkey < 3 ORDER BY l_orderkey, l_linenumber";
    section(rows_query);
    let out = cluster.sql(rows_query).await?;
    println!("{}", pretty_format_batches(&out.batches)?);
    println!("{}", out.report.summary());

    super::demo_training::run(&cluster, &sites).await?;

    println!("\ndemo finished in {:.1}s", started.elapsed().as_secs_f64());
    if args.serve {
        let url = cluster.url.replacen("http://", "grpc://", 1);
        println!(
            "\nServing Flight SQL at {url} until Ctrl-C. Try:\n  \
             .venv/bin/python examples/python/adbc_predict.py {url}\n  \
             shoal sql --coordinator {url} \"SELECT count(*) FROM lineitem\""
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    cluster.stop().await;
    Ok(())
}

/// The embedded cluster's registry, DATA/models: the shipped models copied in (so models
/// trained here are registered beside them and the repository's folder is never written
/// to); `fresh` clears it first, so the demo's trained versions start at v1.
pub(crate) fn registry_in(data: &Path, shipped: &Path, fresh: bool) -> anyhow::Result<PathBuf> {
    let registry = data.join("models");
    if fresh && registry.exists() {
        std::fs::remove_dir_all(&registry)
            .with_context(|| format!("clearing {}", registry.display()))?;
    }
    std::fs::create_dir_all(&registry)?;
    for entry in
        std::fs::read_dir(shipped).with_context(|| format!("reading {}", shipped.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().context("model file name")?;
        if path.extension().is_some_and(|x| x == "onnx") && !registry.join(name).exists() {
            std::fs::copy(&path, registry.join(name))?;
        }
    }
    Ok(registry)
}

fn rows(out: &shoal_engine::coordinator::QueryOutput) -> anyhow::Result<i64> {
    let batch = out.batches.first().context("count(*) returned no batch")?;
    let n = batch
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .context("count(*) is Int64")?;
    Ok(n.value(0))
}

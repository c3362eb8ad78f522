//! Shared fixtures of shoal's integration tests: sample data split over three sites, an
//! embedded cluster over it, and the single-process DataFusion session it must agree with.

// Test fixtures: failing loudly is what they are for.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use shoal_engine::protocol::{PipelineEvent, PipelineMode, PipelineRequest};
use shoal_engine::tpch::generate_lineitem;
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_operators::ModelProvider;
use shoal_operators::model::DirectoryModels;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TPC-H Q1 (pricing summary report), as the specification writes it.
pub const TPCH_Q1: &str = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, \
    sum(l_extendedprice) AS sum_base_price, \
    sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, \
    avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, \
    avg(l_discount) AS avg_disc, count(*) AS count_order \
    FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

/// TPC-H Q6 (forecasting revenue change).
pub const TPCH_Q6: &str = "SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem \
    WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' \
    AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24";

/// Scale of the test data: 60k lineitem rows, split into 3 sites × 2 files.
pub const TEST_SCALE: f64 = 0.01;
pub const TEST_SITES: usize = 3;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn models_dir() -> PathBuf {
    repo_root().join("tests/data/models")
}

pub fn bad_models_dir() -> PathBuf {
    repo_root().join("tests/data/bad_models")
}

/// The site folders of the test data, generated once and shared by every test process
/// (nextest runs each test in its own process, possibly at the same time).
pub fn tpch_sites() -> Vec<PathBuf> {
    let root = repo_root().join("target/shoal-test-data/tpch-0.01+notes");
    let sites: Vec<PathBuf> = (1..=TEST_SITES)
        .map(|i| root.join(format!("site-{i}")))
        .collect();
    if root.join(".shoal-tpch").exists() {
        return sites;
    }
    // Generate aside, then move into place in one rename: concurrent tests never see a
    // half-written folder.
    let scratch = root.with_extension(format!("tmp-{}", std::process::id()));
    generate_lineitem(&scratch, TEST_SCALE, TEST_SITES, 2).expect("generate test data");
    write_notes(&scratch).expect("write the notes");
    if std::fs::rename(&scratch, &root).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    sites
}

/// A files table of text on every site: `notes/<a|b>/<n>.txt`, 12 files a folder, one file
/// of each site's `b` not UTF-8 (`tests/slt/files.slt` reads them).
fn write_notes(root: &Path) -> std::io::Result<()> {
    for site in 1..=TEST_SITES {
        for (folder, mood) in [("a", "lovely"), ("b", "dull")] {
            let dir = root.join(format!("site-{site}/notes/{folder}"));
            std::fs::create_dir_all(&dir)?;
            for n in 0..12 {
                let text = format!("note {n} of site {site}: the room was {mood}. ").repeat(n + 1);
                std::fs::write(dir.join(format!("{n:02}.txt")), text)?;
            }
        }
        std::fs::write(
            root.join(format!("site-{site}/notes/b/11.txt")),
            b"caf\xe9 on site, not UTF-8",
        )?;
    }
    Ok(())
}

pub fn registry() -> Arc<dyn ModelProvider> {
    Arc::new(DirectoryModels::load(&models_dir()).expect("load the test models"))
}

/// A coordinator and one worker per test site, on loopback.
pub async fn start_cluster() -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models_dir()),
        ..Default::default()
    };
    EmbeddedCluster::start_with_policy(options, &tpch_sites(), shoal_engine::demo_site_policy())
        .await
        .expect("start the embedded cluster")
}

/// A coordinator serving the models of `models` and one worker per folder of `sites`
/// (`site-1`, ...), each enforcing `policy`; None is the default policy (every table
/// aggregates-only); [`ROWS_LEAVE`] lets rows leave, for comparisons.
pub async fn sites_cluster(
    models: &Path,
    sites: &[PathBuf],
    policy: Option<&str>,
) -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models.to_path_buf()),
        ..Default::default()
    };
    let policy = match policy {
        Some(text) => shoal_engine::SitePolicy::parse(text, "the test's policy").expect("policy"),
        None => shoal_engine::SitePolicy::default(),
    };
    EmbeddedCluster::start_with_policy(options, sites, policy)
        .await
        .expect("start the embedded cluster")
}

/// A site policy that lets every table's rows leave: for tests that compare rows.
pub const ROWS_LEAVE: &str = "[defaults]\negress = \"rows\"\n";

/// Plain single-node DataFusion over the same files, with the same functions.
pub async fn local_context() -> SessionContext {
    let sites = tpch_sites();
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    shoal_sql::local_context(&dirs, registry())
        .await
        .expect("local session")
}

/// Every cell as text, row by row (NULL for nulls).
pub fn to_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

/// Compares two results cell by cell; numbers that differ only by float summation order
/// (relative 1e-9) are equal.
pub fn assert_same_rows(query: &str, expected: &[Vec<String>], actual: &[Vec<String>]) {
    assert_eq!(
        expected.len(),
        actual.len(),
        "row count differs for {query}\nexpected: {expected:?}\nactual: {actual:?}"
    );
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(
            e.len(),
            a.len(),
            "column count differs in row {i} of {query}"
        );
        for (j, (x, y)) in e.iter().zip(a).enumerate() {
            if x == y {
                continue;
            }
            // Struct and list cells compare value by value.
            let tokens = |s: &str| -> Vec<String> {
                s.split(|c: char| c.is_whitespace() || "{}[],:".contains(c))
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            };
            let (xs, ys) = (tokens(x), tokens(y));
            let close = xs.len() == ys.len()
                && xs.iter().zip(&ys).all(|(a, b)| {
                    a == b
                        || match (a.parse::<f64>(), b.parse::<f64>()) {
                            (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                            _ => false,
                        }
                });
            assert!(
                close,
                "{query}: row {i} column {j}: single-node {x} vs cluster {y}"
            );
        }
    }
}

/// Three site folders with the `visits` training table (20,000 rows each, 2 files), made
/// once and shared like [`tpch_sites`].
pub fn visits_sites() -> Vec<PathBuf> {
    let root = repo_root().join("target/shoal-test-data/visits-3x20000");
    let names: Vec<String> = (1..=TEST_SITES).map(|i| format!("site-{i}")).collect();
    let sites: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    if root.join(".complete").exists() {
        return sites;
    }
    let scratch = root.with_extension(format!("tmp-{}", std::process::id()));
    let scratch_sites: Vec<PathBuf> = names.iter().map(|n| scratch.join(n)).collect();
    shoal_engine::visits::generate_visits(&scratch_sites, 20_000, 2).expect("generate visits");
    std::fs::write(scratch.join(".complete"), "").expect("marker");
    if std::fs::rename(&scratch, &root).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    sites
}

/// Runs (or validates, explains) a pipeline file on the cluster as an open client, with
/// the events it streamed.
pub async fn run_pipeline(
    cluster: &EmbeddedCluster,
    file: &str,
    text: &str,
    mode: PipelineMode,
    run_id: Option<&str>,
) -> Result<Vec<PipelineEvent>, String> {
    let request = PipelineRequest {
        file: file.into(),
        text: text.into(),
        params: vec![],
        mode,
        run_id: run_id.map(String::from),
        resume: false,
        partial: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let coordinator = cluster.coordinator.clone();
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
    };
    let (outcome, ()) = tokio::join!(
        coordinator.pipeline(request, &shoal_engine::security::Principal::Open, tx),
        collect
    );
    outcome.map_err(|e| e.to_string())?;
    Ok(events)
}

/// The rows of a pipeline's client outputs.
pub fn pipeline_rows(events: &[PipelineEvent]) -> Vec<RecordBatch> {
    events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Rows { ipc, .. } => Some(PipelineEvent::decode_rows(ipc).unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

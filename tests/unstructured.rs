//! Unstructured data where it lies: a real vision model (RapidOCR's text-direction
//! classifier, from its PyPI wheel) classifies text-line images stored on the sites, in one
//! process and on a cluster, and its answers are checked against the truth and against the
//! wheel's own Python pipeline on the same files.
//!
//! The images and the wheel's answers come from `tests/data/make_text_lines.py` (set-up
//! installs the wheel into `.venv`; the fonts are Debian's fonts-dejavu-core).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shoal_engine::{CoordinatorOptions, EmbeddedCluster, SitePolicy};
use shoal_operators::model::DirectoryModels;
use shoal_tests::{assert_same_rows, repo_root, to_rows};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const SITES: usize = 2;
const PER_SITE: usize = 40;

/// Renders the lines and asks the wheel, into `dir`; returns the site folders.
fn text_lines(dir: &Path) -> Vec<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("tests/data/make_text_lines.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .args([
            "--sites",
            &SITES.to_string(),
            "--per-site",
            &PER_SITE.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{} (run `make setup`): {e}", python.display()));
    assert!(
        out.status.success(),
        "{} failed (run `make setup`):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (1..=SITES).map(|i| dir.join(format!("site-{i}"))).collect()
}

/// RapidOCR's classifier input: height 48, width 192, the line at the left, zero after it,
/// values scaled to [-1, 1].
const DIRECTION: &str = "predict_proba('text_direction', image_tensor(content, 48, 192, 'nchw', \
                         0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 'pad'))";

/// Rows of (path, rotated, wheel_180, probability of 180 degrees rounded to 3 places).
fn scored(sql_rows: &[Vec<String>]) -> Vec<(String, bool, bool, f64)> {
    sql_rows
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1] == "true",
                r[2] == "true",
                r[3].parse().unwrap(),
            )
        })
        .collect()
}

fn check_answers(rows: &[(String, bool, bool, f64)]) {
    assert_eq!(rows.len(), SITES * PER_SITE);
    let right = rows
        .iter()
        .filter(|(_, truth, _, p)| (*p > 0.5) == *truth)
        .count();
    let agree = rows
        .iter()
        .filter(|(_, _, wheel, p)| (*p > 0.5) == *wheel)
        .count();
    let wheel_right = rows
        .iter()
        .filter(|(_, truth, wheel, _)| truth == wheel)
        .count();
    let n = rows.len() as f64;
    eprintln!(
        "text direction over {} lines: shoal {:.1}% right, wheel {:.1}% right, agreement {:.1}%",
        rows.len(),
        100.0 * right as f64 / n,
        100.0 * wheel_right as f64 / n,
        100.0 * agree as f64 / n,
    );
    let disagreements: Vec<_> = rows
        .iter()
        .filter(|(_, _, wheel, p)| (*p > 0.5) != *wheel)
        .collect();
    assert!(right as f64 >= 0.9 * n, "accuracy under 90%: {rows:?}");
    assert!(
        agree as f64 >= 0.95 * n,
        "agreement with the wheel under 95%: {disagreements:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_text_lines_are_told_apart_where_they_lie_as_by_the_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let models = dir.path().join("models");
    let sql = format!(
        "SELECT path, rotated, wheel_180, round({DIRECTION}, 3) AS p180 FROM lines ORDER BY path"
    );

    // One process: DataFusion with shoal's functions over both site folders.
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider = Arc::new(DirectoryModels::load(&models).unwrap());
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let single = to_rows(&ctx.sql(&sql).await.unwrap().collect().await.unwrap());
    check_answers(&scored(&single));

    // The cluster: each site decodes and classifies its own files.
    let options = CoordinatorOptions {
        models_dir: Some(models),
        ..Default::default()
    };
    let rows_allowed = SitePolicy::parse("[defaults]\negress = \"rows\"\n", "text lines").unwrap();
    let mut cluster = EmbeddedCluster::start_with_policy(options, &[], rows_allowed)
        .await
        .unwrap();
    for (i, site) in sites.iter().enumerate() {
        cluster
            .add_worker(format!("site-{}", i + 1), site.clone())
            .await
            .unwrap();
    }
    let out = cluster.sql(&sql).await.unwrap();
    assert!(out.report.distributed, "classified on the sites");
    let rows = to_rows(&out.batches);
    assert_same_rows(&sql, &single, &rows);
    check_answers(&scored(&rows));

    // What a site sends back can be just the counts.
    let counts = format!(
        "SELECT rotated, count(*) AS lines, sum(CAST({DIRECTION} > 0.5 AS INT)) AS said_180 \
         FROM lines GROUP BY rotated ORDER BY rotated"
    );
    let out = cluster.sql(&counts).await.unwrap();
    let rows = to_rows(&out.batches);
    let expected = to_rows(&ctx.sql(&counts).await.unwrap().collect().await.unwrap());
    assert_same_rows(&counts, &expected, &rows);
    assert_eq!(rows.len(), 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_tensor_that_does_not_fit_the_model_is_refused_while_planning() {
    let dir = tempfile::tempdir().unwrap();
    let sites = text_lines(dir.path());
    let provider = Arc::new(DirectoryModels::load(&dir.path().join("models")).unwrap());
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let ctx = shoal_sql::local_context(&dirs, provider).await.unwrap();
    let cases = [
        (
            // Channels last: the model wants [3, ?, ?].
            "SELECT predict_proba('text_direction', image_tensor(content, 48, 192, 'nhwc')) FROM lines",
            "cannot feed input 'x': the input takes [3, ?, ?] per row; the argument's tensors \
             are [48, 192, 3]",
        ),
        (
            "SELECT predict('text_direction', rotated) FROM lines",
            "pass a tensor column",
        ),
        (
            "SELECT predict('text_direction', image_tensor(content, 48, 192, 'nchw'), rotated) FROM lines",
            "model expects 1 feature(s), got 2",
        ),
    ];
    for (sql, expected) in cases {
        let err = match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains(expected), "{sql}\n{err}");
    }
}

//! Bad input gets a clear error naming the thing and where it is, and the cluster keeps
//! working afterwards.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use shoal_engine::{
    Coordinator, CoordinatorOptions, EmbeddedCluster, WorkerOptions, WorkerProcess,
};
use shoal_tests::{bad_models_dir, models_dir, start_cluster, tpch_sites};
use std::time::{Duration, Instant};

const COUNT: &str = "SELECT count(*) FROM lineitem";

async fn expect_error(cluster: &EmbeddedCluster, sql: &str, needles: &[&str]) {
    let err = cluster
        .sql(sql)
        .await
        .map(|_| ())
        .expect_err(sql)
        .to_string();
    for needle in needles {
        assert!(
            err.contains(needle),
            "error for {sql} lacks {needle:?}: {err}"
        );
    }
}

async fn still_answers(cluster: &EmbeddedCluster) {
    let out = cluster
        .sql(COUNT)
        .await
        .expect("the cluster keeps answering");
    assert_eq!(out.batches[0].num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_errors_name_the_model_and_what_it_expects() {
    let cluster = start_cluster().await;
    expect_error(
        &cluster,
        "SELECT predict('churn', l_quantity) FROM lineitem",
        &["unknown model 'churn'", "return_risk"],
    )
    .await;
    still_answers(&cluster).await;
    expect_error(
        &cluster,
        "SELECT predict('return_risk', l_quantity, l_discount) FROM lineitem",
        &["return_risk", "expects 4 feature(s), got 2"],
    )
    .await;
    expect_error(
        &cluster,
        "SELECT predict_proba('price', l_quantity, l_discount) FROM lineitem",
        &["price", "no probability output"],
    )
    .await;
    expect_error(
        &cluster,
        "SELECT predict('price', l_quantity, l_comment) FROM lineitem",
        &["l_comment", "features must be numeric"],
    )
    .await;
    // A null feature is found on a worker, mid-query: the error still names the column.
    expect_error(
        &cluster,
        "SELECT sum(predict('price', NULLIF(l_quantity, 1), l_discount)) FROM lineitem",
        &["price", "feature 1 (nullif)", "null value"],
    )
    .await;
    still_answers(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_parquet_file_is_named_with_its_worker() {
    let site = tempfile::tempdir().expect("tempdir");
    let table = site.path().join("lineitem");
    std::fs::create_dir_all(&table).expect("mkdir");
    let good = tpch_sites()[0].join("lineitem/part-1.parquet");
    std::fs::copy(&good, table.join("part-1.parquet")).expect("copy");
    std::fs::write(table.join("broken.parquet"), b"PAR1 this is not parquet").expect("write");
    let sites = vec![tpch_sites()[1].clone(), site.path().to_path_buf()];
    let options = CoordinatorOptions {
        models_dir: Some(models_dir()),
        ..Default::default()
    };
    let cluster =
        EmbeddedCluster::start_with_policy(options, &sites, shoal_engine::demo_site_policy())
            .await
            .expect("cluster");
    expect_error(
        &cluster,
        COUNT,
        &["lineitem/broken.parquet", "worker 'site-2'"],
    )
    .await;
    // Statements not touching the broken table still run.
    let models = cluster.sql("SHOW MODELS").await.expect("SHOW MODELS");
    assert_eq!(models.batches[0].num_rows(), 5);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_fails_queries_quickly_and_a_replacement_restores_them() {
    let options = CoordinatorOptions {
        models_dir: Some(models_dir()),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let sites = tpch_sites();
    let mut cluster =
        EmbeddedCluster::start_with_policy(options, &sites, shoal_engine::demo_site_policy())
            .await
            .expect("cluster");
    still_answers(&cluster).await;

    let dead = cluster.workers.pop().expect("three workers");
    let dead_name = dead.name.clone();
    dead.kill();
    // Right after the crash the coordinator may not know yet: the query must still end, fast.
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), cluster.sql(COUNT)).await;
    assert!(result.is_ok(), "query hung after a worker died");
    let err = result
        .expect("bounded")
        .map(|_| ())
        .expect_err("a third of the data is gone")
        .to_string();
    assert!(err.contains(&format!("worker '{dead_name}'")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // Once the heartbeat timeout passes, the error names the worker and its files.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    expect_error(
        &cluster,
        COUNT,
        &[&format!("worker '{dead_name}'"), "lineitem/part-5.parquet"],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));

    // A worker serving the same site folder under the same name brings the data back.
    cluster
        .add_worker(dead_name, sites[2].clone())
        .await
        .expect("replacement worker");
    still_answers(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_folder_is_refused_at_start() {
    let options = WorkerOptions::new(
        std::path::PathBuf::from("/definitely/not/here"),
        "http://127.0.0.1:1".into(),
    );
    let err = WorkerProcess::start(options)
        .await
        .expect_err("no such folder");
    assert!(
        err.to_string().contains("/definitely/not/here"),
        "error names the folder: {err}"
    );
}

#[test]
fn a_models_folder_with_a_file_that_is_not_onnx_is_refused_naming_it() {
    let options = CoordinatorOptions {
        models_dir: Some(bad_models_dir()),
        ..Default::default()
    };
    let err = Coordinator::new(options).expect_err("not ONNX").to_string();
    assert!(err.contains("not_onnx.onnx"), "{err}");
    assert!(err.contains("not a valid ONNX model"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_sql_cannot_read_files_or_change_settings() {
    let cluster = start_cluster().await;
    for sql in [
        "CREATE EXTERNAL TABLE secrets STORED AS PARQUET LOCATION '/etc/'",
        "COPY (SELECT 1) TO '/tmp/shoal-copy-test.parquet'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        expect_error(&cluster, sql, &["not supported"]).await;
    }
    still_answers(&cluster).await;
    cluster.stop().await;
}

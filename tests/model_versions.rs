//! A statement scores every row with the model versions it was planned with, on the
//! coordinator and on every worker, whether or not a worker has heard of them yet.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_tests::{assert_same_rows, models_dir, to_rows, tpch_sites};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_score_with_the_version_the_statement_was_planned_with() {
    let models = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, models.path().join(path.file_name().unwrap())).unwrap();
    }
    // Heartbeats (which carry the registry listing to the workers) far apart: during this
    // test the workers know only the listing they got when they registered.
    let options = CoordinatorOptions {
        models_dir: Some(models.path().to_path_buf()),
        heartbeat_interval: Duration::from_secs(120),
        heartbeat_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let cluster = EmbeddedCluster::start_with_policy(
        options,
        &tpch_sites(),
        shoal_engine::demo_site_policy(),
    )
    .await
    .expect("start the cluster");

    // Registered on the coordinator only: no worker has been told of `fresh_price`.
    let bytes = std::fs::read(models_dir().join("price.onnx")).unwrap();
    cluster
        .coordinator
        .models()
        .register("fresh_price", |_| (bytes, "{}".into()))
        .unwrap();

    let query = |model: &str| {
        format!(
            "SELECT l_returnflag, count(*) AS n, \
             round(sum(predict('{model}', l_quantity, l_discount)), 2) AS price \
             FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
        )
    };
    let fresh = cluster.sql(&query("fresh_price")).await.unwrap();
    // The model ran on the sites, which fetched the pinned version by its hash.
    assert!(fresh.report.distributed, "{:?}", fresh.report);
    let known = cluster.sql(&query("price")).await.unwrap();
    assert_same_rows(
        "a model registered a moment ago",
        &to_rows(&known.batches),
        &to_rows(&fresh.batches),
    );
    cluster.stop().await;
}

//! Snapshots of shoal's `EXPLAIN`: the stages of TPC-H's single-table queries, shoal's own
//! statements and the example pipelines, and which worker reads which file. A change in
//! planning or placement shows up here as a reviewed diff (`INSTA_UPDATE=always` rewrites
//! the files under `tests/snapshots/`; workers' ports are redacted).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::AsArray;
use shoal_engine::protocol::{PipelineEvent, PipelineMode, PipelineRequest};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_tests::{TPCH_Q1, TPCH_Q6, models_dir, repo_root, tpch_sites};

/// The test cluster, its scans split in 2 partitions per site whatever the machine's cores.
async fn start_cluster() -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models_dir()),
        target_partitions: Some(2),
        ..Default::default()
    };
    EmbeddedCluster::start_with_policy(options, &tpch_sites(), shoal_engine::demo_site_policy())
        .await
        .expect("start the embedded cluster")
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo_root().join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(r"https?://127\.0\.0\.1:\d+", "http://127.0.0.1:<port>");
    settings
}

async fn explain(cluster: &EmbeddedCluster, sql: &str) -> String {
    let out = cluster
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    let mut text = String::new();
    for batch in &out.batches {
        for line in batch.column(0).as_string::<i32>().iter().flatten() {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_placement_of_statements() {
    let cluster = start_cluster().await;
    let statements = [
        ("tpch_q1", TPCH_Q1.to_string()),
        ("tpch_q6", TPCH_Q6.to_string()),
        (
            "predict_by_flag",
            "SELECT l_returnflag, sum(predict('return_risk', l_quantity, l_extendedprice, \
             l_discount, l_tax)) FROM lineitem GROUP BY l_returnflag"
                .to_string(),
        ),
        (
            "point_lookup",
            "SELECT l_comment FROM lineitem WHERE l_orderkey = 1 AND l_linenumber = 1".to_string(),
        ),
        ("show_models", "SHOW MODELS".to_string()),
        (
            "create_model",
            "CREATE MODEL m AS TRAIN linear PREDICTING l_tax \
             FROM (SELECT l_quantity, l_discount, l_tax FROM lineitem WHERE l_shipmode = 'AIR')"
                .to_string(),
        ),
    ];
    for (name, sql) in statements {
        let text = explain(&cluster, &sql).await;
        settings().bind(|| insta::assert_snapshot!(format!("explain_{name}"), text, &sql));
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_placement_of_example_pipelines() {
    let cluster = start_cluster().await;
    for name in [
        "return_risk_by_flag",
        "price_predictions",
        "ab_compare",
        "shipping_text",
    ] {
        let path = repo_root().join(format!("examples/pipelines/{name}.toml"));
        let request = PipelineRequest {
            file: format!("examples/pipelines/{name}.toml"),
            text: std::fs::read_to_string(&path).unwrap(),
            params: vec![],
            mode: PipelineMode::Explain,
            run_id: None,
            resume: false,
            partial: false,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut text = String::new();
        let collect = async {
            while let Some(event) = rx.recv().await {
                match event {
                    PipelineEvent::Step { line } => text.push_str(&format!("step: {line}\n")),
                    PipelineEvent::Explain { output, text: plan } => {
                        text.push_str(&format!("output {output}:\n{plan}"))
                    }
                    _ => {}
                }
            }
        };
        let (outcome, ()) = tokio::join!(
            cluster
                .coordinator
                .pipeline(request, &shoal_engine::security::Principal::Open, tx),
            collect
        );
        outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        settings().bind(|| insta::assert_snapshot!(format!("pipeline_{name}"), text));
    }
    cluster.stop().await;
}

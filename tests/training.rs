//! Training on the cluster: `CREATE MODEL` moves statistics and model updates, never rows;
//! the models match the known answer of the `visits` data and the single-node result, and
//! `predict` / `evaluate` use them at once, with the same answers on the cluster and in one
//! process.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float64Type;
use shoal_engine::visits::{COST_WEIGHTS, FEATURES, readmission_logit_sql};
use shoal_engine::{CoordinatorOptions, EmbeddedCluster};
use shoal_operators::ModelProvider;
use shoal_operators::model::DirectoryModels;
use shoal_sql::train::{CreateModel, LocalRunner, create_model};
use shoal_tests::visits_sites;
use std::path::{Path, PathBuf};
use std::sync::Arc;

async fn cluster(models: &Path) -> EmbeddedCluster {
    let options = CoordinatorOptions {
        models_dir: Some(models.to_path_buf()),
        ..Default::default()
    };
    EmbeddedCluster::start_with_policy(options, &visits_sites(), shoal_engine::demo_site_policy())
        .await
        .expect("start the cluster")
}

async fn local(models: &Path) -> (datafusion::prelude::SessionContext, Arc<DirectoryModels>) {
    let registry = Arc::new(DirectoryModels::load(models).expect("registry"));
    let sites: Vec<PathBuf> = visits_sites();
    let dirs: Vec<&Path> = sites.iter().map(PathBuf::as_path).collect();
    let provider: Arc<dyn ModelProvider> = registry.clone();
    let ctx = shoal_sql::local_context(&dirs, provider)
        .await
        .expect("local session");
    (ctx, registry)
}

fn f64_at(batches: &[RecordBatch], column: usize) -> f64 {
    batches[0]
        .column(column)
        .as_primitive::<Float64Type>()
        .value(0)
}

fn report(models: &Path, versioned: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(models.join(format!("{versioned}.json"))).expect("metadata");
    serde_json::from_str(&text).expect("metadata is JSON")
}

const COLUMNS: &str = "age, bmi, systolic_bp, glucose, prior_visits";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linear_regression_on_three_sites_equals_the_single_node_solution() {
    let (cluster_models, local_models) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cluster = cluster(cluster_models.path()).await;
    let sql = format!(
        "CREATE MODEL cost AS TRAIN linear PREDICTING cost FROM (SELECT {COLUMNS}, cost FROM visits)"
    );
    let out = cluster.sql(&sql).await.expect("train on the cluster");
    assert_eq!(out.batches[0].num_rows(), 2);
    let (ctx, registry) = local(local_models.path()).await;
    create_model(
        &CreateModel::parse(&sql).unwrap(),
        &LocalRunner(&ctx),
        &registry,
    )
    .await
    .expect("train in one process");
    let on_cluster = report(cluster_models.path(), "cost@v1");
    let single = report(local_models.path(), "cost@v1");
    let (a, b) = (
        on_cluster["linear_mse"].as_f64().unwrap(),
        single["linear_mse"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-9 * a,
        "cluster mse {a} vs single-node {b}"
    );
    assert_eq!(on_cluster["rows_per_site"].as_object().unwrap().len(), 3);
    // The noise is 300 on costs of ~8,000: the fit's error is the noise.
    assert!((a.sqrt() - 300.0).abs() < 10.0, "rmse {}", a.sqrt());
    // Both predict the same, and recover the generating coefficients (cost per year of
    // age: the difference of two predictions a year apart).
    let probe = |model: &str, age: f64| {
        format!("predict('{model}', CAST({age} AS DOUBLE), 28.0, 130.0, 120.0, CAST(3 AS BIGINT))")
    };
    let slope = format!(
        "SELECT CAST({} AS DOUBLE) - CAST({} AS DOUBLE) AS slope",
        probe("cost", 61.0),
        probe("cost", 60.0)
    );
    let cluster_slope = f64_at(&cluster.sql(&slope).await.unwrap().batches, 0);
    assert!(
        (cluster_slope - COST_WEIGHTS[0]).abs() < 1.0,
        "age slope {cluster_slope}"
    );
    let single_slope = f64_at(&ctx.sql(&slope).await.unwrap().collect().await.unwrap(), 0);
    assert!((cluster_slope - single_slope).abs() < 1e-2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federated_logistic_regression_reaches_the_known_answer_sending_only_updates() {
    let models = tempfile::tempdir().unwrap();
    let cluster = cluster(models.path()).await;
    let out = cluster
        .sql(&format!(
            "CREATE MODEL readmit OPTIONS (rounds = 15, learning_rate = 0.5, holdout = 0.2) \
             AS TRAIN logistic PREDICTING readmitted FROM (SELECT {COLUMNS}, readmitted FROM visits)"
        ))
        .await
        .expect("train");
    let steps = &out.batches[0];
    assert_eq!(steps.num_rows(), 1 + 15 + 1, "statistics, 15 rounds, final");
    // Accuracy of the federated model against the Bayes-optimal rule of the generator.
    let features = FEATURES.join(", ");
    let accuracy = cluster
        .sql(&format!(
            "SELECT evaluate('accuracy', predict_proba('readmit', {features}), readmitted), \
             avg(CASE WHEN ({}) > 0 THEN readmitted ELSE 1 - readmitted END) FROM visits",
            readmission_logit_sql()
        ))
        .await
        .unwrap();
    let (model, optimal) = (f64_at(&accuracy.batches, 0), f64_at(&accuracy.batches, 1));
    println!("FIGURE federated logistic accuracy {model:.4} vs Bayes-optimal {optimal:.4}");
    assert!(optimal - model < 0.01, "model {model} vs optimal {optimal}");
    // Only updates moved: per round each site sent its partitions' states (6 weights and
    // counts each), whatever its 20,000 rows.
    let meta = report(models.path(), "readmit@v1");
    for round in meta["trials"][0]["rounds"].as_array().unwrap() {
        for (site, s) in round["summary"]["sites"].as_object().unwrap() {
            let bytes = s["bytes_sent"].as_u64().unwrap();
            assert!(bytes > 0 && bytes <= 4 * 200, "{site} sent {bytes} bytes");
            assert_eq!(
                s["train_rows"].as_u64().unwrap() + s["holdout_rows"].as_u64().unwrap(),
                20_000
            );
        }
        assert!(
            round["network_bytes"].as_u64().unwrap() < 64 * 1024,
            "{round}"
        );
    }
    // The same metric in one process over the same files and model agrees.
    let (ctx, _) = local(models.path()).await;
    let auc = format!(
        "SELECT evaluate('auc', predict_proba('readmit', {features}), readmitted) FROM visits"
    );
    let on_cluster = f64_at(&cluster.sql(&auc).await.unwrap().batches, 0);
    let single = f64_at(&ctx.sql(&auc).await.unwrap().collect().await.unwrap(), 0);
    assert!(
        (on_cluster - single).abs() < 1e-12,
        "{on_cluster} vs {single}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_random_search_on_the_cluster_scores_trials_on_held_out_rows_and_registers_the_best() {
    let models = tempfile::tempdir().unwrap();
    let cluster = cluster(models.path()).await;
    let out = cluster
        .sql(&format!(
            "CREATE MODEL tuned OPTIONS (search = 'random', trials = 3, seed = 4, \
             learning_rate = [0.00001, 0.05, 0.5], hidden = [4, 8], rounds = 4) \
             AS TRAIN mlp PREDICTING readmitted FROM (SELECT {COLUMNS}, readmitted FROM visits)"
        ))
        .await
        .expect("search");
    let table = &out.batches[0];
    assert_eq!(table.num_rows(), 3);
    let holdout = table.column(5).as_primitive::<Float64Type>();
    let best = table.column(7).as_boolean();
    let chosen = (0..3).find(|i| best.value(*i)).unwrap();
    for i in 0..3 {
        assert!(
            holdout.value(chosen) <= holdout.value(i),
            "trial {i} beats the chosen one"
        );
    }
    // Every trial saw the same held-out rows: 20% of each site's, by row hash.
    let meta = report(models.path(), "tuned@v1");
    for trial in meta["trials"].as_array().unwrap() {
        for (_, s) in trial["final_round"]["summary"]["sites"]
            .as_object()
            .unwrap()
        {
            let held = s["holdout_rows"].as_u64().unwrap();
            assert!((3_600..4_400).contains(&held), "{held} held out of 20,000");
        }
    }
    assert!(models.path().join("tuned@v1.onnx").is_file());
    cluster.stop().await;
}

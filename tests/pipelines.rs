//! Pipelines on the 3-worker embedded cluster: every example pipeline against the same job
//! written in SQL on single-node DataFusion, the local Parquet sink's commit, and the
//! validation errors a user sees.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use shoal_engine::EmbeddedCluster;
use shoal_engine::protocol::{PipelineEvent, PipelineMode, PipelineRequest};
use shoal_operators::sink::staging::ManifestFile;
use shoal_tests::{
    assert_same_rows, local_context, pipeline_rows as rows_of, repo_root, run_pipeline as run,
    start_cluster, to_rows, tpch_sites,
};

fn example(name: &str) -> (String, String) {
    let dir = repo_root().join("examples/pipelines");
    let toml = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
    let sql = std::fs::read_to_string(dir.join(format!("{name}.sql"))).unwrap();
    (toml, sql)
}

/// The files of the first output event, and whether they were already committed.
fn output_files(events: &[PipelineEvent]) -> (Vec<ManifestFile>, bool) {
    events
        .iter()
        .find_map(|e| match e {
            PipelineEvent::Output {
                files,
                already_committed,
                ..
            } => Some((files.clone(), *already_committed)),
            _ => None,
        })
        .expect("an output event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_pipelines_equal_their_sql() {
    let cluster = start_cluster().await;
    let local = local_context().await;
    for name in ["return_risk_by_flag", "ab_compare", "shipping_text"] {
        let (toml, sql) = example(name);
        let events = run(&cluster, name, &toml, PipelineMode::Run, None)
            .await
            .unwrap();
        let actual = to_rows(&rows_of(&events));
        let expected = to_rows(&local.sql(&sql).await.unwrap().collect().await.unwrap());
        assert!(!expected.is_empty(), "{name}: the SQL returned nothing");
        assert_same_rows(name, &expected, &actual);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_parquet_sink_commits_once_and_equals_sql() {
    let cluster = start_cluster().await;
    let (toml, sql) = example("price_predictions");
    let run_id = format!("test-{}", std::process::id());
    let events = run(
        &cluster,
        "price_predictions",
        &toml,
        PipelineMode::Run,
        Some(&run_id),
    )
    .await
    .unwrap();
    let (files, committed_before) = output_files(&events);
    assert!(!committed_before, "a new run id was run");
    assert!(files.len() >= 3, "one file or more per site: {files:?}");
    // Read back what each site wrote, where it wrote it.
    let sites = tpch_sites();
    let mut written = Vec::new();
    for f in &files {
        let index: usize = f.site.trim_start_matches("site-").parse().unwrap();
        let path = sites[index - 1].join(".shoal-output").join(&f.file);
        let bytes = std::fs::read(&path).unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f.sha256,
            "{}",
            path.display()
        );
        let reader = ParquetRecordBatchReader::try_new(bytes::Bytes::from(bytes), 8192).unwrap();
        written.extend(reader.map(Result::unwrap));
        let staging = path
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(format!(".staging-{run_id}"));
        assert!(
            !staging.exists(),
            "staging left behind: {}",
            staging.display()
        );
    }
    let mut actual = to_rows(&written);
    let local = local_context().await;
    let mut expected = to_rows(&local.sql(&sql).await.unwrap().collect().await.unwrap());
    actual.sort();
    expected.sort();
    assert_eq!(
        files.iter().map(|f| f.rows).sum::<u64>() as usize,
        expected.len()
    );
    assert_same_rows("price_predictions", &expected, &actual);

    // The same run id again: nothing is rewritten, the stored manifest comes back.
    let again = run(
        &cluster,
        "price_predictions",
        &toml,
        PipelineMode::Run,
        Some(&run_id),
    )
    .await
    .unwrap();
    let (repeat, committed) = output_files(&again);
    assert!(committed);
    let mut a: Vec<_> = repeat.iter().map(|f| f.file.clone()).collect();
    let mut b: Vec<_> = files.iter().map(|f| f.file.clone()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_errors_name_key_position_and_nearest_name() {
    let cluster = start_cluster().await;
    let base = example("return_risk_by_flag").0;
    let cases: Vec<(String, &[&str])> = vec![
        (
            base.replace("model = \"return_risk\"", "modle = \"return_risk\""),
            &[
                "unknown field `modle`",
                "did you mean 'model'?",
                "bad.toml:23:1",
            ],
        ),
        (
            base.replace("input = \"priced\"", "input = \"prised\""),
            &[
                "[model.risk.input] no node named 'prised'",
                "did you mean 'priced'?",
                "bad.toml:22:9",
            ],
        ),
        (
            base.replace("model = \"return_risk\"", "model = \"return_rsk\""),
            &["no model named 'return_rsk'", "did you mean 'return_risk'?"],
        ),
        (
            base.replace("\"l_tax\"]\npredict_proba", "\"l_taxx\"]\npredict_proba"),
            &[
                "[model.risk.features[3]]",
                "l_taxx",
                "did you mean 'l_tax'?",
            ],
        ),
        (
            base.replace("${since}", "${sinse}"),
            &["unknown parameter '${sinse}'", "did you mean 'since'?"],
        ),
        (
            base.replace(
                "predict_proba = \"risk\"",
                "predict_proba = \"risk\"\nbatch_size = \"big\"",
            ),
            &[
                "invalid type: string \"big\", expected u64",
                "model.risk.batch_size",
            ],
        ),
        (
            base.replace("input = \"items\"", "input = \"by_flag\""),
            &["form a cycle"],
        ),
        (
            base.replace("table = \"lineitem\"", "table = \"lineitems\""),
            &["no table named 'lineitems'", "did you mean 'lineitem'?"],
        ),
        (
            base.replace(
                "[sink.report]\ninput = \"by_flag\"\nkind = \"client\"\n",
                "",
            ),
            &["the pipeline has no sink"],
        ),
    ];
    for (text, wanted) in cases {
        let err = run(&cluster, "bad.toml", &text, PipelineMode::Validate, None)
            .await
            .expect_err("the pipeline is invalid");
        for w in wanted {
            assert!(err.contains(w), "expected {w:?} in:\n{err}");
        }
    }
    // The example itself validates and explains without running anything.
    run(&cluster, "ok.toml", &base, PipelineMode::Validate, None)
        .await
        .unwrap();
    let explain = run(&cluster, "ok.toml", &base, PipelineMode::Explain, None)
        .await
        .unwrap();
    let text = explain
        .iter()
        .find_map(|e| match e {
            PipelineEvent::Explain { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        text.contains("worker 'site-1'") && text.contains("Data movement"),
        "{text}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sink_run_leaves_nothing_behind_on_any_site() {
    let cluster = start_cluster().await;
    // Scoring fails on the workers part-way: a null feature in some rows of every site.
    let text = r#"
[source.items]
table = "lineitem"

[features.holes]
input = "items"
columns = { qty = "CASE WHEN l_linenumber = 7 THEN NULL ELSE l_quantity END" }

[model.price]
input = "holes"
model = "price"
features = ["qty", "l_discount"]
predict = "price_hat"

[sink.out]
input = "price"
kind = "local_parquet"
path = "predictions/failing"
"#;
    let run_id = format!("failing-{}", std::process::id());
    let err = run(
        &cluster,
        "failing.toml",
        text,
        PipelineMode::Run,
        Some(&run_id),
    )
    .await
    .expect_err("a null feature fails the run");
    assert!(err.contains("null") && err.contains("price"), "{err}");
    for site in tpch_sites() {
        let folder = site.join(".shoal-output/predictions/failing");
        for name in [format!(".staging-{run_id}"), format!("run-{run_id}")] {
            assert!(
                !folder.join(&name).exists(),
                "{} left in {}",
                name,
                folder.display()
            );
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_commit_fails_on_one_site_is_taken_back_on_the_others() {
    let cluster = start_cluster().await;
    // A union is not map-only: the output is one run, committed on every site at the end.
    let text = r#"
[source.rail]
table = "lineitem"
columns = ["l_orderkey", "l_shipmode"]
filter = "l_shipmode = 'RAIL'"

[source.truck]
table = "lineitem"
columns = ["l_orderkey", "l_shipmode"]
filter = "l_shipmode = 'TRUCK'"

[union.ground]
inputs = ["rail", "truck"]

[sink.out]
input = "ground"
kind = "local_parquet"
path = "predictions/all-or-nothing"
"#;
    let run_id = format!("rollback-{}", std::process::id());
    let sites = tpch_sites();
    // The last site's commit fails: its run folder is taken by something else.
    let blocked = sites[2].join(format!(
        ".shoal-output/predictions/all-or-nothing/run-{run_id}"
    ));
    std::fs::create_dir_all(blocked.join("not-a-run")).unwrap();
    let err = run(
        &cluster,
        "union.toml",
        text,
        PipelineMode::Run,
        Some(&run_id),
    )
    .await
    .expect_err("the last site cannot commit");
    assert!(err.contains("site-3"), "{err}");
    for site in &sites[..2] {
        let run = site.join(format!(
            ".shoal-output/predictions/all-or-nothing/run-{run_id}"
        ));
        assert!(!run.exists(), "{} was left committed", run.display());
    }
    // Once the obstacle is gone, the same run id runs and commits on every site.
    std::fs::remove_dir_all(&blocked).unwrap();
    let events = run(
        &cluster,
        "union.toml",
        text,
        PipelineMode::Run,
        Some(&run_id),
    )
    .await
    .unwrap();
    let (files, already) = output_files(&events);
    assert!(!already, "the failed run was not left committed anywhere");
    let sites_written: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.site.as_str()).collect();
    assert_eq!(sites_written.len(), 3, "{files:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_runs_through_the_flight_action_as_shoal_run_sends_it() {
    let cluster = start_cluster().await;
    let (toml, sql) = example("return_risk_by_flag");
    let request = PipelineRequest {
        file: "return_risk_by_flag.toml".into(),
        text: toml.replace("1995-01-01", "1994-06-01"),
        params: vec![("since".into(), "1995-01-01".into())],
        mode: PipelineMode::Run,
        run_id: None,
        resume: false,
        partial: false,
    };
    let connector = shoal_engine::security::Connector::new(None, None).unwrap();
    let mut events = Vec::new();
    shoal_engine::client::action_stream(
        &connector,
        &cluster.url,
        shoal_engine::protocol::ACTION_PIPELINE,
        serde_json::to_vec(&request).unwrap(),
        |body| {
            events.push(serde_json::from_slice::<PipelineEvent>(body).unwrap());
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(matches!(events.last(), Some(PipelineEvent::Done { .. })));
    let local = local_context().await;
    let expected = to_rows(&local.sql(&sql).await.unwrap().collect().await.unwrap());
    assert_same_rows("over Flight", &expected, &to_rows(&rows_of(&events)));

    // A pipeline error comes back as the action's status, with the file position.
    let mut bad = request.clone();
    bad.text = bad.text.replace("input = \"priced\"", "input = \"prised\"");
    let err = shoal_engine::client::action_stream(
        &connector,
        &cluster.url,
        shoal_engine::protocol::ACTION_PIPELINE,
        serde_json::to_vec(&bad).unwrap(),
        |_| Ok(()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("return_risk_by_flag.toml:22:9") && err.contains("did you mean 'priced'?"),
        "{err}"
    );
    cluster.stop().await;
}

/// A cluster over the `visits` sample with an empty registry of its own.
async fn visits_cluster(models: &std::path::Path) -> EmbeddedCluster {
    let options = shoal_engine::CoordinatorOptions {
        models_dir: Some(models.to_path_buf()),
        ..Default::default()
    };
    EmbeddedCluster::start_with_policy(
        options,
        &shoal_tests::visits_sites(),
        shoal_engine::demo_site_policy(),
    )
    .await
    .expect("start the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn train_then_ab_compare_pipelines_register_models_and_equal_their_sql() {
    let models = tempfile::tempdir().unwrap();
    let cluster = visits_cluster(models.path()).await;
    let toml =
        std::fs::read_to_string(repo_root().join("examples/pipelines/train_readmission.toml"))
            .unwrap();
    let events = run(
        &cluster,
        "train_readmission.toml",
        &toml,
        PipelineMode::Run,
        None,
    )
    .await
    .unwrap();
    let trained: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Output { output, kind, .. } if kind == "train" => Some(output.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(trained, ["readmission", "readmission_mlp"]);
    for name in [
        "readmission@v1.onnx",
        "readmission_mlp@v1.onnx",
        "readmission.onnx",
    ] {
        assert!(models.path().join(name).is_file(), "{name} not registered");
    }
    // The A/B pipeline on the models just trained equals the same job in SQL on the cluster.
    let (toml, sql) = example("ab_readmission");
    let events = run(
        &cluster,
        "ab_readmission.toml",
        &toml,
        PipelineMode::Run,
        None,
    )
    .await
    .unwrap();
    let actual = to_rows(&rows_of(&events));
    let expected = to_rows(&cluster.sql(&sql).await.unwrap().batches);
    assert_eq!(actual.len(), 3, "one row per site: {actual:?}");
    assert_same_rows("ab_readmission", &expected, &actual);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn train_node_errors_name_the_key() {
    let models = tempfile::tempdir().unwrap();
    let cluster = visits_cluster(models.path()).await;
    let base =
        std::fs::read_to_string(repo_root().join("examples/pipelines/train_readmission.toml"))
            .unwrap();
    let cases: Vec<(String, &[&str])> = vec![
        (
            base.replace("kind = \"logistic\"", "kind = \"logistc\""),
            &[
                "[train.readmission.kind]",
                "unknown model kind 'logistc'",
                "did you mean 'logistic'?",
            ],
        ),
        (
            base.replace(
                "label = \"readmitted\"\noptions = { rounds = 15",
                "label = \"readmited\"\noptions = { rounds = 15",
            ),
            &[
                "[train.readmission.label]",
                "no column 'readmited'",
                "did you mean 'readmitted'?",
            ],
        ),
        (
            base.replace("learning_rate = 0.5", "learning_rat = 0.5"),
            &[
                "[train.readmission.options]",
                "unknown option 'learning_rat'",
                "did you mean 'learning_rate'?",
            ],
        ),
        (
            base.replace("hidden = 8", "hidden = [4, 8]"),
            &["[train.readmission_mlp.options]", "add search"],
        ),
    ];
    for (text, expected) in cases {
        let err = run(&cluster, "bad.toml", &text, PipelineMode::Validate, None)
            .await
            .unwrap_err();
        for part in expected {
            assert!(err.contains(part), "expected '{part}' in:\n{err}");
        }
    }
    assert!(
        !models.path().join("readmission.onnx").exists(),
        "validation trained nothing"
    );
    cluster.stop().await;
}

/// A model node's `batch_size` reaches the workers that run it (with the statement's model
/// pins): the model runs at least once per `batch_size` rows, not once per Arrow batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_nodes_batch_size_is_honoured_on_the_workers() {
    let cluster = start_cluster().await;
    let rows = cluster
        .sql("SELECT count(*) FROM lineitem")
        .await
        .unwrap()
        .batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0) as u64;
    let toml = r#"
[source.items]
table = "lineitem"
columns = ["l_returnflag", "l_quantity", "l_discount"]

[model.price]
input = "items"
model = "price"
features = ["l_quantity", "l_discount"]
predict = "price_hat"
batch_size = 100

[aggregate.by_flag]
input = "price"
group_by = ["l_returnflag"]
values = { items = "count(*)", price = "round(sum(price_hat), 2)" }
order_by = ["l_returnflag"]

[sink.report]
input = "by_flag"
kind = "client"
"#;
    // The counter is per process, and each nextest test is a process of its own.
    let runs_before = shoal_operators::model_runs();
    let events = run(&cluster, "batched.toml", toml, PipelineMode::Run, None)
        .await
        .unwrap();
    let runs = shoal_operators::model_runs() - runs_before;
    assert!(
        runs >= rows / 100,
        "{rows} rows in runs of at most 100 rows took only {runs} model runs"
    );
    let expected = to_rows(
        &local_context()
            .await
            .sql(
                "SELECT l_returnflag, count(*) AS items, \
                 round(sum(predict('price', l_quantity, l_discount)), 2) AS price \
                 FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    assert_same_rows("batched pipeline", &expected, &to_rows(&rows_of(&events)));
    cluster.stop().await;
}

/// A name written in a pipeline file is used as written, whatever its case: a features
/// column `shipmode_AIR`, a model node listing it, an aggregate grouping by `Mode_Flag`,
/// and the client sink's columns all keep their names (SQL would fold them unquoted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_case_names_go_through_features_model_and_sink_as_written() {
    let cluster = start_cluster().await;
    let toml = r#"
[source.items]
table = "lineitem"

[features.flags]
input = "items"
keep = ["l_quantity", "l_returnflag"]
columns = { shipmode_AIR = "CASE WHEN l_shipmode = 'AIR' THEN 1.0 ELSE 0.0 END", Mode_Flag = "l_returnflag" }

[model.scored]
input = "flags"
model = "price"
features = ["l_quantity", "shipmode_AIR"]
predict = "Price_Hat"

[aggregate.by_flag]
input = "scored"
group_by = ["Mode_Flag"]
values = { N_Air = "sum(\"shipmode_AIR\")", Avg_Price = "round(avg(\"Price_Hat\"), 4)" }

[sink.out]
input = "by_flag"
kind = "client"
"#;
    let events = run(&cluster, "mixed_case", toml, PipelineMode::Run, None)
        .await
        .unwrap();
    let batches = rows_of(&events);
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["Mode_Flag", "N_Air", "Avg_Price"]);
    let mut actual = to_rows(&batches);
    actual.sort();
    let local = local_context().await;
    let sql = "SELECT l_returnflag, sum(air), round(avg(predict('price', l_quantity, air)), 4) \
               FROM (SELECT l_quantity, l_returnflag, \
                     CASE WHEN l_shipmode = 'AIR' THEN 1.0 ELSE 0.0 END AS air FROM lineitem) \
               GROUP BY l_returnflag ORDER BY l_returnflag";
    let expected = to_rows(&local.sql(sql).await.unwrap().collect().await.unwrap());
    assert_eq!(actual, expected);

    // An SQL expression still follows SQL: unquoted, the name folds, and the error says how
    // to keep its case.
    let folded = toml.replace("sum(\\\"shipmode_AIR\\\")", "sum(shipmode_AIR)");
    assert_ne!(folded, toml);
    let err = run(
        &cluster,
        "mixed_case",
        &folded,
        PipelineMode::Validate,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.contains("\"shipmode_AIR\" (in double quotes)"), "{err}");
    cluster.stop().await;
}

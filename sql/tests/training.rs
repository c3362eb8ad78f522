//! `CREATE MODEL` in one process: exact linear regression, logistic regression and an MLP
//! by federated averaging over the partitions, searches, privacy options, and the trained
//! models used by `predict` right away.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use shoal_operators::ModelProvider;
use shoal_operators::model::DirectoryModels;
use shoal_sql::train::{CreateModel, LocalRunner, create_model};
use std::sync::Arc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Rows of (a, b, c, y_linear, y_class, y_xor) in `parts` partitions, deterministic.
fn table(rows: usize, parts: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("c", DataType::Int64, false),
        Field::new("y", DataType::Float64, false),
        Field::new("label", DataType::Int64, false),
        Field::new("xor", DataType::Int64, false),
    ]));
    let per_part = rows / parts;
    let batches = (0..parts)
        .map(|p| {
            let range = p * per_part..(p + 1) * per_part;
            let a: Vec<f64> = range
                .clone()
                .map(|i| ((i as f64) * 0.7311).sin() * 3.0 + p as f64)
                .collect();
            let b: Vec<f64> = range
                .clone()
                .map(|i| ((i as f64) * 1.917).cos() * 2.0)
                .collect();
            let c: Vec<i64> = range.clone().map(|i| (i % 7) as i64).collect();
            let y: Vec<f64> = (0..per_part)
                .map(|k| 2.0 + 3.0 * a[k] - 1.5 * b[k] + 0.25 * c[k] as f64)
                .collect();
            let label: Vec<i64> = (0..per_part)
                .map(|k| (a[k] - 1.5 - 2.0 * b[k] + 0.5 * ((k as f64) * 2.1).sin() > 0.0) as i64)
                .collect();
            let xor: Vec<i64> = (0..per_part)
                .map(|k| ((a[k] - p as f64 > 0.0) != (b[k] > 0.0)) as i64)
                .collect();
            vec![
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Float64Array::from(a)),
                        Arc::new(Float64Array::from(b)),
                        Arc::new(Int64Array::from(c)),
                        Arc::new(Float64Array::from(y)),
                        Arc::new(Int64Array::from(label)),
                        Arc::new(Int64Array::from(xor)),
                    ],
                )
                .expect("batch"),
            ]
        })
        .collect();
    MemTable::try_new(schema, batches).expect("table")
}

struct Setup {
    ctx: SessionContext,
    registry: Arc<DirectoryModels>,
    _dir: tempfile::TempDir,
}

fn setup(rows: usize) -> Result<Setup, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let registry = Arc::new(DirectoryModels::load(dir.path())?);
    let provider: Arc<dyn ModelProvider> = registry.clone();
    let state = shoal_sql::with_shoal_functions(
        datafusion::execution::SessionStateBuilder::new().with_default_features(),
        provider,
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_table("events", Arc::new(table(rows, 4)))?;
    Ok(Setup {
        ctx,
        registry,
        _dir: dir,
    })
}

async fn create(s: &Setup, sql: &str) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let statement = CreateModel::parse(sql)?;
    Ok(create_model(&statement, &LocalRunner(&s.ctx), &s.registry).await?)
}

async fn scalar_f64(ctx: &SessionContext, sql: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let column = batches[0].column(0).as_primitive::<Float64Type>();
    Ok(column.value(0))
}

#[tokio::test]
async fn linear_regression_is_exact_and_predict_uses_it_at_once() -> TestResult {
    let s = setup(4000)?;
    let table = create(
        &s,
        "CREATE MODEL price AS TRAIN linear PREDICTING y FROM (SELECT a, b, c, y FROM events)",
    )
    .await?;
    let steps: &StringArray = table.column(2).as_string();
    assert_eq!(steps.value(0), "statistics");
    assert_eq!(steps.value(1), "solved");
    let mse = table.column(4).as_primitive::<Float64Type>().value(1);
    assert!(mse < 1e-12, "{mse}");
    // The exported model reproduces y from the features (float32 precision).
    let worst = scalar_f64(
        &s.ctx,
        "SELECT max(abs(CAST(predict('price', a, b, c) AS DOUBLE) - y)) FROM events",
    )
    .await?;
    assert!(worst < 1e-3, "{worst}");
    let versions: Vec<String> = s.registry.list().into_iter().map(|m| m.name).collect();
    assert_eq!(versions, vec!["price", "price@v1"]);
    create(
        &s,
        "CREATE MODEL price AS TRAIN linear PREDICTING y FROM (SELECT a, y FROM events)",
    )
    .await?;
    assert!(s.registry.list().iter().any(|m| m.name == "price@v2"));
    Ok(())
}

#[tokio::test]
async fn logistic_regression_by_federated_averaging_learns_the_boundary() -> TestResult {
    let s = setup(8000)?;
    let table = create(
        &s,
        "CREATE MODEL churn OPTIONS (rounds = 10, learning_rate = 0.5, holdout = 0.2) \
         AS TRAIN logistic PREDICTING label FROM (SELECT a, b, label FROM events)",
    )
    .await?;
    let loss = table.column(4).as_primitive::<Float64Type>();
    let first_round = loss.value(1);
    let last = loss.value(table.num_rows() - 1);
    assert!(last < first_round * 0.6, "loss {first_round} -> {last}");
    let holdout_accuracy = table.column(6).as_primitive::<Float64Type>();
    assert!(holdout_accuracy.value(table.num_rows() - 1) > 0.9);
    let accuracy = scalar_f64(
        &s.ctx,
        "SELECT evaluate('accuracy', predict_proba('churn', a, b), label) FROM events",
    )
    .await?;
    assert!(accuracy > 0.9, "{accuracy}");
    let auc = scalar_f64(
        &s.ctx,
        "SELECT evaluate('auc', predict_proba('churn', a, b), label) FROM events",
    )
    .await?;
    assert!(auc > 0.95, "{auc}");
    // 4 partitions send 4 updates of 3 weights each round: bytes, not rows.
    let bytes: &StringArray = table.column(8).as_string();
    let sent: u64 = bytes.value(1).trim_start_matches("local=").parse()?;
    assert!(sent < 4 * 200, "{sent}");
    Ok(())
}

#[tokio::test]
async fn an_mlp_learns_what_a_linear_model_cannot() -> TestResult {
    let s = setup(8000)?;
    let query = "FROM (SELECT a - 0.0 AS a, b, xor FROM events)";
    create(
        &s,
        &format!("CREATE MODEL flat OPTIONS (rounds = 8) AS TRAIN logistic PREDICTING xor {query}"),
    )
    .await?;
    create(
        &s,
        &format!("CREATE MODEL deep OPTIONS (rounds = 15, hidden = 16, epochs = 2, learning_rate = 0.3) AS TRAIN mlp PREDICTING xor {query}"),
    )
    .await?;
    let accuracy = |model: &str| {
        format!("SELECT evaluate('accuracy', predict_proba('{model}', a, b), xor) FROM events")
    };
    let flat = scalar_f64(&s.ctx, &accuracy("flat")).await?;
    let deep = scalar_f64(&s.ctx, &accuracy("deep")).await?;
    assert!(
        deep > 0.85 && deep > flat + 0.15,
        "mlp {deep} vs logistic {flat}"
    );
    // compare_models tests the difference on the same rows.
    let batches = s
        .ctx
        .sql("SELECT compare_models('accuracy', predict_proba('flat', a, b), predict_proba('deep', a, b), xor) AS c FROM events")
        .await?
        .collect()
        .await?;
    let c = batches[0].column(0).as_struct();
    let difference = c
        .column_by_name("difference")
        .ok_or("difference")?
        .as_primitive::<Float64Type>()
        .value(0);
    let p = c
        .column_by_name("p_value")
        .ok_or("p_value")?
        .as_primitive::<Float64Type>()
        .value(0);
    assert!(
        (difference - (deep - flat)).abs() < 1e-9 && p < 1e-6,
        "{difference} {p}"
    );
    Ok(())
}

#[tokio::test]
async fn a_grid_search_returns_its_trials_and_registers_the_best() -> TestResult {
    let s = setup(4000)?;
    let table = create(
        &s,
        "CREATE MODEL tuned OPTIONS (search = 'grid', learning_rate = [0.0001, 0.5], rounds = [2, 6]) \
         AS TRAIN logistic PREDICTING label FROM (SELECT a, b, label FROM events)",
    )
    .await?;
    assert_eq!(table.num_rows(), 4);
    let best = table.column(7).as_boolean();
    let options: &StringArray = table.column(3).as_string();
    let chosen = (0..4).find(|i| best.value(*i)).ok_or("no best trial")?;
    assert_eq!(options.value(chosen), "learning_rate=0.5, rounds=6");
    let versions = table
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
    assert_eq!(versions.null_count(), 3);
    assert!(s.registry.list().iter().any(|m| m.name == "tuned@v1"));
    let _: &UInt64Array = table.column(2).as_primitive();
    Ok(())
}

#[tokio::test]
async fn clipping_noise_and_minimum_rows_are_applied_and_reported() -> TestResult {
    let s = setup(4000)?;
    create(
        &s,
        "CREATE MODEL private OPTIONS (rounds = 3, clip_norm = 0.01, noise_multiplier = 1.0, min_site_rows = 10) \
         AS TRAIN logistic PREDICTING label FROM (SELECT a, b, label FROM events)",
    )
    .await?;
    let metadata = std::fs::read_to_string(s._dir.path().join("private@v1.json"))?;
    let report: serde_json::Value = serde_json::from_str(&metadata)?;
    let round = &report["trials"][0]["rounds"][0]["summary"];
    assert!(round["noise_std"].as_f64().unwrap_or(0.0) > 0.0, "{round}");
    assert_eq!(round["sites"]["local"]["clipped"], true);
    let err = create(
        &s,
        "CREATE MODEL too_strict OPTIONS (min_site_rows = 1000000) AS TRAIN logistic \
         PREDICTING label FROM (SELECT a, b, label FROM events)",
    )
    .await
    .err()
    .ok_or("expected an error")?
    .to_string();
    assert!(err.contains("min_site_rows"), "{err}");
    assert!(!s.registry.list().iter().any(|m| m.name == "too_strict"));
    Ok(())
}

#[tokio::test]
async fn bad_training_input_is_named() -> TestResult {
    let s = setup(400)?;
    let err = |sql: &'static str| {
        let s = &s;
        async move {
            create(s, sql)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        }
    };
    assert!(
        err("CREATE MODEL m AS TRAIN logistic PREDICTING nope FROM (SELECT a, label FROM events)")
            .await
            .contains("label column 'nope' is not among")
    );
    assert!(err("CREATE MODEL m AS TRAIN logistic PREDICTING label FROM (SELECT 'x' AS t, label FROM events)")
        .await
        .contains("column 't' is Utf8"));
    assert!(
        err("CREATE MODEL m AS TRAIN logistic PREDICTING c FROM (SELECT a, c FROM events)")
            .await
            .contains("label 'c' must be 0 or 1")
    );
    assert!(
        err("CREATE MODEL m AS TRAIN forest PREDICTING y FROM (SELECT a, y FROM events)")
            .await
            .contains("unknown model kind 'forest'")
    );
    assert!(err("CREATE MODEL m AS TRAIN linear PREDICTING y FROM (SELECT a, a * 2 AS a2, y FROM events)")
        .await
        .contains("collinear"));
    assert!(s.registry.list().is_empty());
    // A registry without a folder is refused before any training runs.
    let statement = CreateModel::parse(
        "CREATE MODEL m AS TRAIN linear PREDICTING y FROM (SELECT a, y FROM events)",
    )?;
    let nowhere = DirectoryModels::default();
    let err = create_model(&statement, &LocalRunner(&s.ctx), &nowhere)
        .await
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains("--models DIR"), "{err}");
    Ok(())
}

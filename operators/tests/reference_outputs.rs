//! predict / predict_proba equal onnxruntime's own outputs (recorded by
//! tests/data/make_models.py with onnxruntime-python) within 1e-5, through the SQL path.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion::prelude::SessionContext;
use shoal_operators::model::{DirectoryModels, LoadedModel};
use shoal_operators::{Error, ModelProvider, ShoalOptions, ml_udfs};
use std::path::PathBuf;
use std::sync::Arc;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

struct Reference {
    inputs: Vec<Vec<Vec<f64>>>,
    outputs: serde_json::Map<String, serde_json::Value>,
}

fn reference(model: &str) -> Reference {
    let text = std::fs::read_to_string(data_dir().join(format!("reference/{model}.json")))
        .expect("reference file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let inputs = serde_json::from_value(doc["inputs"].clone()).expect("inputs");
    let outputs = doc["outputs"].as_object().expect("outputs").clone();
    Reference { inputs, outputs }
}

fn flat(value: &serde_json::Value) -> Vec<f64> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(flat).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().expect("number")],
        other => panic!("unexpected {other}"),
    }
}

/// A table `t(f0, f1, ...)` holding the reference inputs, one column per feature.
fn session(reference: &Reference) -> (SessionContext, usize) {
    session_with(reference, false)
}

/// [`session`], its dense models scored by shoal's native evaluator when `native_dense`.
fn session_with(reference: &Reference, native_dense: bool) -> (SessionContext, usize) {
    let provider: Arc<dyn ModelProvider> =
        Arc::new(DirectoryModels::load(&data_dir().join("models")).expect("models"));
    let mut options = ShoalOptions::default();
    options.inference.native_dense = native_dense;
    let mut config = SessionConfig::new();
    config.options_mut().extensions.insert(options);
    let mut builder = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config);
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(ml_udfs(provider));
    let ctx = SessionContext::new_with_state(builder.build());
    let mut columns: Vec<ArrayRef> = Vec::new();
    for input in &reference.inputs {
        let width = input[0].len();
        for j in 0..width {
            columns.push(Arc::new(Float32Array::from_iter_values(
                input.iter().map(|row| row[j] as f32),
            )));
        }
    }
    let fields: Vec<Field> = (0..columns.len())
        .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
        .collect();
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.clone()).expect("batch");
    ctx.register_batch("t", batch).expect("register");
    (ctx, columns.len())
}

async fn column(ctx: &SessionContext, sql: &str) -> ArrayRef {
    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    datafusion::arrow::compute::concat(&refs).expect("concat")
}

fn assert_close(model: &str, expected: &[f64], actual: &[f64]) {
    assert_eq!(expected.len(), actual.len(), "{model}: value count");
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert!(
            (e - a).abs() <= 1e-5,
            "{model}: value {i}: onnxruntime {e}, shoal {a}"
        );
    }
}

/// `SELECT <function>('<model>', f0, ..., fn-1) FROM t` as one column.
async fn call(ctx: &SessionContext, function: &str, model: &str, n: usize) -> ArrayRef {
    column(
        ctx,
        &format!("SELECT {function}('{model}', {}) FROM t", args(n)),
    )
    .await
}

fn args(n: usize) -> String {
    (0..n)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_labels_and_probabilities_match_onnxruntime() {
    // return_risk on ONNX Runtime and on the native dense evaluator.
    for (model, native_dense) in [
        ("return_risk", false),
        ("return_risk", true),
        ("ship_mode", false),
    ] {
        let reference = reference(model);
        let (ctx, n) = session_with(&reference, native_dense);
        if native_dense {
            let models = DirectoryModels::load(&data_dir().join("models")).expect("models");
            let loaded = models.model(model, None).expect("model");
            assert!(
                loaded.dense.is_some(),
                "{model} compiles to the dense evaluator"
            );
        }
        let labels = call(&ctx, "predict", model, n).await;
        let labels: Vec<f64> = labels
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|v| *v as f64)
            .collect();
        assert_eq!(labels, flat(&reference.outputs["label"]), "{model}: labels");

        let proba = call(&ctx, "predict_proba", model, n).await;
        let expected = flat(&reference.outputs["probabilities"]);
        let actual: Vec<f64> = match proba.data_type() {
            DataType::Float32 => {
                // Binary: the positive class, column 1 of [N, 2].
                let all: Vec<f64> = expected.chunks(2).map(|c| c[1]).collect();
                assert_close(model, &all, &as_f64(&proba));
                continue;
            }
            DataType::FixedSizeList(_, 3) => {
                let list: &FixedSizeListArray = proba.as_fixed_size_list();
                as_f64(list.values())
            }
            other => panic!("{model}: unexpected type {other}"),
        };
        assert_close(model, &expected, &actual);
    }
}

fn as_f64(array: &ArrayRef) -> Vec<f64> {
    array
        .as_primitive::<Float32Type>()
        .values()
        .iter()
        .map(|v| f64::from(*v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regressors_and_one_input_per_feature_match_onnxruntime() {
    for (model, output) in [("price", "variable"), ("two_inputs", "y")] {
        let reference = reference(model);
        let (ctx, n) = session(&reference);
        let values = call(&ctx, "predict", model, n).await;
        assert_close(model, &flat(&reference.outputs[output]), &as_f64(&values));
    }
}

#[test]
fn zipmap_probabilities_are_refused_with_a_fix() {
    let bytes = std::fs::read(data_dir().join("bad_models/zipmap.onnx")).expect("zipmap model");
    let model = LoadedModel::from_bytes("zipmap", "test", bytes).expect("loads");
    let err = model.signature.proba_output().expect_err("ZipMap");
    assert!(matches!(err, Error::ZipMapOutput { .. }));
    assert!(err.to_string().contains("zipmap': False"), "{err}");
    // predict (the label) still works on such a model.
    assert!(model.signature.predict_output().is_ok());
}

#[test]
fn bytes_that_are_not_onnx_are_refused_naming_the_origin() {
    let err = LoadedModel::from_bytes("junk", "junk.onnx", b"not a model".to_vec())
        .expect_err("not ONNX")
        .to_string();
    assert!(err.contains("'junk'") && err.contains("junk.onnx"), "{err}");
}

//! criterion benches for shoal's hot kernels, on one 8192-row batch (the batch size of a
//! scan): Arrow columns to the ONNX Runtime input, the feature kernels, the native tree
//! evaluator beside ONNX Runtime on the same model, and the merge of partial aggregate
//! states as the coordinator does it.
//!
//! ```text
//! make bench-kernels            # cargo bench -p shoal-benches --bench kernels
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Decimal128Array, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ort::value::TensorRef;
use shoal_operators::features::{categorical, numeric, stack_as_f32, text};
use shoal_operators::model::SessionPool;
use shoal_operators::model::dense::NativeDense;
use shoal_operators::model::trees::NativeTrees;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

const ROWS: usize = 8192;

/// A fixed-seed xorshift stream in [0, 1).
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// lineitem's four model features as the scan yields them: decimals and an integer.
fn lineitem_columns() -> Vec<ArrayRef> {
    let mut next = uniform(7);
    let quantity: Vec<i128> = (0..ROWS)
        .map(|_| (1.0 + next() * 50.0).floor() as i128 * 100)
        .collect();
    let price: Vec<i128> = (0..ROWS)
        .map(|_| (90_000.0 + next() * 10_000_000.0) as i128)
        .collect();
    let discount: Vec<i128> = (0..ROWS).map(|_| (next() * 11.0).floor() as i128).collect();
    let tax: Vec<i128> = (0..ROWS).map(|_| (next() * 9.0).floor() as i128).collect();
    [quantity, price, discount, tax]
        .into_iter()
        .map(|v| {
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
            ) as ArrayRef
        })
        .collect()
}

fn tensor_input(c: &mut Criterion) {
    let columns = lineitem_columns();
    let mut group = c.benchmark_group("arrow_to_ort_input");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("4 decimal columns -> f32 [8192, 4]", |b| {
        b.iter(|| stack_as_f32(black_box(&columns)).unwrap())
    });
    let floats: Vec<ArrayRef> = columns
        .iter()
        .map(|c| datafusion::arrow::compute::cast(c, &DataType::Float64).unwrap())
        .collect();
    group.bench_function("4 float64 columns -> f32 [8192, 4]", |b| {
        b.iter(|| stack_as_f32(black_box(&floats)).unwrap())
    });
    group.finish();
}

fn feature_kernels(c: &mut Criterion) {
    let mut next = uniform(11);
    let x: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..ROWS).map(|_| next() * 1000.0),
    ));
    let modes = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
    let words: Vec<String> = (0..ROWS)
        .map(|i| format!("carefully final {} deposits {}", modes[i % 7], i % 13))
        .collect();
    let plain: ArrayRef = Arc::new(StringArray::from(words));
    let keys: Vec<i32> = (0..ROWS).map(|i| (i % 7) as i32).collect();
    let dictionary: ArrayRef = Arc::new(
        DictionaryArray::<Int32Type>::try_new(
            keys.into(),
            Arc::new(StringArray::from(modes.to_vec())),
        )
        .unwrap(),
    );
    let vocabulary: Vec<String> = modes.iter().map(|s| s.to_string()).collect();
    let boundaries = [100.0, 250.0, 500.0, 750.0];

    let mut group = c.benchmark_group("feature_kernels");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("scale_standard", |b| {
        b.iter(|| numeric::scale_standard(black_box(&x), 500.0, 288.0).unwrap())
    });
    group.bench_function("scale_minmax", |b| {
        b.iter(|| numeric::scale_minmax(black_box(&x), 0.0, 1000.0).unwrap())
    });
    group.bench_function("log1p", |b| {
        b.iter(|| numeric::log1p(black_box(&x)).unwrap())
    });
    group.bench_function("clip", |b| {
        b.iter(|| numeric::clip(black_box(&x), 10.0, 900.0).unwrap())
    });
    group.bench_function("bucketize (4 boundaries)", |b| {
        b.iter(|| numeric::bucketize(black_box(&x), &boundaries).unwrap())
    });
    group.bench_function("impute", |b| {
        b.iter(|| numeric::impute(black_box(&x), 1.0).unwrap())
    });
    for (label, column) in [("strings", &plain), ("dictionary", &dictionary)] {
        group.bench_with_input(
            BenchmarkId::new("one_hot (7 values)", label),
            column,
            |b, column| b.iter(|| categorical::one_hot(black_box(column), &vocabulary).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("ordinal_encode", label),
            column,
            |b, column| {
                b.iter(|| categorical::ordinal_encode(black_box(column), &vocabulary).unwrap())
            },
        );
        group.bench_with_input(
            BenchmarkId::new("hash_bucket", label),
            column,
            |b, column| b.iter(|| categorical::hash_bucket(black_box(column), 1024).unwrap()),
        );
    }
    group.bench_function("token_count", |b| {
        b.iter(|| text::token_count(black_box(&plain)).unwrap())
    });
    group.bench_function("hashed_ngrams (2, 64)", |b| {
        b.iter(|| text::hashed_ngrams(black_box(&plain), 2, 64).unwrap())
    });
    let pattern = regex::Regex::new(r"deposits (\d+)").unwrap();
    group.bench_function("regex_extract", |b| {
        b.iter(|| text::regex_extract(black_box(&plain), &pattern, 1).unwrap())
    });
    group.finish();
}

fn tree_models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tree_models")
}

fn trees(c: &mut Criterion) {
    let columns: Vec<ArrayRef> = lineitem_columns();
    let x = stack_as_f32(&columns).unwrap();
    let mut group = c.benchmark_group("tree_ensemble");
    group.throughput(Throughput::Elements(ROWS as u64));
    for name in ["gbdt_regressor", "gbdt_binary", "forest_multiclass"] {
        let bytes = std::fs::read(tree_models().join(format!("{name}.onnx"))).unwrap();
        let native = NativeTrees::from_onnx(&bytes, 4).unwrap();
        group.bench_function(BenchmarkId::new("shoal native", name), |b| {
            b.iter(|| native.run(black_box(&x), ROWS))
        });
        let mut session = SessionPool::build_session(name, &bytes).unwrap();
        group.bench_function(BenchmarkId::new("onnxruntime", name), |b| {
            b.iter(|| {
                let input = TensorRef::from_array_view(([ROWS, 4usize], x.as_slice())).unwrap();
                let outputs = session.run(ort::inputs![input]).unwrap();
                black_box(outputs.len())
            })
        });
    }
    group.finish();
}

/// The native dense evaluator against ONNX Runtime on the committed dense models, 8192
/// rows a run (a scan batch): rows/s, and GMAC/s from each model's multiply-adds per row.
fn dense(c: &mut Criterion) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut next = uniform(11);
    let mut group = c.benchmark_group("dense_model");
    group.throughput(Throughput::Elements(ROWS as u64));
    // heavy_scorer takes seconds a run: 10 samples keep the group to minutes.
    group.sample_size(10);
    // (file, input width, multiply-adds per row: the sum of its layers' K x N)
    for (file, width, macs) in [
        (
            "dense_models/mlp_wide.onnx",
            21usize,
            21 * 64 + 64 * 32 + 32,
        ),
        ("models/return_risk.onnx", 4, 4 * 16 + 16 * 8 + 8),
        ("dense_models/mlp_multiclass.onnx", 4, 4 * 12 + 12 * 3),
        ("dense_models/logistic_multiclass.onnx", 6, 6 * 3),
        // 4-256, then 128 layers of 256-256 with Tanh, then 256-1.
        ("models/heavy_scorer.onnx", 4, 8_389_888),
    ] {
        let x: Vec<f32> = (0..ROWS * width).map(|_| next() as f32 - 0.5).collect();
        let bytes = std::fs::read(data.join(file)).unwrap();
        let name = file.rsplit('/').next().unwrap_or(file);
        let native = NativeDense::from_onnx(&bytes, width).unwrap();
        eprintln!("dense_model {name}: {macs} multiply-adds a row; GMAC/s = rows/s x {macs} / 1e9");
        group.bench_function(BenchmarkId::new("shoal native", name), |b| {
            b.iter(|| native.run(black_box(&x), ROWS))
        });
        let mut session = SessionPool::build_session(name, &bytes).unwrap();
        group.bench_function(BenchmarkId::new("onnxruntime", name), |b| {
            b.iter(|| {
                let input = TensorRef::from_array_view(([ROWS, width], x.as_slice())).unwrap();
                let outputs = session.run(ort::inputs![input]).unwrap();
                black_box(outputs.len())
            })
        });
    }
    group.finish();
}

/// What the coordinator does with the partial states of `avg(x) GROUP BY key` from 3 sites:
/// sum the (sum, count) pairs per group.
fn partial_merge(c: &mut Criterion) {
    let groups = 10_000i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("count", DataType::Int64, false),
    ]));
    let mut next = uniform(3);
    let sites: Vec<Vec<RecordBatch>> = (0..3)
        .map(|_| {
            vec![
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(0..groups)),
                        Arc::new(Float64Array::from_iter_values(
                            (0..groups).map(|_| next() * 1e4),
                        )),
                        Arc::new(Int64Array::from_iter_values(
                            (0..groups).map(|g| 1 + g % 100),
                        )),
                    ],
                )
                .unwrap(),
            ]
        })
        .collect();
    let ctx = SessionContext::new();
    ctx.register_table(
        "partials",
        Arc::new(MemTable::try_new(schema, sites).unwrap()),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("partial_aggregate_merge");
    group.throughput(Throughput::Elements(3 * groups as u64));
    group.bench_function("avg states, 3 sites x 10k groups", |b| {
        b.iter(|| {
            runtime.block_on(async {
                ctx.sql("SELECT key, sum(sum) / sum(count) FROM partials GROUP BY key")
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
            })
        })
    });
    group.finish();
}

/// One site's local epoch of federated training: mini-batch SGD over standardised rows
/// (logistic regression, and the MLP with 16 hidden units), and the statistics pass
/// (means and co-moments) every training starts with. Throughput is training rows.
fn local_training(c: &mut Criterion) {
    use shoal_operators::train::gram::Gram;
    use shoal_operators::train::network::{Architecture, Objective, SgdOptions, train};
    let features = 5;
    let mut next = uniform(11);
    let x: Vec<f64> = (0..ROWS * features).map(|_| next() * 2.0 - 1.0).collect();
    let y: Vec<f64> = x
        .chunks_exact(features)
        .map(|r| (r[0] - 0.5 * r[1] + 0.25 * r[2] > 0.0) as u8 as f64)
        .collect();
    let options = SgdOptions {
        learning_rate: 0.5,
        l2: 0.0,
        epochs: 1,
        batch_size: 32,
        seed: 1,
    };
    let mut group = c.benchmark_group("local_training");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, hidden) in [("logistic, 5 features", vec![]), ("mlp 5-16-1", vec![16])] {
        let arch = Architecture {
            inputs: features,
            hidden,
            objective: Objective::Binary,
        };
        let start = arch.initial_params(1);
        group.bench_function(format!("sgd epoch: {name}"), |b| {
            b.iter(|| {
                let mut params = start.clone();
                let never = shoal_operators::cancel::CancelToken::none();
                train(&arch, &mut params, &x, &y, &options, &never).map(|()| params)
            })
        });
    }
    let columns: Vec<Vec<f64>> = (0..features)
        .map(|j| x.iter().skip(j).step_by(features).copied().collect())
        .chain(std::iter::once(y.clone()))
        .collect();
    let slices: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    group.bench_function(
        "statistics: means and co-moments, 5 features + label",
        |b| {
            b.iter(|| {
                let mut gram = Gram::new(features);
                gram.add_columns(&slices);
                gram
            })
        },
    );
    group.finish();
}

criterion_group!(
    benches,
    tensor_input,
    feature_kernels,
    trees,
    dense,
    partial_merge,
    local_training
);
criterion_main!(benches);

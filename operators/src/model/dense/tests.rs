//! The native dense evaluator against ONNX Runtime, output by output, on every row: every
//! committed dense model, with rows of NaN, infinite, large and zero features.

use super::NativeDense;
use crate::model::trees::NativeTensor;
use std::path::PathBuf;

/// (file under tests/data, input width): every committed model a dense graph compiles for.
const MODELS: [(&str, usize); 10] = [
    ("models/return_risk.onnx", 4),
    ("models/heavy_scorer.onnx", 4),
    ("tree_models/mlp.onnx", 4),
    ("dense_models/mlp_multiclass.onnx", 4),
    ("dense_models/mlp_logistic.onnx", 4),
    ("dense_models/mlp_wide.onnx", 21),
    ("dense_models/logistic_binary.onnx", 6),
    ("dense_models/logistic_multiclass.onnx", 6),
    ("dense_models/linear_regression.onnx", 6),
    ("models/price.onnx", 2),
];

fn model_bytes(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(file);
    std::fs::read(path).expect("model file")
}

/// `n` rows from a fixed-seed generator over several magnitudes, then rows with NaN,
/// infinities, a huge value and zero in each feature in turn.
fn rows(n: usize, width: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity((n + 5 * width) * width);
    for row in 0..n {
        let scale = [0.1, 1.0, 10.0, 100.0][row % 4];
        x.extend((0..width).map(|_| ((next() - 0.5) * 2.0 * scale) as f32));
    }
    for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, 0.0] {
        for feature in 0..width {
            let mut row = vec![0.5f32; width];
            row[feature] = special;
            x.extend_from_slice(&row);
        }
    }
    x
}

fn ort_outputs(file: &str, x: &[f32], rows: usize, width: usize) -> Vec<NativeTensor> {
    crate::model::ort_reference::ort_outputs(file, &model_bytes(file), x, rows, width)
}

/// Every output's values for `row` (for a failure's message).
fn row_of(outputs: &[NativeTensor], row: usize, rows: usize) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            NativeTensor::Int64 { data, .. } => {
                let w = data.len() / rows;
                format!("{:?}", &data[row * w..(row + 1) * w])
            }
            NativeTensor::Float32 { data, .. } => {
                let w = data.len() / rows;
                format!("{:?}", &data[row * w..(row + 1) * w])
            }
        })
        .collect()
}

/// Whether two floats agree: both NaN, equal, or within 1e-5 of max(1, |ORT's|).
fn close(got: f32, want: f32) -> bool {
    (got.is_nan() && want.is_nan())
        || got == want
        || (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

#[test]
fn every_committed_dense_model_answers_as_onnx_runtime_does() {
    for (file, width) in MODELS {
        let bytes = model_bytes(file);
        let native = NativeDense::from_onnx(&bytes, width)
            .unwrap_or_else(|reason| panic!("{file} should compile: {reason}"));
        // More rows than a block, and not a multiple of it.
        let x = rows(1000, width);
        let n = x.len() / width;
        let ours = native.run(&x, n);
        let theirs = ort_outputs(file, &x, n, width);
        assert_eq!(ours.len(), theirs.len(), "{file}: output count");
        // Rows with an infinite feature where ONNX Runtime answers NaN: its packed GEMM
        // kernels may multiply the infinity by padding zeros, depending on the shapes; the
        // native evaluator gives the IEEE result there. Every other row must agree.
        let skipped: Vec<bool> = (0..n)
            .map(|row| {
                x[row * width..(row + 1) * width]
                    .iter()
                    .any(|v| v.is_infinite())
                    && row_of(&theirs, row, n).iter().any(|v| v.contains("NaN"))
            })
            .collect();
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            match (a, b) {
                (
                    NativeTensor::Int64 { dims, data },
                    NativeTensor::Int64 {
                        dims: want_dims,
                        data: want,
                    },
                ) => {
                    assert_eq!(dims, want_dims, "{file} output {i} shape");
                    for (row, (got, want)) in data.iter().zip(want).enumerate() {
                        if skipped[row] {
                            continue;
                        }
                        assert_eq!(
                            got,
                            want,
                            "{file} output {i} row {row}; all outputs here: {ours:?} ONNX Runtime: {theirs:?}",
                            ours = row_of(&ours, row, n),
                            theirs = row_of(&theirs, row, n)
                        );
                    }
                }
                (
                    NativeTensor::Float32 { dims, data },
                    NativeTensor::Float32 {
                        dims: want_dims,
                        data: want,
                    },
                ) => {
                    assert_eq!(dims, want_dims, "{file} output {i} shape");
                    let per_row = data.len() / n;
                    for (at, (got, want)) in data.iter().zip(want).enumerate() {
                        if skipped[at / per_row] {
                            continue;
                        }
                        assert!(
                            close(*got, *want),
                            "{file} output {i} value {at} (row {}): {got} vs ONNX Runtime's {want}",
                            at / per_row
                        );
                    }
                }
                _ => panic!("{file} output {i}: types differ"),
            }
        }
        let skips = skipped.iter().filter(|s| **s).count();
        assert!(skips <= 2 * width, "{file}: {skips} rows left out");
    }
}

#[test]
fn graphs_that_are_not_dense_stay_on_onnx_runtime_with_a_reason() {
    for (file, width, reason) in [
        (
            "tree_models/gbdt_binary.onnx",
            4,
            "operator TreeEnsembleClassifier",
        ),
        ("models/two_inputs.onnx", 1, "2 graph inputs"),
    ] {
        let err = NativeDense::from_onnx(&model_bytes(file), width)
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains(reason), "{file}: {err}");
    }
    let err = NativeDense::from_onnx(b"not onnx", 4)
        .map(|_| ())
        .unwrap_err();
    assert!(err.starts_with("not ONNX"), "{err}");
}

/// A one-MatMul graph by a float initializer of `dims` holding `values`.
fn matmul_by(dims: Vec<i64>, values: Vec<f32>) -> Vec<u8> {
    use crate::model::trees::proto::{
        GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    };
    use prost::Message;
    let value = |name: &str| ValueInfoProto { name: name.into() };
    ModelProto {
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                op_type: "MatMul".into(),
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                dims,
                data_type: 1,
                float_data: values,
                name: "w".into(),
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn hostile_dimensions_are_refused_not_overflowed_or_divided_by() {
    let huge = 1i64 << 40;
    for (dims, values, width, reason) in [
        (vec![huge, huge], vec![1.0; 4], 4, "values for"),
        (vec![4, 0], vec![], 4, "empty [4, 0]"),
        (vec![0, 3], vec![], 0, "empty [0, 3]"),
    ] {
        let err = NativeDense::from_onnx(&matmul_by(dims, values), width)
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains(reason), "{err}");
    }
}

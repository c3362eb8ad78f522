//! The native evaluator against ONNX Runtime, output by output, on every row.

use super::{NativeTensor, NativeTrees};
use shoal_kernels::trees::MAX_LEAVES;
use std::path::PathBuf;

const WIDTH: usize = 4;

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/tree_models/{name}.onnx"))
}

/// Lineitem-like rows from a fixed-seed generator, then rows with NaN, infinities and zeros
/// in each feature in turn.
fn rows(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity((n + 16) * WIDTH);
    for _ in 0..n {
        let quantity = (1.0 + (next() * 50.0).floor()) as f32;
        x.push(quantity);
        x.push(quantity * (900.0 + next() * 1200.0) as f32);
        x.push(((next() * 11.0).floor() / 100.0) as f32);
        x.push(((next() * 9.0).floor() / 100.0) as f32);
    }
    for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0] {
        for feature in 0..WIDTH {
            let mut row = [25.0, 30000.0, 0.05, 0.04];
            row[feature] = special;
            x.extend_from_slice(&row);
        }
    }
    x
}

fn ort_outputs(name: &str, x: &[f32], rows: usize) -> Vec<NativeTensor> {
    let bytes = std::fs::read(model_path(name)).expect("model file");
    crate::model::ort_reference::ort_outputs(name, &bytes, x, rows, WIDTH)
}

/// Largest difference between the two evaluators, relative to max(1, |ORT value|); only
/// trees of at most `bit_leaves` leaves are evaluated by bit vectors, the others walked.
fn compare(name: &str, rows: usize, bit_leaves: usize) -> f32 {
    let x = rows_for(rows);
    let rows = x.len() / WIDTH;
    let bytes = std::fs::read(model_path(name)).expect("model file");
    let native = NativeTrees::from_onnx(&bytes, WIDTH)
        .unwrap_or_else(|reason| panic!("{name} should be evaluated natively: {reason}"))
        .with_bit_trees_up_to(bit_leaves);
    let ours = native.run(&x, rows);
    let theirs = ort_outputs(name, &x, rows);
    assert_eq!(ours.len(), theirs.len(), "{name}: output count");
    let mut worst = 0.0f32;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        match (a, b) {
            (
                NativeTensor::Int64 { dims, data },
                NativeTensor::Int64 {
                    dims: want_dims,
                    data: want,
                },
            ) => {
                assert_eq!(dims, want_dims, "{name} output {i} shape");
                for (row, (got, want)) in data.iter().zip(want).enumerate() {
                    assert_eq!(got, want, "{name} output {i} label of row {row}");
                }
            }
            (
                NativeTensor::Float32 { dims, data },
                NativeTensor::Float32 {
                    dims: want_dims,
                    data: want,
                },
            ) => {
                assert_eq!(dims, want_dims, "{name} output {i} shape");
                for (at, (got, want)) in data.iter().zip(want).enumerate() {
                    let diff = (got - want).abs() / want.abs().max(1.0);
                    assert!(
                        diff <= 1e-6 || (got.is_nan() && want.is_nan()),
                        "{name} output {i} value {at}: native {got} vs ONNX Runtime {want}"
                    );
                    worst = worst.max(diff);
                }
            }
            _ => panic!("{name} output {i}: {a:?} vs {b:?}"),
        }
    }
    worst
}

fn rows_for(n: usize) -> Vec<f32> {
    let all = rows(n.max(1));
    if n < 16 {
        all[..n * WIDTH].to_vec()
    } else {
        all
    }
}

#[test]
fn tree_ensembles_match_onnx_runtime_on_every_row() {
    for name in [
        "gbdt_binary",
        "gbdt_multiclass",
        "forest_binary",
        "forest_multiclass",
        "gbdt_regressor",
        "forest_regressor",
        "gbdt_missing",
        "gbdt_lt",
    ] {
        // Large batches, and batches smaller than the lockstep lanes; trees by bit
        // vectors, walked, and some each way.
        for rows in [3000, 1, 7] {
            for bit_leaves in [MAX_LEAVES, 0, 30] {
                let worst = compare(name, rows, bit_leaves);
                eprintln!(
                    "{name} {rows} rows, bit trees up to {bit_leaves} leaves: worst relative difference {worst:e}"
                );
                assert!(worst <= 1e-6, "{name}: {worst}");
            }
        }
    }
}

#[test]
fn small_trees_take_bit_vectors_and_larger_ones_the_walk_in_the_trees_order() {
    let load = |name| {
        let bytes = std::fs::read(model_path(name)).expect("model file");
        NativeTrees::from_onnx(&bytes, WIDTH).expect("native")
    };
    // Every committed model's trees have at most 64 leaves (depth 6 at most).
    for name in ["gbdt_binary", "forest_regressor", "forest_multiclass"] {
        let model = load(name);
        assert_eq!(
            model.forest.bit_trees_and_runs(),
            (model.forest.tree_count(), 1)
        );
    }
    // forest_binary's trees have 29, 30, 32, 27, 31, 31, 31 and 32 leaves: with a limit of
    // 30 (as the comparison above also runs) they split into alternating runs.
    let mixed = load("forest_binary").with_bit_trees_up_to(30);
    assert_eq!(mixed.forest.bit_trees_and_runs(), (3, 4));
    let walked = load("forest_regressor").with_bit_trees_up_to(0);
    assert_eq!(walked.forest.bit_trees_and_runs(), (0, 1));
}

#[test]
fn other_graphs_are_left_to_onnx_runtime_with_a_reason() {
    let bytes = std::fs::read(model_path("mlp")).expect("model file");
    let reason = NativeTrees::from_onnx(&bytes, WIDTH).expect_err("an MLP is not a forest");
    assert!(reason.contains("other operators"), "{reason}");
    let bytes = std::fs::read(model_path("gbdt_binary")).expect("model file");
    let reason = NativeTrees::from_onnx(&bytes, 2).expect_err("too narrow");
    assert!(reason.contains("feature"), "{reason}");
    assert!(NativeTrees::from_onnx(b"not onnx", WIDTH).is_err());
}

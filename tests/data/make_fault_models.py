"""Makes the model the fault-tolerance tests use (engine/tests/faults.rs).

Run from the repository root:  .venv/bin/python tests/data/make_fault_models.py

fault_models/odd_rows_fail.onnx  input [N, 4] -> variable [N, 1], the sum of the 4 features.
    The graph reshapes the batch to [N/2, 8] and back, which ONNX Runtime refuses when N is
    odd: inference fails on exactly the batches with an odd number of rows, and succeeds on
    the others. For the test that a model failing on one batch fails the task (naming the
    model and the batch) and leaves the worker running.
"""

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).parent
OUT = HERE / "fault_models"


def odd_rows_fail():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
    pairs = helper.make_tensor("pairs", TensorProto.INT64, [2], [-1, 8])
    rows = helper.make_tensor("rows", TensorProto.INT64, [2], [-1, 4])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Reshape", ["input", "pairs"], ["paired"]),
        helper.make_node("Reshape", ["paired", "rows"], ["back"]),
        helper.make_node("ReduceSum", ["back", "axes"], ["variable"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "odd_rows_fail", [x], [y], [pairs, rows, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def endless():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
    trips = helper.make_tensor("trips", TensorProto.INT64, [], [10**15])
    keep_going = helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "zero"], ["v_out"]),
        ],
        "add_zero",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    nodes = [
        helper.make_node("Loop", ["trips", "keep_going", "input"], ["looped"], body=body),
        helper.make_node("ReduceSum", ["looped", "axes"], ["variable"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "endless", [x], [y], [trips, keep_going, zero, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    OUT.mkdir(exist_ok=True)
    path = OUT / "odd_rows_fail.onnx"
    onnx.save(odd_rows_fail(), path)
    session = ort.InferenceSession(str(path))
    even = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert session.run(None, {"input": even})[0].tolist() == [[6.0], [22.0]]
    try:
        session.run(None, {"input": np.ones((3, 4), dtype=np.float32)})
    except Exception:  # noqa: BLE001 - any ORT error is the point
        pass
    else:
        raise AssertionError("a batch of 3 rows must fail")
    print(f"wrote {path}")
    path = OUT / "endless.onnx"
    onnx.save(endless(), path)
    # Not run here: it would not return. Its graph is checked above.
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

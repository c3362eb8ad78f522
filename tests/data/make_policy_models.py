"""Makes the model the site-policy attack tests use (tests/egress.rs).

Run from the repository root:  .venv/bin/python tests/data/make_policy_models.py

policy_models/identity.onnx  input [N, 4] -> variable [N, 1], the first feature unchanged.
    A "model" that copies a raw column out of a site as its prediction: the known attack on
    a predictions-only table, which a site closes with its `models` allow-list.
"""

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).parent
OUT = HERE / "policy_models"


def identity():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["variable"])]
    graph = helper.make_graph(nodes, "identity", [x], [y], [starts, ends, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    OUT.mkdir(exist_ok=True)
    path = OUT / "identity.onnx"
    onnx.save(identity(), path)
    session = ort.InferenceSession(str(path))
    rows = np.array([[61.5, 2, 3, 4], [17.25, 6, 7, 8]], dtype=np.float32)
    assert session.run(None, {"input": rows})[0].tolist() == [[61.5], [17.25]]
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

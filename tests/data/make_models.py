"""Makes the tiny ONNX models shoal's tests and demo use, and their reference outputs.

Run from the repository root:  .venv/bin/python tests/data/make_models.py
Deterministic (fixed seeds). The models take TPC-H lineitem-like features:
  l_quantity (1..50), l_extendedprice (~900..105000), l_discount (0..0.10), l_tax (0..0.08)

models/return_risk.onnx  StandardScaler + MLP binary classifier, one float input [N, 4],
                         outputs label int64 [N] and probabilities float32 [N, 2] (zipmap=False)
models/ship_mode.onnx    3-class logistic regression, input [N, 3], probabilities [N, 3]
models/price.onnx        linear regressor, input [N, 2] -> variable float32 [N, 1]
models/two_inputs.onnx   hand-built graph with one input per feature: y = 2a + b, [N, 1] each
models/heavy_scorer.onnx deliberately slow regressor (128 tanh layers of 256, one shared weight
                         matrix, so the file stays small): ~17 MFLOP per row, for tests that
                         cancel a query while the workers are busy. Input [N, 4], variable [N, 1]
bad_models/zipmap.onnx   classifier with skl2onnx's default ZipMap probabilities
bad_models/not_onnx.onnx a text file with an .onnx name
reference/<model>.json   inputs and onnxruntime's outputs, compared by the Rust tests (1e-5)
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = pathlib.Path(__file__).parent
MODELS = HERE / "models"
BAD = HERE / "bad_models"
REF = HERE / "reference"


def features(rng, n):
    quantity = rng.integers(1, 51, n).astype(np.float32)
    price = (quantity * rng.uniform(900, 2100, n)).astype(np.float32)
    discount = (rng.integers(0, 11, n) / 100).astype(np.float32)
    tax = (rng.integers(0, 9, n) / 100).astype(np.float32)
    return np.stack([quantity, price, discount, tax], axis=1)


def save(model, path):
    path.write_bytes(model.SerializeToString())


def reference(name, path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: v for i, v in zip(sess.get_inputs(), inputs)}
    outs = sess.run(None, feeds)
    doc = {
        "inputs": [np.asarray(v).reshape(len(v), -1).tolist() for v in inputs],
        "outputs": {o.name: np.asarray(v).tolist() for o, v in zip(sess.get_outputs(), outs)},
    }
    (REF / f"{name}.json").write_text(json.dumps(doc))


def heavy_scorer():
    rng = np.random.default_rng(13)
    width, layers = 256, 128
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])
    out = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    # Scaled so tanh stays out of saturation and the output depends on the input.
    w_in = (rng.normal(0, 1, (4, width)) / np.array([[50], [100000], [0.1], [0.08]])).astype(np.float32)
    w = (rng.normal(0, 1, (width, width)) / np.sqrt(width)).astype(np.float32)
    w_out = (rng.normal(0, 1, (width, 1)) / np.sqrt(width)).astype(np.float32)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.flatten().tolist())
             for n, a in (("w_in", w_in), ("w", w), ("w_out", w_out))]
    nodes = [helper.make_node("MatMul", ["X", "w_in"], ["h0_lin"]),
             helper.make_node("Tanh", ["h0_lin"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}_lin"]))
        nodes.append(helper.make_node("Tanh", [f"h{i + 1}_lin"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["variable"]))
    graph = helper.make_graph(nodes, "heavy_scorer", [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    save(model, MODELS / "heavy_scorer.onnx")


def main():
    heavy_scorer()
    rng = np.random.default_rng(7)
    x = features(rng, 4000)
    # Larger, heavily discounted orders are "returned" more often.
    logit = 0.08 * (x[:, 0] - 25) + 40 * (x[:, 2] - 0.05) + rng.normal(0, 0.5, len(x))
    y = (logit > 0).astype(np.int64)
    mlp = make_pipeline(StandardScaler(), MLPClassifier((16, 8), max_iter=300, random_state=0))
    mlp.fit(x, y)
    onx = to_onnx(mlp, x[:1], options={"zipmap": False}, target_opset=17)
    save(onx, MODELS / "return_risk.onnx")

    modes = np.digitize(x[:, 0] + 100 * x[:, 3] + rng.normal(0, 2, len(x)), [20, 35])
    lr3 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    lr3.fit(x[:, [0, 2, 3]], modes)
    save(to_onnx(lr3, x[:1, [0, 2, 3]], options={"zipmap": False}, target_opset=17),
         MODELS / "ship_mode.onnx")

    reg = LinearRegression().fit(x[:, [0, 2]], x[:, 1])
    save(to_onnx(reg, x[:1, [0, 2]], target_opset=17), MODELS / "price.onnx")

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "two"], ["a2"]), helper.make_node("Add", ["a2", "b"], ["y"])],
        "two_inputs", [a, b], [out], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    save(model, MODELS / "two_inputs.onnx")

    zipmapped = LogisticRegression(max_iter=500).fit(x, y)
    save(to_onnx(zipmapped, x[:1], target_opset=17), BAD / "zipmap.onnx")
    (BAD / "not_onnx.onnx").write_text("this is not an ONNX model\n")

    sample = features(np.random.default_rng(11), 64)
    reference("return_risk", MODELS / "return_risk.onnx", [sample])
    reference("ship_mode", MODELS / "ship_mode.onnx", [sample[:, [0, 2, 3]]])
    reference("price", MODELS / "price.onnx", [sample[:, [0, 2]]])
    reference("two_inputs", MODELS / "two_inputs.onnx",
              [sample[:, [0]].copy(), sample[:, [2]].copy()])
    print("models written to", MODELS)


if __name__ == "__main__":
    main()

"""Trains and exports the bench models (run by scripts/bench-setup.sh).

    python benches/make_bench_models.py OUT_DIR

OUT_DIR/bench_mlp.onnx   StandardScaler + MLP (32, 16) binary classifier, input float [N, 4]
OUT_DIR/bench_gbdt.onnx  GradientBoostingClassifier, 100 trees of depth 4, input float [N, 4]

OUT_DIR/bench_resnet18.onnx  a ResNet-18-shaped image classifier, input float
                             [N, 3, 224, 224], output logits [N, 1000]

The first two read lineitem's l_quantity, l_extendedprice, l_discount, l_tax and output label
and probabilities (zipmap=False). The ResNet is written with onnx's helper and random
(He-initialised) weights: the image job's speed depends on the network's shapes, not on
what it learned, and nothing is downloaded. Deterministic (fixed seeds); written only when
missing.
"""

import pathlib
import sys

import numpy as np
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# The lineitem-like features the test models are trained on.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"))
from make_models import features  # noqa: E402


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    x = features(rng, 20000)
    logit = 0.08 * (x[:, 0] - 25) + 40 * (x[:, 2] - 0.05) + 30 * x[:, 3] + rng.normal(0, 0.7, len(x))
    y = (logit > 1.0).astype(np.int64)
    models = {
        "bench_mlp": lambda: make_pipeline(
            StandardScaler(), MLPClassifier((32, 16), max_iter=200, random_state=0)),
        "bench_gbdt": lambda: GradientBoostingClassifier(
            n_estimators=100, max_depth=4, random_state=0),
    }
    for name, make in models.items():
        path = out / f"{name}.onnx"
        if path.exists():
            continue
        model = make().fit(x, y)
        onx = to_onnx(model, x[:1], options={"zipmap": False},
                      target_opset={"": 17, "ai.onnx.ml": 3})
        path.write_bytes(onx.SerializeToString())
        print(f"bench model {path}")


def photo_like(rng, n):
    """Inputs as the image job makes them: smooth colour gradients with blobs and noise,
    scaled to [0, 1] and normalised with ImageNet's mean and std, NCHW."""
    y, x = np.mgrid[0:224, 0:224] / 224.0
    images = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 1, (3, 3))
        channels = [np.clip(a[i] * x + b[i] * y + c[i] * np.sin(6 * (x + y) * (i + 1)) * 0.3
                            + rng.normal(0, 0.05, x.shape), 0, 1) for i in range(3)]
        images.append(np.stack(channels))
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    return ((np.stack(images) - mean) / std).astype(np.float32)


def resnet18(path):
    """ResNet-18 (He et al. 2015): a 7x7/2 stem, max pool, four stages of two basic blocks
    (64, 128, 256, 512 channels), global average pool, a 1000-way linear layer. Batch norm
    is folded into the convolutions, as an exported inference graph has it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(18)
    nodes, weights = [], []
    counter = [0]

    def name(kind):
        counter[0] += 1
        return f"{kind}{counter[0]}"

    def conv(x, cin, cout, k, stride, relu=True):
        w, b, y = name("w"), name("b"), name("conv")
        fan_in = cin * k * k
        weights.append(numpy_helper.from_array(
            (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32), w))
        weights.append(numpy_helper.from_array(np.zeros(cout, np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return y
        out = name("relu")
        nodes.append(helper.make_node("Relu", [y], [out]))
        return out

    def block(x, cin, cout, stride):
        y = conv(x, cin, cout, 3, stride)
        y = conv(y, cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else conv(x, cin, cout, 1, stride, relu=False)
        added, out = name("add"), name("relu")
        nodes.append(helper.make_node("Add", [y, shortcut], [added]))
        nodes.append(helper.make_node("Relu", [added], [out]))
        return out

    x = conv("image", 3, 64, 7, 2)
    pooled = name("pool")
    nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))
    x, cin = pooled, 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = block(x, cin, cout, stride)
        x = block(x, cout, cout, 1)
        cin = cout
    gap, flat = name("gap"), name("flat")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [gap]))
    nodes.append(helper.make_node("Flatten", [gap], [flat], axis=1))
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])

    def model_of(graph_nodes, output, graph_weights):
        graph = helper.make_graph(graph_nodes, "bench_resnet18", [image], [output], graph_weights)
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        made.ir_version = 8
        return made

    # An untrained deep ReLU network maps every input near one direction, so its top class
    # would be the same for every image and the engines' answers could not be told apart.
    # The last layer is calibrated as a folded batch norm would be: the features' mean over
    # photo-like inputs is subtracted and their spread divided out, so the class depends on
    # the image.
    import onnxruntime
    features = model_of(nodes, helper.make_tensor_value_info(flat, TensorProto.FLOAT, ["N", 512]),
                        weights)
    calibration = onnxruntime.InferenceSession(features.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
    seen = calibration.run(None, {"image": photo_like(rng, 48)})[0]
    mean, spread = seen.mean(axis=0), seen.std(axis=0) + 1e-6
    fc = (rng.standard_normal((1000, 512)) * np.sqrt(1.0 / 512)) / spread
    weights.append(numpy_helper.from_array(fc.astype(np.float32), "fc_w"))
    weights.append(numpy_helper.from_array((-fc @ mean).astype(np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", [flat, "fc_w", "fc_b"], ["logits"], transB=1))
    model = model_of(nodes, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
                     weights)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    print(f"bench model {path}")


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    main(out)
    if not (out / "bench_resnet18.onnx").exists():
        resnet18(out / "bench_resnet18.onnx")

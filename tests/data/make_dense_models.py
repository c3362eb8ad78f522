"""Makes the dense models the native dense evaluator is checked against ONNX Runtime with
(operators/src/model/dense/tests.rs). Run with the project's venv:

    .venv/bin/python tests/data/make_dense_models.py

dense_models/mlp_multiclass.onnx  StandardScaler + MLPClassifier (tanh, 3 classes): Softmax head
dense_models/mlp_logistic.onnx    MLPRegressor (logistic activation, 3 layers)
dense_models/mlp_wide.onnx        MLPClassifier (relu, 64-32, binary) on 21 features: the
                                  shape of the issue's lineitem model
dense_models/logistic_binary.onnx LogisticRegression, 2 classes: LinearClassifier (LOGISTIC)
dense_models/logistic_multiclass.onnx
                                  Normalizer (L2) + LogisticRegression, 3 classes:
                                  LinearClassifier (SOFTMAX) + Normalizer (L1)
dense_models/linear_regression.onnx
                                  Normalizer (MAX) + LinearRegression, 2 targets: LinearRegressor

Each reads one float [N, width] input; the fixed seeds make the same files every time.
"""

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

OUT = Path(__file__).parent / "dense_models"


def save(model, x, name, **options):
    onx = to_onnx(model, x[:1].astype(np.float32), options=options, target_opset=17)
    (OUT / f"{name}.onnx").write_bytes(onx.SerializeToString())


def main():
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)

    x = rng.normal(size=(600, 4)).astype(np.float32) * [1.0, 50.0, 0.1, 3.0]
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 20).astype(int)
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(12,), activation="tanh", max_iter=200, random_state=0),
    ).fit(x, y)
    save(clf, x, "mlp_multiclass", zipmap=False)

    targets = x[:, 0] * 2 + x[:, 3] + np.sin(x[:, 2] * 10)
    reg = MLPRegressor(hidden_layer_sizes=(16, 8, 4), activation="logistic", max_iter=200, random_state=0)
    save(reg.fit(x, targets), x, "mlp_logistic")

    wide = rng.normal(size=(800, 21)).astype(np.float32)
    label = (wide[:, :5].sum(axis=1) > 0).astype(int)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=100, random_state=0).fit(wide, label)
    save(mlp, wide, "mlp_wide", zipmap=False)

    six = rng.normal(size=(500, 6)).astype(np.float32) * [1.0, 10.0, 0.5, 2.0, 1.0, 3.0]
    binary = (six[:, 0] + six[:, 1] / 10 > 0).astype(int)
    save(LogisticRegression().fit(six, binary), six, "logistic_binary", zipmap=False)
    three = binary + (six[:, 3] > 1).astype(int)
    multiclass = make_pipeline(Normalizer(norm="l2"), LogisticRegression()).fit(six, three)
    save(multiclass, six, "logistic_multiclass", zipmap=False)
    two_targets = np.stack([six[:, 0] * 3 - six[:, 2], six[:, 4] + 1], axis=1)
    linear = make_pipeline(Normalizer(norm="max"), LinearRegression()).fit(six, two_targets)
    save(linear, six, "linear_regression")


if __name__ == "__main__":
    main()

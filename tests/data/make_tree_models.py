"""Makes the tree-ensemble models the native tree evaluator is checked on against ONNX Runtime.

Run from the repository root:  .venv/bin/python tests/data/make_tree_models.py
Deterministic (fixed seeds). Four float features like TPC-H lineitem's (see make_models.py).
The Rust test (operators/src/model/trees/tests.rs) runs each model on ONNX Runtime and on
shoal's evaluator over the same rows (NaN and infinities included) and compares every output.

tree_models/gbdt_binary.onnx       GradientBoostingClassifier, 2 classes, 30 trees of depth 3
                                   (one vote column, LOGISTIC, one base value)
tree_models/gbdt_multiclass.onnx   GradientBoostingClassifier, 3 classes, 10 rounds (SOFTMAX)
tree_models/forest_binary.onnx     RandomForestClassifier, 2 classes, 8 trees (NONE)
tree_models/forest_multiclass.onnx RandomForestClassifier, 3 classes, 8 trees
tree_models/gbdt_regressor.onnx    GradientBoostingRegressor, 40 trees of depth 4
tree_models/forest_regressor.onnx  RandomForestRegressor, 6 trees of depth 6
tree_models/gbdt_missing.onnx      gbdt_binary with nodes_missing_value_tracks_true set on every
                                   other branch (NaN goes to the true side there). Edited by hand:
                                   skl2onnx 1.x fails on HistGradientBoosting models with numpy 2.
tree_models/gbdt_lt.onnx           gbdt_regressor with every BRANCH_LEQ turned into BRANCH_LT
tree_models/mlp.onnx               not a tree ensemble: must stay on ONNX Runtime
"""

import pathlib

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.neural_network import MLPRegressor

from make_models import features  # the same lineitem-like features as the other test models

OUT = pathlib.Path(__file__).parent / "tree_models"


def save(model, x, name, zipmap=True):
    options = {"zipmap": False} if zipmap else None
    onx = to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    (OUT / f"{name}.onnx").write_bytes(onx.SerializeToString())


def edit(source, name, change):
    model = onnx.load(OUT / f"{source}.onnx")
    node = model.graph.node[0]
    attrs = {a.name: a for a in node.attribute}
    change(attrs)
    onnx.checker.check_model(model)
    (OUT / f"{name}.onnx").write_bytes(model.SerializeToString())


def missing_every_other(attrs):
    modes = attrs["nodes_modes"].strings
    tracks = [int(m != b"LEAF" and i % 2 == 0) for i, m in enumerate(modes)]
    del attrs["nodes_missing_value_tracks_true"].ints[:]
    attrs["nodes_missing_value_tracks_true"].ints.extend(tracks)


def strict_comparisons(attrs):
    modes = [b"BRANCH_LT" if m == b"BRANCH_LEQ" else m for m in attrs["nodes_modes"].strings]
    del attrs["nodes_modes"].strings[:]
    attrs["nodes_modes"].strings.extend(modes)


def main():
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(5)
    x = features(rng, 3000)
    logit = 0.08 * (x[:, 0] - 25) + 40 * (x[:, 2] - 0.05) + rng.normal(0, 0.5, len(x))
    binary = (logit > 0).astype(np.int64)
    three = np.digitize(x[:, 0] + 100 * x[:, 3] + rng.normal(0, 2, len(x)), [20, 35])
    price = x[:, 1] / x[:, 0] * (1 - x[:, 2]) + rng.normal(0, 20, len(x))

    save(GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, binary),
         x, "gbdt_binary")
    save(GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(x, three),
         x, "gbdt_multiclass")
    save(RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(x, binary),
         x, "forest_binary")
    save(RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(x, three),
         x, "forest_multiclass")
    save(GradientBoostingRegressor(n_estimators=40, max_depth=4, random_state=0).fit(x, price),
         x, "gbdt_regressor", zipmap=False)
    save(RandomForestRegressor(n_estimators=6, max_depth=6, random_state=0).fit(x, price),
         x, "forest_regressor", zipmap=False)
    edit("gbdt_binary", "gbdt_missing", missing_every_other)
    edit("gbdt_regressor", "gbdt_lt", strict_comparisons)
    save(MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(x / x.max(axis=0), price),
         x, "mlp", zipmap=False)
    print("tree models written to", OUT)


if __name__ == "__main__":
    main()

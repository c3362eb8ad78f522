"""Trains and exports the bench models (run by scripts/bench-setup.sh).

    python benches/make_bench_models.py OUT_DIR

OUT_DIR/bench_mlp.onnx   StandardScaler + MLP (32, 16) binary classifier, input float [N, 4]
OUT_DIR/bench_gbdt.onnx  GradientBoostingClassifier, 100 trees of depth 4, input float [N, 4]

Both read lineitem's l_quantity, l_extendedprice, l_discount, l_tax and output label and
probabilities (zipmap=False). Deterministic (fixed seeds); written only when missing.
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


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))

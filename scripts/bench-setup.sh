#!/usr/bin/env bash
# Makes the bench environment: .shoal/bench-venv with the peer engines (benches/requirements.txt),
# and the bench models trained on lineitem-like features (scikit-learn, exported with skl2onnx)
# into target/shoal-bench-models/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
venv=.shoal/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
stamp=$venv/.shoal-requirements
if ! cmp -s benches/requirements.txt "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt
  cp benches/requirements.txt "$stamp"
fi
"$venv/bin/python" -W ignore benches/make_bench_models.py target/shoal-bench-models

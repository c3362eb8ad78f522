#!/usr/bin/env bash
# Installs what shoal needs beside the Rust toolchain, into git-ignored project folders:
#   .venv/                 Python with onnxruntime and the test clients (requirements.txt)
#   .shoal/onnxruntime/    libonnxruntime.so.* copied from the onnxruntime wheel
# Idempotent: a second run with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.shoal-requirements
if ! cmp -s requirements.txt "$stamp"; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$stamp"
fi

lib=$(.venv/bin/python - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))
print(libs[-1] if libs else "")
PY
)
if [ -z "$lib" ]; then
  echo "setup: the onnxruntime wheel has no libonnxruntime.so" >&2
  exit 1
fi
mkdir -p .shoal/onnxruntime
if [ ! -f ".shoal/onnxruntime/$(basename "$lib")" ]; then
  rm -f .shoal/onnxruntime/libonnxruntime.so*
  cp "$lib" .shoal/onnxruntime/
fi
echo "setup: ONNX Runtime at .shoal/onnxruntime/$(basename "$lib")"

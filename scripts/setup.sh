#!/usr/bin/env bash
# Installs what shoal needs beside the Rust toolchain, into git-ignored project folders
# (and, as root, Debian's nftables for the multi-host tests):
#   .venv/                 Python with onnxruntime and the test clients (requirements.txt)
#   .shoal/onnxruntime/    libonnxruntime.so.* copied from the onnxruntime wheel
# (and, as root, Debian's fonts-dejavu-core for the text-line images of the vision tests)
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
# The multi-host tests (engine/tests/netns.rs) degrade a site's link with tc netem, or,
# on kernels built without netem, with a rate limit and random loss from nftables
# (Debian's package). Installed only as root, where those tests can run at all.
if [ "$(id -u)" = 0 ] && ! command -v nft >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q nftables >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nftables >/dev/null 2>&1; } \
    || echo "setup: could not install nftables (the degraded-link test will say so)" >&2
fi
# The text-line images of the vision tests (tests/data/make_text_lines.py) are rendered with
# the DejaVu fonts of Debian's fonts-dejavu-core: installed as root where missing.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ "$(id -u)" = 0 ] \
  && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q fonts-dejavu-core >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-dejavu-core >/dev/null 2>&1; } \
    || echo "setup: could not install fonts-dejavu-core (the text-line tests will say so)" >&2
fi
echo "setup: ONNX Runtime at .shoal/onnxruntime/$(basename "$lib")"

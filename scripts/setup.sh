#!/usr/bin/env bash
# Installs what shoal needs beside the Rust toolchain, into git-ignored project folders
# (and, as root, Debian's nftables for the multi-host tests):
#   .venv/                 Python with onnxruntime and the test clients (requirements.txt)
#   .shoal/onnxruntime/    libonnxruntime.so.* copied from the onnxruntime wheel (on a machine
#                          with an NVIDIA GPU, or SHOAL_GPU=1: from onnxruntime-gpu, with its
#                          CUDA provider and cuda/ links to NVIDIA's CUDA and cuDNN wheels)
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

# ONNX Runtime for shoal itself, in .shoal/onnxruntime/. On a machine with an NVIDIA GPU
# (a /dev/nvidiaN device; SHOAL_GPU=1 forces it, SHOAL_GPU=0 forbids it) that is the
# onnxruntime-gpu wheel of the same version, with the CUDA and cuDNN wheels its [cuda,cudnn]
# extras name, all from PyPI into .shoal/gpu-wheels/ (not .venv, whose CPU onnxruntime the
# Python clients keep). The provider libraries go next to libonnxruntime.so, where ONNX
# Runtime looks for them; the CUDA libraries are not on the loader's path from a pip install,
# so they are linked into .shoal/onnxruntime/cuda/, which shoal loads before its first CUDA
# session (operators/src/device/cuda.rs). Elsewhere: the CPU wheel's library.
gpu=${SHOAL_GPU:-auto}
if [ "$gpu" = auto ]; then
  if ls /dev/nvidia[0-9]* >/dev/null 2>&1; then gpu=1; else gpu=0; fi
fi
ort_version=$(sed -n 's/^onnxruntime==\([0-9.]*\).*/\1/p' requirements.txt)
if [ "$gpu" = 1 ]; then
  wheels=.shoal/gpu-wheels
  if [ "$(cat "$wheels/.shoal-version" 2>/dev/null)" != "$ort_version" ]; then
    rm -rf "$wheels"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
      --target "$wheels" "onnxruntime-gpu[cuda,cudnn]==$ort_version"
    echo "$ort_version" > "$wheels/.shoal-version"
  fi
  capi="$wheels/onnxruntime/capi"
  build="gpu $ort_version"
else
  capi=$(.venv/bin/python -c 'import os, onnxruntime; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
  build="cpu $ort_version"
fi
lib=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | sort | tail -n 1)
if [ -z "$lib" ]; then
  echo "setup: the onnxruntime wheel has no libonnxruntime.so (looked in $capi)" >&2
  exit 1
fi
if [ "$(cat .shoal/onnxruntime/BUILD 2>/dev/null)" != "$build" ] \
  || [ ! -f ".shoal/onnxruntime/$(basename "$lib")" ]; then
  rm -rf .shoal/onnxruntime
  mkdir -p .shoal/onnxruntime
  cp "$lib" .shoal/onnxruntime/
  if [ "$gpu" = 1 ]; then
    cp "$capi"/libonnxruntime_providers_*.so .shoal/onnxruntime/
    mkdir -p .shoal/onnxruntime/cuda
    # The libraries ort's CUDA provider loads (ort::ep::cuda::CUDA_DYLIBS, CUDNN_DYLIBS).
    for name in libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnvrtc.so.13 \
      libcurand.so.10 libcufft.so.12 libcudnn.so.9 libcudnn_graph.so.9 libcudnn_ops.so.9 \
      libcudnn_heuristic.so.9 libcudnn_adv.so.9 libcudnn_cnn.so.9 \
      libcudnn_engines_precompiled.so.9 libcudnn_engines_runtime_compiled.so.9; do
      found=$(find "$wheels/nvidia" -name "$name*" \( -type f -o -type l \) 2>/dev/null | sort | head -n 1)
      if [ -z "$found" ]; then
        echo "setup: $name is in none of the NVIDIA wheels under $wheels/nvidia" >&2
        exit 1
      fi
      ln -sfr "$found" ".shoal/onnxruntime/cuda/$name"
    done
  fi
  echo "$build" > .shoal/onnxruntime/BUILD
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
echo "setup: ONNX Runtime ($build) at .shoal/onnxruntime/$(basename "$lib")"

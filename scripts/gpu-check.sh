#!/usr/bin/env bash
# Checks shoal's GPU inference on a machine with an NVIDIA GPU: installs the onnxruntime-gpu
# wheel and NVIDIA's CUDA/cuDNN wheels (scripts/setup.sh with SHOAL_GPU=1), builds, makes the
# bench models (benches/make_bench_models.py: an MLP and a ResNet-18-shaped image model), and
# runs each on the CPU and on every GPU through shoal's device slots: the outputs must agree
# (MLP probabilities within 1e-4; ResNet logits within 1e-2 of their largest magnitude, same
# top class for every image) and it prints rows/s and images/s for both devices, with the
# execution provider used. The line format is in README "GPUs".
#
# On a machine without an NVIDIA GPU it says so in one line and exits 0.
#   scripts/gpu-check.sh [--seconds N] [--devices cpu,cuda:0]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU on this machine (no /dev/nvidia0): nothing to check"
  exit 0
fi
SHOAL_GPU=1 ./scripts/setup.sh
# The test build (Makefile BUILD): its example gpu_check only times ONNX Runtime's runs.
cargo build --workspace --bins --examples --profile ci --features shoal-engine/fault-injection
models=target/shoal-bench-models
.venv/bin/python -W ignore benches/make_bench_models.py "$models" >/dev/null
target/ci/examples/gpu_check --models "$models" "$@"

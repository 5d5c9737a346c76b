#!/usr/bin/env bash
# Optional Intel Neural Compressor backends. Both releases declare numpy<2 (or old onnx) in their
# metadata but run here beside numpy 2 / onnx 1.2x, so they are installed without their pins:
#   onnx-neural-compressor 1.0 -> quantize `backend: inc` (accuracy-driven ONNX tuning)
#   neural-compressor 2.6      -> prune `backend: inc` (pattern pruners; 3.8+ dropped pruning)
# `pip check` will report the ignored pins; that is expected.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=".venv/bin/python -m pip"
$PIP install -q -c constraints.txt --no-deps onnx-neural-compressor==1.0 neural-compressor==2.6
$PIP install -q -c constraints.txt prettytable py-cpuinfo psutil scipy deprecated schema six pandas opencv-python-headless pycocotools "setuptools<81"

#!/usr/bin/env bash
# Fetches, on a machine with a package index, the wheels the GPU machine lacks (Python 3.12,
# manylinux x86_64) into benchmarks/gpu_wheels/ (git-ignored; pass it in the device call's
# carry). numpy, torch, onnx, onnxruntime, OpenCV and matplotlib are already there.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip download -q --only-binary=:all: --python-version 3.12 --no-deps \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 -d gpu_wheels \
  pandas tables numexpr blosc2 ndindex msgpack py-cpuinfo python-dateutil tzdata pytest \
  iniconfig pluggy packaging click tqdm pyyaml PyNvVideoCodec "${@}"
du -sh gpu_wheels

#!/usr/bin/env bash
# The GPU check (issue 10), prepared to fit in 8 minutes on a lent GPU machine.
#   device:  bash benchmarks/gpu_check.sh            (writes under $OUT)
#   here:    OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run   (CPU, tiny models)
# Wheels the device lacks (pandas, tables, pytest, PyNvVideoCodec...; benchmarks/gpu_wheels.sh)
# are installed from benchmarks/gpu_wheels/ when that folder travels with the call (carry it).
#
# Steps, each under its own timeout so that one stuck step cannot eat the rest:
#   1. machine facts; 2. pytest -m gpu (torch CUDA pipeline, NVDEC, onnxruntime-gpu where
#   installed; skips are listed with -rs); 3. the bundles (benchmarks/gpu_models.py);
#   4. dlc benchmark: resnet_50 with every torch precision, batch 1-64, --live and --baseline;
#   CUDA graphs off and NVDEC for comparison; the other models fp16 at two batch sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STARTED=$(date +%s)
log() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - STARTED ))s] $*" | tee -a "$OUT/steps.log"; }

log "machine"
{ nvidia-smi || echo "no nvidia-smi"; python -c "import sys, torch, onnxruntime; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"; } > "$OUT/machine.txt" 2>&1

if [ -d benchmarks/gpu_wheels ] && [ $DRY = 0 ]; then
  log "installing carried wheels"
  python -m pip install -q --no-index --no-deps benchmarks/gpu_wheels/*.whl > "$OUT/pip.txt" 2>&1 || log "pip failed (see pip.txt)"
fi

if [ $DRY = 1 ]; then
  DEVICE=cpu; PRECISIONS="--precision fp32"; ALL_PRECISIONS="--precision fp32 --precision bf16"
  BATCHES="--batch-size 1 --batch-size 4"; FEW_BATCHES="--batch-size 4"
  FRAMES="--frames 16 --synthetic-frames 40 --repeats 1"; LIVE="--live --live-frames 24"
  SIZE=96x128; DRYFLAG=--dry-run; STEP=120
  log "gpu tests (collected only on the CPU)"
  timeout 120 python -m pytest -o addopts=-ra -m gpu -q -p no:cacheprovider --co > "$OUT/pytest_gpu.txt" 2>&1
else
  DEVICE=cuda; PRECISIONS="--precision fp16"
  ALL_PRECISIONS="--precision fp16 --precision bf16 --precision fp32"
  BATCHES="--batch-size 1 --batch-size 8 --batch-size 32 --batch-size 64"
  FEW_BATCHES="--batch-size 8 --batch-size 32"
  FRAMES="--frames 512 --synthetic-frames 640 --repeats 3"; LIVE="--live --live-frames 600"
  SIZE=480x640; DRYFLAG=""; STEP=100
  log "gpu tests"
  timeout 150 python -m pytest -o addopts=-ra -m gpu -q -p no:cacheprovider -rs > "$OUT/pytest_gpu.txt" 2>&1
fi
log "pytest -m gpu exit $? (see pytest_gpu.txt)"

log "bundles"
timeout 200 python benchmarks/gpu_models.py --out "$OUT/bundles" --device $DEVICE \
  --frame-size $SIZE $DRYFLAG > "$OUT/bundles.txt" 2>&1
log "gpu_models exit $? (see bundles.txt)"

# bench NAME BUNDLE ARGS...: one dlc benchmark into $OUT/bench/NAME, its output in bench_NAME.txt
bench() {
  local name=$1 bundle=$2; shift 2
  if [ ! -d "$bundle" ]; then log "benchmark $name skipped: no $bundle"; return; fi
  log "benchmark $name"
  # shellcheck disable=SC2086  (the option lists are word lists on purpose)
  timeout $STEP python -m dlc_cli.main benchmark "$bundle" --device $DEVICE --backend torch \
    --synthetic $SIZE --out "$OUT/bench/$name" --no-progress "$@" \
    > "$OUT/bench_$name.txt" 2>&1 || log "benchmark $name failed or timed out (see bench_$name.txt)"
}
B="$OUT/bundles"
# shellcheck disable=SC2086
bench resnet_50 "$B/resnet_50.bundle" $ALL_PRECISIONS $BATCHES $FRAMES $LIVE --baseline
# shellcheck disable=SC2086
bench resnet_50_no_cuda_graphs "$B/resnet_50.bundle" $PRECISIONS $FEW_BATCHES $FRAMES \
  --backend-option cuda_graphs=false
if [ $DRY = 0 ]; then
  # shellcheck disable=SC2086
  bench resnet_50_nvdec "$B/resnet_50.bundle" $PRECISIONS $FEW_BATCHES $FRAMES --decoder nvdec
fi
for name in hrnet_w32 cspnext_m top_down_resnet_50_1animal top_down_resnet_50_10animals; do
  # shellcheck disable=SC2086
  bench $name "$B/$name.bundle" $PRECISIONS $FEW_BATCHES $FRAMES
done
rm -f "$OUT"/bench/*/synthetic.mp4
log "done"

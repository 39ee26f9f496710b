#!/usr/bin/env bash
# The GPU check (issue 10), prepared to fit in 8 minutes on a lent GPU machine.
#   device:  bash benchmarks/gpu_check.sh            (writes under $OUT)
#   here:    OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry-run   (CPU, tiny models)
# Wheels the device lacks (pandas, tables, pytest, ...; see benchmarks/gpu_wheels.sh) are
# installed from benchmarks/gpu_wheels/ when that folder travels with the call.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.log"; }

log "machine"
{ nvidia-smi || echo "no nvidia-smi"; python -c "import sys, torch, onnxruntime; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"; } > "$OUT/machine.txt" 2>&1

if [ -d benchmarks/gpu_wheels ] && [ $DRY = 0 ]; then
  log "installing carried wheels"
  python -m pip install -q --no-index --no-deps benchmarks/gpu_wheels/*.whl > "$OUT/pip.txt" 2>&1 || log "pip failed (see pip.txt)"
fi

if [ $DRY = 1 ]; then
  DEVICE=cpu; BACKENDS="--backend onnxruntime --backend torch"; PRECISIONS=""
  BATCHES="--batch-size 1 --batch-size 4"; FRAMES="--frames 16 --synthetic-frames 32 --repeats 1"
  SIZE=96x128; DRYFLAG=--dry-run
  log "gpu tests (collected only on the CPU)"
  timeout 120 python -m pytest -o addopts=-ra -m gpu -q -p no:cacheprovider --co > "$OUT/pytest_gpu.txt" 2>&1
else
  DEVICE=cuda; BACKENDS="--backend torch"; PRECISIONS="--precision fp16 --precision fp32"
  BATCHES="--batch-size 1 --batch-size 8 --batch-size 32 --batch-size 64"
  FRAMES="--frames 512 --synthetic-frames 640 --repeats 3"; SIZE=480x640; DRYFLAG=""
  log "gpu tests"
  timeout 180 python -m pytest -o addopts=-ra -m gpu -q -p no:cacheprovider -rs > "$OUT/pytest_gpu.txt" 2>&1
fi
log "pytest -m gpu exit $? (see pytest_gpu.txt)"

log "bundles"
timeout 240 python benchmarks/gpu_models.py --out "$OUT/bundles" --device $DEVICE \
  --frame-size $SIZE $DRYFLAG > "$OUT/bundles.txt" 2>&1
log "gpu_models exit $? (see bundles.txt)"

for bundle in "$OUT"/bundles/*.bundle; do
  name=$(basename "$bundle" .bundle)
  log "benchmark $name"
  # shellcheck disable=SC2086  (the option lists are word lists on purpose)
  timeout 120 python -m dlc_cli.main benchmark "$bundle" --device $DEVICE $BACKENDS $PRECISIONS \
    $BATCHES $FRAMES --synthetic $SIZE --out "$OUT/bench/$name" --no-progress \
    > "$OUT/bench_$name.txt" 2>&1 || log "benchmark $name failed (see bench_$name.txt)"
done
rm -f "$OUT"/bench/*/synthetic.mp4
log "done"

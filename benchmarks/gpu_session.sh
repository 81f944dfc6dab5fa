#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md in one script (a lent GPU's time is short): CSVs and a log
# under $OUT (default runs/gpu). DEVICE=cpu QUICK=1 runs the same steps small, to check the script.
#   bash benchmarks/gpu_session.sh            # on a machine with one or more GPUs
set -uo pipefail
OUT="${OUT:-runs/gpu}"
DEVICE="${DEVICE:-cuda}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SALBENCH_PROGRESS=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${QUICK:-0}" = 1 ]; then LIMIT=16; N=2; BATCH=8; BARE=4,8; else LIMIT=300; N=32; BATCH=256; BARE=64,256; fi
GPUS="$($PY -c 'import torch; print(torch.cuda.device_count())')"
step() { echo "== $(date +%T) $*"; }

step environment
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
echo "CPUs $(nproc), GPUs $GPUS"

step "embedded benchmark and classifier (reused when carried)"
$PY -m salbench train --models embedded_resnet --device "$DEVICE" --progress off 2>&1 | tail -3

step "every method and metric once on the GPU: the default run on the first 16 images (5 min at most)"
mkdir -p runs/gpu_default/models && cp -rn runs/embedded/models/. runs/gpu_default/models/
ln -sfn "$PWD/runs/embedded/benchmark" runs/gpu_default/benchmark
timeout 300 $PY -m salbench run --device "$DEVICE" --limit 16 --output-root runs/gpu_default --progress off \
  2>&1 | grep -E "^error|Error|Traceback|done in|^===" | tail -40

step "stages under torchrun: generation and evaluation, 1 process per GPU, each precision"
for precision in fp32 bf16 fp16; do
  $PY benchmarks/bench_scaling.py --from-run runs/embedded --device "$DEVICE" --processes 1 --threads 4 \
    --limit "$LIMIT" --methods gradcam integrated_gradients rise scorecam --precision "$precision" \
    --out "$OUT/scaling_$precision.csv" --results-out "$OUT/results_$precision.csv" 2>&1 | tail -8
done
step "decoding workers off (the precision fp32 row above used the automatic count)"
$PY benchmarks/bench_scaling.py --from-run runs/embedded --device "$DEVICE" --processes 1 --threads 4 \
  --limit "$LIMIT" --methods gradcam integrated_gradients rise scorecam --workers 0 \
  --out "$OUT/scaling_workers0.csv" 2>&1 | tail -5
if [ "$GPUS" -gt 1 ]; then
  $PY benchmarks/bench_scaling.py --from-run runs/embedded --device "$DEVICE" --processes 1 "$GPUS" \
    --threads 4 --limit "$LIMIT" --out "$OUT/scaling_gpus.csv" 2>&1 | tail -8
fi

step "ResNet50 224x224 (random weights): metrics and sampling methods against their bare passes"
for precision in fp32 bf16; do
  $PY benchmarks/bench_metrics.py --models resnet50 --device "$DEVICE" --n-images "$N" --batch-sizes "$BATCH" \
    --bare-batch-sizes "$BARE" --repeats 2 --precision "$precision" \
    --only insertion_deletion,insertion_deletion_further,ad_ai,monotonicity,max_sensitivity \
    --out "$OUT/metrics_resnet50_$precision.csv" 2>&1 | grep -v "^\s*$" | tail -22
  $PY benchmarks/bench_methods.py --models resnet50 --device "$DEVICE" --n-images "$(( N / 4 > 0 ? N / 4 : 1 ))" \
    --batch-sizes "$BATCH" --bare-batch-sizes "$BARE" --repeats 1 --precision "$precision" \
    --only rise,scorecam,integrated_gradients,gradcam \
    --out "$OUT/methods_resnet50_$precision.csv" 2>&1 | grep -v "^\s*$" | tail -16
done
step done

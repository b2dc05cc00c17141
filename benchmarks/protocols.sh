#!/usr/bin/env bash
# The paper's test-time protocols on digits, and the dense form timed against the FC model, on a quiet machine.
#
#   bash benchmarks/protocols.sh [small]
#
# 1. trains the README's digits model (vgg11_bn, width 1/8, compact head; ~20 s on a quiet 2-core CPU) unless
#    $RUN/best.pt exists;
# 2. `vggbench eval` under every protocol at scales 32, 40, 48 (and the multi-scale rows), once with the paper's
#    5x5 grid and once with FiveCrop + --flip (digits are not mirror-safe: flips cost accuracy there);
# 3. `vggbench run`: VGG16 fp32 batch 1 as the FC model at 224 and as its dense form at 224, 256 and 384.
# Writes the logs and JSON under $OUT (default benchmarks/results/protocols). `small` is a check of the script
# (2 epochs, one scale, a 1/16-width VGG11 at 64 for step 3).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/benchmarks/results/protocols}
run=${RUN:-$out/digits-run}
mkdir -p "$out"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
vgg() { "$py" -m vggbench "$@"; }
small=${1:-}

epochs=20; scales=32,40,48; model=(--models vgg16); sizes=(224 256 384); fc=224; min_time=3
if [ "$small" = small ]; then
    epochs=2; scales=32; model=(--models vgg11 --width 0.0625 --num-classes 10); sizes=(64 96); fc=64; min_time=0.2
fi

if [ ! -f "$run/best.pt" ]; then
    vgg train vgg11_bn --data digits --width 0.125 --head compact --hidden 256 --optimizer adam --schedule cosine \
        --epochs "$epochs" --seed 0 --out "$run" --no-progress
fi
all=center,dense,multicrop,dense+multicrop
vgg eval vgg11_bn --weights "$run/best.pt" --data digits --protocol "$all" --scales "$scales" \
    | tee "$out/eval-grid.txt"
vgg eval vgg11_bn --weights "$run/best.pt" --data digits --protocol "$all" --scales "$scales" --crops five --flip \
    | tee "$out/eval-five-flip.txt"

common=("${model[@]}" --backends eager,onnxruntime,pt2,torchscript --memory-format contiguous --batch-sizes 1
        --min-time "$min_time" --export-cache "$out/exports" --no-progress)
vgg run "${common[@]}" --image-size "$fc" --out "$out/fc-$fc.json"
for size in "${sizes[@]}"; do
    vgg run "${common[@]}" --dense --dense-size "$fc" --image-size "$size" --out "$out/dense-$size.json"
done

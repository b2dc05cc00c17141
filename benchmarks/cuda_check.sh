#!/usr/bin/env bash
# The CUDA checks of vggbench, for a machine with an NVIDIA GPU and a Python that has torch, torchvision,
# onnx, onnxruntime(-gpu), click and tabulate (vggbench itself is taken from this checkout).
#
#   bash benchmarks/cuda_check.sh STAGE [ARGS...]
#   stages: env tests smoke verify train run best, and for one short GPU lease (each step time-boxed, about
#   4 minutes on an H200): lease = env, the CUDA-marked tests, eager, headline, graphs, oom and layers
#
# Each stage writes its log (and any JSON) under $RESULTS (default benchmarks/results/cuda-check) and goes
# on to the next step when one fails, saying so: the logs are the record. Where $OUT is set (the device
# tool's folder, which returns at most 8 files), the results folder is also packed into $OUT/cuda-check.tgz
# after each step. ARGS go to the stage's command (tests: pytest; run, best: vggbench run, e.g. --min-time 1).
# MODEL, SIZE and WIDTH change the lease stages' model (a dry run on the CPU: DEVICE=cpu MODEL=vgg11
# WIDTH=0.0625 SIZE=32 BIG=2048).
set -u
stage=${1:?stage: env tests smoke verify train run best lease headline graphs oom layers}
shift
out=${RESULTS:-benchmarks/results/cuda-check}
mkdir -p "$out"
device=${DEVICE:-cuda}
model=(--models "${MODEL:-vgg16}" --image-size "${SIZE:-224}" ${WIDTH:+--width "$WIDTH"})
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
vgg=("$py" -m vggbench)  # an array, not a function: timeout runs it
step() {  # step NAME COMMAND...: run (for at most $LIMIT seconds, if set), log to RESULTS/NAME.log, report the exit status
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if [ -n "${LIMIT:-}" ]; then timeout "$LIMIT" "$@"; else "$@"; fi >"$out/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-15}" "$out/$name.log"
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    if [ -n "${OUT:-}" ]; then tar czf "$OUT/cuda-check.tgz" -C "$out" .; fi  # back even if a later step hangs
}

tiny=(--width 0.0625 --image-size 32 --head compact)
case $stage in
env)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$py" - <<'EOF'
import onnxruntime as ort, torch, torchvision
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "torchvision", torchvision.__version__)
print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
print("onnxruntime", ort.__version__, ort.get_available_providers())
EOF
    ;;
tests)  # the whole suite with a GPU present: the CUDA tests run, and the no-CUDA error tests skip
    TAIL=40 step tests "$py" -m pytest -q -p no:logging -n 8 "${@:-tests}"
    ;;
smoke)  # every backend x precision x layout on a tiny VGG: rows ok, or a one-line reason
    common=(--device cuda --models vgg11_bn "${tiny[@]}" --batch-sizes 1,8 --warmup 2 --warmup-time 0.1
            --min-time 0.2 --min-iters 5 --export-cache "${CACHE:-/tmp/vggbench-cache}" --no-progress)
    TAIL=80 step smoke "${vgg[@]}" run "${common[@]}" --backends eager,torchscript,pt2,onnxruntime,ort-tensorrt,tensorrt \
        --precision fp32,amp,bf16,fp16 --memory-format contiguous,channels_last --out "$out/smoke.json"
    TAIL=20 step smoke-compile "${vgg[@]}" run "${common[@]}" --backends compile --precision amp \
        --memory-format channels_last --out "$out/smoke-compile.json"
    ;;
verify)  # full VGG16: export on the CPU, verify every artifact on the GPU in each precision
    step export "${vgg[@]}" export vgg16 --out "$out/vgg16" --force
    TAIL=40 step verify "${vgg[@]}" verify "$out/vgg16" --device cuda --precision fp32,fp16,amp,bf16 --channels-last
    ;;
train)  # real data (scikit-learn's digits), AMP with a grad scaler, then eval
    step train "${vgg[@]}" train vgg11_bn --width 0.125 --head compact --hidden 256 --optimizer adam --schedule cosine \
        --data digits --device cuda --amp --channels-last --epochs 20 --out "$out/train" --no-progress --json
    ;;
run)  # the default CUDA suite: VGG16 at 224, batch 1 to 256
    TAIL=70 step run "${vgg[@]}" run --device cuda --export-cache "${CACHE:-/tmp/vggbench-cache}" --out "$out/run-cuda.json" --no-progress "$@"
    ;;
best)
    TAIL=50 step best "${vgg[@]}" run --best --device cuda --export-cache "${CACHE:-/tmp/vggbench-cache}" --out "$out/best-cuda.json" \
        --no-progress "$@"
    ;;
headline)  # issue 15's batch-256 figure without TensorRT (its libraries cannot travel to a lent machine)
    TAIL=20 step headline "${vgg[@]}" run --device "$device" "${model[@]}" --backends eager,compile --precision amp,bf16 \
        --memory-format channels_last --batch-sizes 256 --min-time 3 --cudnn-benchmark --out "$out/headline.json" \
        --no-progress
    ;;
graphs)  # torch.compile's CUDA graphs
    TAIL=20 step graphs "${vgg[@]}" run --device "$device" "${model[@]}" --backends compile --compile-mode reduce-overhead \
        --precision amp --memory-format channels_last --batch-sizes 1,32 --min-time 1 --out "$out/graphs.json" --no-progress
    ;;
oom)  # the sweep's out-of-memory back-off: batches up to BIG (16384 fills no GPU with VGG16 at 224)
    TAIL=20 step oom "${vgg[@]}" run --device "$device" "${model[@]}" --backends eager --precision amp \
        --memory-format channels_last --batch-sizes "1024..${BIG:-16384}" --warmup 1 --warmup-time 0 --min-time 0.5 \
        --min-iters 3 --out "$out/oom.json" --no-progress
    ;;
layers)  # the per-stage error profile of bf16 and fp16 on the GPU, every stage
    args=("${model[@]}"); args=("${args[@]:1}")  # export takes the model name without --models
    step export-fp32 "${vgg[@]}" export "${args[@]}" --format pt2 --out "$out/export-fp32" --force --no-verify
    step export-fp16 "${vgg[@]}" export "${args[@]}" --format pt2 --precision fp16 --out "$out/export-fp16" --force --no-verify
    TAIL=30 step layers-bf16 "${vgg[@]}" verify "$out/export-fp32" --device "$device" --precision bf16 --layers --all-stages \
        --plot "$out/layers-bf16.png" --out "$out/layers-bf16.json"
    TAIL=30 step layers-fp16 "${vgg[@]}" verify "$out/export-fp16" --device "$device" --precision fp16 --layers --all-stages \
        --plot "$out/layers-fp16.png" --out "$out/layers-fp16.json"
    rm -rf "$out/export-fp32" "$out/export-fp16"
    ;;
lease)  # all of the short checks, time-boxed, for one lease of a lent GPU
    self=$0
    LIMIT=30 bash "$self" env
    LIMIT=90 TAIL=10 step tests "$py" -m pytest -q -m cuda -p no:cacheprovider tests
    LIMIT=90 TAIL=20 step eager "${vgg[@]}" run --device "$device" "${model[@]}" --backends eager --precision fp32,amp,bf16 \
        --memory-format contiguous,channels_last --batch-sizes 1,256 --min-time 1 --out "$out/eager.json" --no-progress
    for s in headline graphs oom layers; do LIMIT=150 bash "$self" $s; done
    ;;
*)
    echo "unknown stage $stage" >&2; exit 2
    ;;
esac

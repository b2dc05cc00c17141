#!/usr/bin/env bash
# The CUDA checks of vggbench, for a machine with an NVIDIA GPU and a Python that has torch, torchvision,
# onnx, onnxruntime(-gpu), click and tabulate (vggbench itself is taken from this checkout).
#
#   bash benchmarks/cuda_check.sh STAGE [ARGS...]    stages: env tests smoke verify train run best
#
# Each stage writes its log (and any JSON) under $OUT (default benchmarks/results/cuda-check) and goes
# on to the next step when one fails, saying so: the logs are the record. ARGS go to the stage's command
# (tests: pytest; run, best: vggbench run, e.g. --min-time 1).
set -u
stage=${1:?stage: env tests smoke verify train run best}
shift
out=${OUT:-benchmarks/results/cuda-check}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
vgg() { "$py" -c 'import sys; from vggbench.cli import main; sys.argv[0] = "vggbench"; main()' "$@"; }
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, report the exit status
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-15}" "$out/$name.log"
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
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
    TAIL=80 step smoke vgg run "${common[@]}" --backends eager,torchscript,pt2,onnxruntime,ort-tensorrt,tensorrt \
        --precision fp32,amp,bf16,fp16 --memory-format contiguous,channels_last --out "$out/smoke.json"
    TAIL=20 step smoke-compile vgg run "${common[@]}" --backends compile --precision amp \
        --memory-format channels_last --out "$out/smoke-compile.json"
    ;;
verify)  # full VGG16: export on the CPU, verify every artifact on the GPU in each precision
    step export vgg export vgg16 --out "$out/vgg16" --force
    TAIL=40 step verify vgg verify "$out/vgg16" --device cuda --precision fp32,fp16,amp,bf16 --channels-last
    ;;
train)  # real data (scikit-learn's digits), AMP with a grad scaler, then eval
    step train vgg train vgg11_bn --width 0.125 --head compact --hidden 256 --optimizer adam --schedule cosine \
        --data digits --device cuda --amp --channels-last --epochs 20 --out "$out/train" --no-progress --json
    ;;
run)  # the default CUDA suite: VGG16 at 224, batch 1 to 256
    TAIL=70 step run vgg run --device cuda --export-cache "${CACHE:-/tmp/vggbench-cache}" --out "$out/run-cuda.json" --no-progress "$@"
    ;;
best)
    TAIL=50 step best vgg run --best --device cuda --export-cache "${CACHE:-/tmp/vggbench-cache}" --out "$out/best-cuda.json" \
        --no-progress "$@"
    ;;
*)
    echo "unknown stage $stage" >&2; exit 2
    ;;
esac

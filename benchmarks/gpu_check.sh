#!/usr/bin/env bash
# The GPU checks, in one run of under 8 minutes, on a machine with one CUDA GPU and no internet:
#   bash benchmarks/gpu_check.sh <out folder> [data root]
# 1. the GPU rows of `make bench` (tutorial loop, plain loop, vae_lightning default command, data on the host vs on
#    the device, model.compile=true model.compile_mode=reduce-overhead, bf16-mixed), 3 epochs each on Fashion-MNIST;
# 2. the default model trained for 2 epochs with `trainer.accelerator=gpu` (MNIST);
# 3. that run evaluated at k=5000.
# Every figure goes into <out folder>/gpu_check.json (plus bench.json and the logs). The first thing that does not
# work stops the script with one line on stderr and exit status 1.
#
# Data: a folder holding MNIST/raw and FashionMNIST/raw in torchvision's layout, the files plain or gzipped (default:
# ../shared/data, else .gpu_data). Python packages the machine lacks (e.g. hydra-core, omegaconf,
# antlr4-python3-runtime) are installed from wheels in .whl/ when that folder exists. To prepare a copy that travels
# (both folders are git-ignored through .git/info/exclude):
#   mkdir -p .gpu_data/MNIST/raw .gpu_data/FashionMNIST/raw
#   for d in MNIST FashionMNIST; do for f in ../shared/data/$d/raw/*-ubyte; do gzip -c $f > .gpu_data/$d/raw/$(basename $f).gz; done; done
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl hydra-core==1.3.2 omegaconf==2.3.0 \
#       antlr4-python3-runtime==4.9.3   # (antlr4 4.9.3 is a source package: build its wheel with `pip wheel`)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash benchmarks/gpu_check.sh <out folder> [data root]}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu EVAL_K=100: a dry run of the whole script on a machine without a GPU
EVAL_K=${EVAL_K:-5000}
ROWS=tutorial,plain,plain_bf16,lightning_val_on,default_command,host_data,compile_reduce_overhead,bf16,default_command_bf16
[ "$DEVICE" = cpu ] && ROWS=tutorial,plain,default_command,default_command_fp32
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
STARTED=$(date +%s)

fail() {  # one line, non-zero
    echo "gpu_check: FAILED at $1: ${2:-see $OUT}" >&2
    exit 1
}

step() {  # step <name> <seconds> <command...>: run it with a time limit, its output in $OUT/<name>.log
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        local code=$?
        local last=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1)
        [ "$code" = 124 ] && last="timed out after ${limit}s"
        fail "$name" "$last"
    fi
    echo "$name: $(( $(date +%s) - t0 )) s" >&2
}

# 0. the machine: packages, GPU, data
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl \
        || fail "install .whl" "pip could not install the wheels in .whl/"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, lightning, hydra, omegaconf, torchvision, torchmetrics, tensorboard" 2>"$OUT/imports.log" \
    || fail "imports" "$(tail -n 1 "$OUT/imports.log") (put the missing wheels in .whl/)"
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name())" \
        >"$OUT/gpu.log" 2>&1 || fail "gpu" "$(tail -n 1 "$OUT/gpu.log")"
fi
ACCELERATOR=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)

SRC=${2:-}
[ -z "$SRC" ] && { [ -d ../shared/data/MNIST/raw ] && SRC=../shared/data || SRC=.gpu_data; }
DATA="$WORK/data"
for d in MNIST FashionMNIST; do
    mkdir -p "$DATA/$d/raw"
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ -f "$SRC/$d/raw/$f" ]; then ln -s "$(cd "$SRC/$d/raw" && pwd)/$f" "$DATA/$d/raw/$f"
        elif [ -f "$SRC/$d/raw/$f.gz" ]; then gunzip -c "$SRC/$d/raw/$f.gz" >"$DATA/$d/raw/$f"
        else fail "data" "$SRC/$d/raw/$f(.gz) is missing: give the data root as the second argument"
        fi
    done
done

# 1. the GPU rows of make bench
step bench 330 "$PY" benchmarks/bench_train.py --device "$DEVICE" --epochs 3 --data "$DATA" --out "$OUT/bench.json" --rows "$ROWS"

# 2. the headline command, 2 epochs
RUN="$WORK/run"
step train 150 "$PY" -m vae_lightning.train trainer.accelerator=$ACCELERATOR trainer.max_epochs=2 "data.root=$DATA" \
    "hydra.run.dir=$RUN" print_config=false

# 3. eval at k=5000 (decoder passes batched 500k at a time: GPU memory, not host memory, bounds them)
step eval 120 "$PY" -m vae_lightning.eval "ckpt_path=$RUN/checkpoints/last.ckpt" eval.iw_samples=$EVAL_K device=$DEVICE \
    eval.max_decodes=500000 eval.batch_size=500 "eval.out=$WORK/eval.json"

# one JSON with every figure
"$PY" - "$OUT" "$RUN" "$WORK/eval.json" "$STARTED" >"$OUT/summary.log" 2>&1 <<'EOF' || fail "summary" "$(tail -n 1 "$OUT/summary.log")"
import json, sys, time
from pathlib import Path

import torch

out, run, eval_json, started = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
bench = json.loads((out / "bench.json").read_text())
rows = {r["key"]: r for r in bench["rows"]}
metrics = json.loads((run / "metrics.json").read_text())
info = json.loads((run / "run_info.json").read_text())
result = json.loads(eval_json.read_text())
tutorial, default = rows["tutorial"]["sec_per_epoch"], rows["default_command"]["sec_per_epoch"]
report = {
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "bench": {k: {"label": r["name"], "sec_per_epoch": r["sec_per_epoch"], "samples_per_s": r["samples_per_s"],
                  "ratio_to_tutorial": r.get("ratio_to_a", 1.0), "val_loss": r["val_loss"],
                  "peak_mem_mib": r["peak_mem_mib"]} for k, r in rows.items()},
    "default_command_speedup_vs_tutorial": tutorial / default,
    "goal_default_command_30x": tutorial / default >= 30,
    "train_2_epochs": {"wall_time_s": info["wall_time_s"], "status": info["status"], "epochs": metrics["epochs"],
                       "val_loss": metrics["metrics"]["val/loss"], "test_loss": metrics["metrics"].get("test/loss")},
    "eval_k5000": {k: result[k] for k in ("neg_elbo", "iw_nll", "active_units", "iw_samples", "wall_time_s")},
    "script_wall_time_s": time.time() - started,
}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
EOF
echo "gpu_check: done in $(( $(date +%s) - STARTED )) s; default command $("$PY" -c "import json;d=json.load(open('$OUT/gpu_check.json'));print(f\"{d['default_command_speedup_vs_tutorial']:.1f}x\")") faster per epoch than the tutorial loop; figures in $OUT/gpu_check.json" >&2

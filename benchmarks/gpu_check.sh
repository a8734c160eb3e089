#!/usr/bin/env bash
# The CUDA path and its speed, on a machine with a GPU, in one go (each part under its own time limit, so that a
# slow part does not take the others' time):
#   1. the machine: nvidia-smi, Python, torch and its CUDA;
#   2. speed: benchmarks/bench_select.py, the six training scripts (CORRO's and BOReL's phases apart) at the
#      Point-Robot default preset and at CSRO's sizes, on the GPU (every script uses it when present);
#   3. the CUDA path: a tiny select.py run with every protocol, on the GPU, kept as tiny_cuda.tar.gz (its dataset
#      and run record) so that its checkpoint can be re-evaluated and resumed on a CPU-only machine;
#   4. the training scripts' tests, whose runs then train and evaluate on the GPU (pytest-xdist if installed);
#   5. collect_sac.py at the reference preset for a few thousand steps: the env-steps/s of a GPU collection.
#
#     bash benchmarks/gpu_check.sh OUT_DIR        # OUT_DIR: default runs/gpu_check
#
# Needs the project's requirements (any torch with CUDA). STEPS (default 300) sets bench_select.py's steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
TMP=$(mktemp -d)
export PYTHONUNBUFFERED=1

part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, output to OUT/NAME.txt and the console
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
}

part machine 60 bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else \"\")'"

part bench 280 "$PY" benchmarks/bench_select.py --scripts select.py baselines/csro.py baselines/focal.py \
  baselines/offpearl.py baselines/corro.py baselines/borel.py --presets cpu reference --steps "$STEPS" --threads 1

part tiny_cuda 60 bash -c "$PY tests/test_select.py $TMP/data && $PY select.py --data-dir $TMP/data \
  --runs-dir $TMP/runs --run-name tiny_cuda --num-train-steps 40 --eval-every 20 --log-every 10 \
  --meta-batch-size 4 --batch-size 16 --context-size 16 --latent-dim 4 --encoder-hidden 16 16 --rl-hidden 16 16 \
  --eval-runs 1 && tar czf $OUT/tiny_cuda.tar.gz -C $TMP data runs"

# -v: a line per test, so that a run cut off by its time limit still says which passed
xdist=$($PY -c 'import xdist' 2>/dev/null && echo "-n 12")
# shellcheck disable=SC2086
part tests 250 "$PY" -m pytest -v -p no:cacheprovider $xdist tests/test_select.py tests/test_baselines.py \
  tests/test_corro_borel.py

part collect 50 "$PY" collect_sac.py --env-id cheetah-vel --preset reference --data-dir "$TMP/collect" \
  --runs-dir "$TMP/runs" --total-steps 3000 --random-steps 1000 --checkpoint-every 1000 --first-checkpoint 2000 \
  --episodes-per-checkpoint 1
rm -rf "$TMP"

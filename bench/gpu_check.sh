#!/usr/bin/env bash
# `make gpu-check`: the GPU engine checked on a bare GPU machine in one call, within about 8 minutes.
#
#   make gpu-wheels     # first, on a machine with the package registry: fills .whl/ (git-ignored) with the wheels
#                       # the GPU image lacks (it has torch 2.11 and most of the rest, but no registry)
#   make gpu-check      # then, on the GPU machine, from the project root (carry .whl along)
#
# Stages, each under a timeout cut to what is left of BUDGET seconds (so a slow stage cannot eat the rest):
#   setup     python3 with CUDA torch; the wheels from .whl/ into $WORK/site; versions
#   tests     the device-related tests, the engine ones on CUDA (HIGGS_TEST_DEVICE=cuda)
#   ckpt      the full-size random checkpoint (the real architecture, bf16), reused when present
#   probe     python -m bench.gpu_probe: compiled vs eager greedy codes (match fraction), seeded alone vs batched,
#             graphs at warm-up, recompiles after it, host syncs and transfers per step, ms per step at 1-32 rows
#   bench     python -m bench --device cuda --size full at 1, 8, 16 and 32 clients -> bench/results/*-cuda.json
# Knobs (environment): OUT (results, default ./gpu_check_out, at most 8 files), WORK (/tmp/higgs-gpu-check:
# packages, checkpoint, inductor cache), BUDGET (480), STAGES ("setup tests ckpt probe bench"), SIZE (full),
# FRAMES (150), CONC_FRAMES (100), CLIENTS (1,8,16,32).
# On a machine without CUDA it runs up to the first CUDA call and says where it stopped (a dry run).
set -uo pipefail
ROOT=$(pwd)
[ -d "$ROOT/model_pool" ] && [ -d "$ROOT/bench" ] || { echo "run from the project root"; exit 2; }
OUT=${OUT:-$ROOT/gpu_check_out}
WORK=${WORK:-/tmp/higgs-gpu-check}
BUDGET=${BUDGET:-480}
STAGES=${STAGES:-"setup tests ckpt probe bench"}
SIZE=${SIZE:-full}
FRAMES=${FRAMES:-150}
CONC_FRAMES=${CONC_FRAMES:-100}
CLIENTS=${CLIENTS:-1,8,16,32}
PY=${PY:-python3}
CKPT=$WORK/ckpt-$SIZE
mkdir -p "$OUT" "$WORK"
START=$(date +%s)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
export PYTHONPATH=$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
want() { case " $STAGES " in *" $1 "*) return 0;; *) return 1;; esac; }
# stage NAME CAP LOG CMD...: run CMD with a timeout of min(CAP, what is left); its process group is stopped with it
stage() {
  local name=$1 cap=$2 log=$3; shift 3
  local limit; limit=$(left); (( limit > cap )) && limit=$cap
  if (( limit < 15 )); then note "[$name] skipped: $(left)s of the budget left"; return 99; fi
  local began; began=$(date +%s)
  timeout -k 20 "$limit" "$@" >> "$log" 2>&1; local rc=$?
  note "[$name] rc=$rc in $(( $(date +%s) - began ))s (limit ${limit}s)$( ((rc == 124)) && echo ' TIMED OUT')"
  return $rc
}

setup() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  if ls "$ROOT"/.whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      "$ROOT"/.whl/*.whl || return 1
  else
    echo "no .whl/ wheels: using $PY's own packages (make gpu-wheels fills .whl/ on a machine with a registry)"
  fi
  "$PY" - <<'PY'
import sys, torch, transformers, gunicorn, soundfile, soxr, av
from importlib.metadata import version
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "flask", version("flask"), "gunicorn", gunicorn.__version__)
assert transformers.__version__ == "5.23.0", "transformers is not the pinned 5.23.0"
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), "free/total GiB", [round(x / 2**30, 1) for x in torch.cuda.mem_get_info(0)])
PY
}

if want setup; then
  export -f setup
  export PY ROOT WORK
  stage setup 120 "$OUT/setup.log" bash -c setup
  tail -3 "$OUT/setup.log" | tee -a "$SUMMARY"
fi
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
note "cuda available: $CUDA"

if want tests; then
  stage unit-tests 60 "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_sampling.py \
    tests/unit/test_workers.py tests/unit/test_pool.py
  HIGGS_TEST_DEVICE=cuda stage cuda-tests 150 "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider -x \
    tests/unit/test_compiled.py tests/unit/test_isolation.py tests/unit/test_engine.py
  grep -h -E "passed|failed|error" "$OUT/tests.log" | tail -4 | tee -a "$SUMMARY"
fi

if want ckpt && [ ! -f "$CKPT/TINY_CHECKPOINT.json" ]; then
  stage checkpoint 180 "$OUT/setup.log" "$PY" -m model_pool.tiny "$CKPT" --size "$SIZE"
fi

if want probe; then
  TORCH_LOGS="recompiles,graph_breaks" stage probe 240 "$OUT/probe.log" "$PY" -m bench.gpu_probe "$CKPT" \
    --frames "$FRAMES" --out "$OUT/probe.json"
  grep -h -E "^RESULT|Error|error:" "$OUT/probe.log" | cut -c1-400 | tee -a "$SUMMARY"
fi

if want bench; then
  before=$(ls -t bench/results/*.json 2>/dev/null | head -1)
  stage bench 420 "$OUT/bench.log" "$PY" -m bench --device cuda --size "$SIZE" --checkpoint "$CKPT" --compile \
    --servers on --clients "$CLIENTS" --frames "$FRAMES" --concurrency-frames "$CONC_FRAMES" --repeats 1
  after=$(ls -t bench/results/*.json 2>/dev/null | head -1)
  [ -n "$after" ] && [ "$after" != "$before" ] && cp "$after" "$OUT/bench_result.json"
  grep -h -E "^[a-z_]{1,4} |^ratios|^  [a-z0-9_]+.*: " "$OUT/bench.log" | cut -c1-160 | tee -a "$SUMMARY"
fi
note "=== done in $(( $(date +%s) - START ))s ==="

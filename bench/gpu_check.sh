#!/usr/bin/env bash
# `make gpu-check`: the GPU path checked on a bare GPU machine in one call of at most 6 minutes (BUDGET seconds,
# compilation included), from the project root:
#
#   make gpu-wheels     # first, where the package registry is: .whl/site.tar.xz, everything requirements.txt needs
#                       # beyond the GPU image, derived (bench/gpu_wheels.py); carry .whl along
#   make gpu-check      # then, on the GPU machine
#
# Stages, each under a time cap cut to what is left of the budget (a slow stage cannot eat the rest):
#   setup       the wheels unpacked onto PYTHONPATH; versions; every requirement met? (the image's own list kept)
#   checkpoint  model_pool.tiny --size full built with the model on the GPU (seconds; the CPU takes 2 minutes),
#               in the background while the tests run
#   tests       tests/unit with HIGGS_TEST_DEVICE=cuda, in parallel workers (one per test file)
#   probe       python -m bench.gpu_probe: step rates at 1-64 rows, the compiled path's batch invariance, logits
#               agreement with the eager model and the first near-tie, where a step's time goes, the codec
#   server      python -m bench.gpu_server: the real server through HTTP at 1, 8, 16, 32 and 64 streams
#   quant       python -m bench.quant (issue 30), when it exists: each quantization's weight bytes, slots, frames/s
# Everything lands in OUT (at most 8 files): gpu_check.json (every figure), summary.txt, and the stages' logs.
# Without CUDA it is a dry run: each stage runs up to its first CUDA call and says where it stopped (CI runs it:
# tests/unit/test_gpu_check.py). DEVICE=cpu rehearses the whole run here on a tiny checkpoint (no device tests).
# Knobs: OUT (./gpu_check_out), WORK (/tmp/higgs-gpu-check), BUDGET (345), STAGES, DEVICE (cuda), SIZE (full),
# SLOTS (64), CONTEXT (8192), FRAMES (100), LEVELS (1,8,16,32,64), WORKERS (12), QUANTIZATIONS (int8,fp8,int4),
# PY (python3).
set -uo pipefail
ROOT=$(pwd)
[ -d "$ROOT/model_pool" ] && [ -d "$ROOT/bench" ] || { echo "run from the project root"; exit 2; }
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then
  SIZE=${SIZE:-tiny}; SLOTS=${SLOTS:-8}; CONTEXT=${CONTEXT:-2048}; FRAMES=${FRAMES:-40}; LEVELS=${LEVELS:-1,4,8}
  BUDGET=${BUDGET:-900}
fi
OUT=${OUT:-$ROOT/gpu_check_out}
WORK=${WORK:-/tmp/higgs-gpu-check}
BUDGET=${BUDGET:-345}
STAGES=${STAGES:-"setup checkpoint tests probe server quant"}
SIZE=${SIZE:-full}
SLOTS=${SLOTS:-64}
CONTEXT=${CONTEXT:-8192}
FRAMES=${FRAMES:-100}
LEVELS=${LEVELS:-1,8,16,32,64}
WORKERS=${WORKERS:-12}
PY=${PY:-python3}
DRY=3  # a stage that stopped before its first CUDA call (bench/gpu_check.py, DRY_RUN)
SD=$WORK/stages
CKPT=$WORK/ckpt-$SIZE
START=$(date +%s)
rm -rf "$SD"
mkdir -p "$OUT" "$SD"
(cd "$OUT" && rm -f summary.txt gpu_check.json setup.log tests.log probe.log server.log server_api.log quant.log)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
IMAGE_PYTHONPATH=${PYTHONPATH:-}
export PYTHONPATH=$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
want() { case " $STAGES " in *" $1 "*) return 0;; *) return 1;; esac; }
note() { echo "[$(( $(date +%s) - START ))s] $*"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$SD/stages.tsv"; }
# stage NAME CAP LOG CMD...: CMD under min(CAP, what is left), interrupted (SIGINT: pytest still writes its report)
# at the limit and killed 15 s later; its line goes to stages.tsv
stage() {
  local name=$1 cap=$2 log=$3; shift 3
  local limit; limit=$(left); (( limit > cap )) && limit=$cap
  if (( limit < 10 )); then record "$name" 99 0 0 "skipped: $(left)s of the budget left"; note "$name skipped"; return 99; fi
  local began rc took why=""
  began=$(date +%s)
  timeout -s INT -k 15 "$limit" "$@" >> "$log" 2>&1; rc=$?
  took=$(( $(date +%s) - began ))
  (( rc == 124 )) && why="cut at its time cap"
  (( rc == DRY )) && why=$(grep -h "^DRY RUN" "$log" | tail -1)
  record "$name" "$rc" "$took" "$limit" "$why"
  note "$name: rc=$rc in ${took}s (cap ${limit}s) $why"
  return $rc
}

setup() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  PYTHONPATH=$IMAGE_PYTHONPATH "$PY" -m pip list --format=freeze > "$SD/image_packages.txt" 2>/dev/null
  if [ -f "$ROOT/.whl/site.tar.xz" ]; then
    if [ ! -f "$WORK/site/.unpacked" ] || [ "$ROOT/.whl/site.tar.xz" -nt "$WORK/site/.unpacked" ]; then
      rm -rf "$WORK/site" && mkdir -p "$WORK/site" && tar -xJf "$ROOT/.whl/site.tar.xz" -C "$WORK/site" \
        && touch "$WORK/site/.unpacked" || return 1
    fi
    echo "packages from .whl/site.tar.xz in $WORK/site"
  elif ls "$ROOT"/.whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      "$ROOT"/.whl/*.whl || return 1
  else
    echo "no .whl/: $PY's own packages (make gpu-wheels fills .whl/ where the package registry is)"
  fi
  "$PY" -m bench.gpu_check setup --json "$SD/setup.json" --image "$SD/image_packages.txt"
}

# The dry run's tests: collecting imports every test module and the helpers; the first CUDA call is the `loaded`
# fixture's, which the first engine test asks for.
tests_dry() {
  HIGGS_TEST_DEVICE=cuda "$PY" -m pytest --collect-only -q -p no:cacheprovider tests/unit || return 1
  local where="tests/conftest.py's loaded fixture, load(..., torch.device('cuda'))"
  printf '{"dry_run": {"stopped_before": "%s"}}\n' "$where" > "$SD/tests.json"
  echo "DRY RUN: no CUDA here; collected tests/unit, stopped before the first CUDA call: $where"
  return "$DRY"
}

export -f setup tests_dry
export PY ROOT WORK SD IMAGE_PYTHONPATH DRY
if want setup; then
  stage setup 40 "$OUT/setup.log" bash -c setup
fi
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
DRY_RUN=0
if [ "$DEVICE" != cpu ] && [ "$CUDA" != 1 ]; then
  DRY_RUN=1
  note "no CUDA here: a dry run, each stage up to its first CUDA call"
fi

if want checkpoint; then
  stage checkpoint 150 "$OUT/setup.log" "$PY" -m bench.gpu_check checkpoint "$CKPT" --size "$SIZE" \
    --device "$DEVICE" --json "$SD/checkpoint.json" &
  CKPT_PID=$!
fi

if want tests; then
  if [ "$DEVICE" = cpu ]; then
    record tests 99 0 0 "skipped: on the CPU the suite runs as CI runs it"
  elif (( DRY_RUN )); then
    stage tests 60 "$OUT/tests.log" bash -c tests_dry
  else
    stage tests 110 "$OUT/tests.log" env HIGGS_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider \
      -n "$WORKERS" --dist loadfile --timeout 100 -rfE --junitxml "$SD/tests.xml" tests/unit
  fi
fi
[ -n "${CKPT_PID:-}" ] && wait "$CKPT_PID"

if want probe; then
  TORCH_LOGS=${TORCH_LOGS:-recompiles} stage probe 130 "$OUT/probe.log" "$PY" -m bench.gpu_probe "$CKPT" \
    --device "$DEVICE" --slots "$SLOTS" --context "$CONTEXT" --frames "$FRAMES" --json "$SD/probe.json"
fi

if want server; then
  room=$(( $(left) - 15 ))
  stage server "$(( room > 100 ? 100 : room ))" "$OUT/server.log" "$PY" -m bench.gpu_server "$CKPT" \
    --device "$DEVICE" --slots "$SLOTS" --levels "$LEVELS" --timeout "$(( room > 20 ? room - 10 : 10 ))" \
    --json "$SD/server.json" --logs "$OUT"
fi

# Quantization figures (issue 30), when bench/quant.py exists: weight bytes, slots and frames/s per quantization
# (the unquantized bf16 is the probe's), eager to fit what is left of the budget. In the dry run: its CLI only.
if want quant && [ -f "$ROOT/bench/quant.py" ]; then
  if (( DRY_RUN )); then
    stage quant 30 "$OUT/quant.log" bash -c '"$PY" -m bench.quant --help && echo "DRY RUN: no CUDA here; \
bench.quant answers --help, stopped before its first CUDA call: loading the checkpoint onto cuda" && exit "$DRY"'
  else
    stage quant 90 "$OUT/quant.log" "$PY" -m bench.quant "$CKPT" --device "$DEVICE" \
      --quantizations "${QUANTIZATIONS:-int8,fp8,int4}" --compile off --frames 40 --out "$SD/quant.json"
  fi
fi

"$PY" -m bench.gpu_check report "$SD" "$OUT" --budget "$BUDGET"
note "done; $(ls "$OUT" | wc -l) files in $OUT"
# Failed: a stage that neither passed nor stopped at its first CUDA call (nor was skipped for time).
! cut -f2 "$SD/stages.tsv" | grep -q -v -x -E "0|$DRY|99"

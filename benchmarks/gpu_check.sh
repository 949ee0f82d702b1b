#!/usr/bin/env bash
# The prepared GPU check: kernel tests, a whole-model smoke test and the GPU benchmarks, in one command.
#
# Usage, on a CUDA machine with the checkout and .whl/ (from benchmarks/gpu_wheels.sh):
#   bash benchmarks/gpu_check.sh OUTDIR
# It installs hf_hope and the wheels into a fresh target folder (the machine's own torch and triton stay), then
# runs each part under its own time budget and writes one log per part and summary.md (part, status, seconds)
# into OUTDIR. The budgets add up to 8 min 40 s, so that one 10-minute command (timeout 540 s or more) holds it:
#   install 45 s | kernel tests 150 s | smoke 45 s | kernel bench 90 s | HOPE vs Llama 120 s | clock bench 30 s |
#   Trainer with FSDP2 40 s (last, so that it can never take time from the others)
# A part that fails or runs out of time is marked so and the next one still runs.
# `DRY_RUN=1` runs it on a CPU with .venv's Python: the install of hf_hope alone (the wheels are built for the GPU
# machine's Python 3.12 and pin .venv's versions), the kernel tests and the smoke test in Triton's interpreter at
# small sizes, and only `--help` of the benchmarks (they need CUDA), with the budgets multiplied by 10.
set -u
out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-python3}
site=$(mktemp -d /tmp/hf_hope_site.XXXXXX)
scale=1
device=cuda
if [ "${DRY_RUN:-0}" = 1 ]; then
  scale=10
  device=cpu
  python=$PWD/.venv/bin/python
  export TRITON_INTERPRET=1
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$site"
failed=0
printf '| part | status | seconds | budget s | log |\n| --- | --- | --- | --- | --- |\n' >"$out/summary.md"

part() {  # part NAME BUDGET_SECONDS COMMAND...
  local name=$1 budget=$(($2 * scale)) start status
  shift 2
  echo "== $name (budget ${budget} s): $*"
  start=$(date +%s)
  timeout "$budget" bash -c '"$@"' "$name" "$@" >"$out/$name.log" 2>&1
  case $? in
    0) status=passed ;;
    124) status="TIMED OUT" failed=1 ;;
    *) status=FAILED failed=1 ;;
  esac
  echo "| $name | $status | $(($(date +%s) - start)) | $budget | $name.log |" >>"$out/summary.md"
  tail -n 3 "$out/$name.log"
}

install() {
  if [ "$device" = cuda ]; then
    "$python" -m pip install --no-index --no-deps --no-compile --target "$site" .whl/*.whl || return
  fi
  "$python" -m pip install --no-index --no-deps --no-build-isolation --no-compile --target "$site" . &&
    "$python" -c "import torch, triton, transformers, hf_hope; print(torch.__version__, triton.__version__, \
transformers.__version__, hf_hope.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
}

kernel_tests() {  # from a copy of the tests, so that `import hf_hope` finds the installed package, not ./hf_hope
  local scratch
  scratch=$(mktemp -d /tmp/hf_hope_tests.XXXXXX)
  cp -r tests pyproject.toml "$scratch" && cd "$scratch" &&
    "$python" -m pytest -q -p no:cacheprovider tests/modeling/test_memory_kernels.py tests/clock/test_clock_kernels.py
}

fsdp_trainer_test() {  # Trainer with FSDP2 and the level clock: accelerate runs FSDP only on accelerators
  local scratch
  scratch=$(mktemp -d /tmp/hf_hope_tests.XXXXXX)
  cp -r tests pyproject.toml "$scratch" && cd "$scratch" &&
    "$python" -m pytest -q -p no:cacheprovider -rs tests/clock/test_level_clock_fsdp_trainer.py
}

benchmark() {  # the benchmarks need CUDA: the dry run checks that they import and parse their flags
  if [ "$device" = cpu ]; then "$python" "$1" --help; else "$python" "$@"; fi
}

export python site device
export -f install kernel_tests fsdp_trainer_test benchmark
part install 45 install
part kernel_tests 150 kernel_tests
part smoke 45 "$python" benchmarks/gpu_smoke.py --device "$device"
part bench_kernels 90 benchmark benchmarks/bench_hope_kernels.py
part bench_hope_vs_llama 120 benchmark benchmarks/bench_hope_vs_llama_long.py --lengths 4096 32768 --contexts 32768 \
  --repeats 2 --warmup 1
part bench_clock 30 benchmark benchmarks/bench_clock_kernels.py
part fsdp_trainer 40 fsdp_trainer_test
cat "$out/summary.md"
exit $failed

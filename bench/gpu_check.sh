#!/usr/bin/env bash
# The checks worth running when a CUDA GPU is at hand, in the order of their value, each with
# its own time limit and its whole log under LOG_DIR (default ./gpu-logs):
#   1. bench/vision_train.py: the fast recipe's accuracy against training time on the GPU;
#   2. bench/chat_train.py: tutorial-compat against the default recipe (time to quality and
#      throughput on the GPU);
#   3. the test suite with CUDA visible (device "auto" picks it), one line per test (-v) and a
#      JUnit XML file, so a run cut short by its limit still names what failed.
# Needs the real data: DATA (default ../shared/data) with cifar10/cifar10-jpeg.tar.gz, cornell/
# and chatterbot-corpus/.
#
#   bash bench/gpu_check.sh [LOG_DIR]
set -u
LOG=${1:-gpu-logs}
DATA=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
PY=${PYTHON:-python3}
if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA GPU visible to $PY; nothing to check" >&2
  exit 1
fi
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  date -u; } > "$LOG/env.txt" 2>&1
cat "$LOG/env.txt"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log it, print its tail
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$LOG/$name.txt" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  grep -v " curve " "$LOG/$name.txt" | tail -n 8
}

step vision 240 $PY bench/vision_train.py --data "$DATA/cifar10/cifar10-jpeg.tar.gz" \
  --recipes fast --device cuda --fast-epochs 10,12,16 --seeds 2
step chat_train 200 $PY bench/chat_train.py --data "$DATA/cornell" --device cuda \
  --budget-minutes 1
TORCHTUTOR_SHARED_DATA=$DATA step tests 300 $PY -m pytest -v -p no:cacheprovider tests \
  -o addopts="" -rfE --tb=short --junitxml="$LOG/tests.xml" \
  --ignore=tests/chat/test_serve_browser.py
grep -E "(FAILED|ERROR)" "$LOG/tests.txt" | head -n 20

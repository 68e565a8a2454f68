#!/usr/bin/env bash
# The exact-resume test in suite order (after the ZeRO engine tests, in one pytest process),
# N times in a row (default 20). Every pass must be green: resume is bit-exact whatever ran
# before it in the process.
#   bash benchmarks/stress_resume.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
export USERNAME="${USERNAME:-pac}"
for i in $(seq 1 "$n"); do
  .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/train/test_train_engine.py tests/train/test_train_resume.py > /tmp/stress_resume.log 2>&1 \
    || { echo "pass $i of $n: FAILED"; tail -30 /tmp/stress_resume.log; exit 1; }
  echo "pass $i of $n: $(tail -1 /tmp/stress_resume.log)"
done

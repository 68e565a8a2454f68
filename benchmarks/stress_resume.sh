#!/usr/bin/env bash
# The exact-resume test in suite order (after the ZeRO engine tests, in one pytest process),
# N times in a row (default 20). Every pass must be green: resume is bit-exact whatever ran
# before it in the process.
#   bash benchmarks/stress_resume.sh [N]
# It tests the code of the checkout it sits in: that checkout goes first on PYTHONPATH (the
# .venv may hold another checkout installed in editable mode).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
export USERNAME="${USERNAME:-pac}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$(cd / && "$OLDPWD/.venv/bin/python" -c 'import pac, pathlib; print(pathlib.Path(pac.__file__).parent.parent)')" = "$PWD" ] \
  || { echo "stress_resume: import pac does not load $PWD/pac"; exit 1; }
log="$(mktemp -t stress_resume.XXXXXX.log)"
for i in $(seq 1 "$n"); do
  .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/train/test_train_engine.py tests/train/test_train_resume.py > "$log" 2>&1 \
    || { echo "pass $i of $n: FAILED"; tail -30 "$log"; exit 1; }
  echo "pass $i of $n: $(tail -1 "$log")"
done
rm -f "$log"

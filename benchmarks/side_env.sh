#!/usr/bin/env bash
# A benchmark's own environment beside the pinned .venv (sourced by peers_env.sh, ogbench_env.sh):
#     install_side_env TARGET 'python check' pkg==ver ...
# installs exactly the given packages with --no-deps into TARGET (so nothing already in .venv is
# replaced), built in TARGET.tmp and swapped in only when pip succeeds (a failed install leaves
# the previous environment in place), then runs the check with TARGET and the checkout on
# PYTHONPATH. PYTHON (default .venv/bin/python) is the interpreter.
install_side_env() {
    local target=$1 check=$2
    shift 2
    local python=${PYTHON:-.venv/bin/python}
    rm -rf "$target.tmp"
    "$python" -m pip install --target "$target.tmp" --no-deps "$@"
    rm -rf "$target"
    mv "$target.tmp" "$target"
    PYTHONPATH="$target:$PWD" "$python" -c "$check"
}

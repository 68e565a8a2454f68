#!/usr/bin/env bash
# The public offline-RL peers' own environment (benchmarks/peers_d3rlpy.py): d3rlpy 2.8.1 and the
# packages it needs that the project's pinned set lacks, installed into benchmarks/.peers with
# --no-deps so nothing already in .venv (torch, numpy, scikit-learn, tqdm, click, colorama,
# cloudpickle, typing-extensions) is replaced. d3rlpy never enters requirements.lock / pyproject.
#
#     bash benchmarks/peers_env.sh            # then:
#     PYTHONPATH=benchmarks/.peers:$PWD .venv/bin/python benchmarks/peers_d3rlpy.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/side_env.sh
# d3rlpy's Requires-Dist not in .venv, and theirs: h5py; gym (+ gym-notices); gymnasium 1.0.0
# (+ farama-notifications); structlog; dataclasses-json (+ marshmallow < 4, typing-inspect,
# mypy-extensions). Exact versions: the set measured in BENCHMARKS.md.
install_side_env benchmarks/.peers \
    'import d3rlpy, torch; print("d3rlpy", d3rlpy.__version__, "on torch", torch.__version__)' \
    d3rlpy==2.8.1 h5py==3.16.0 gym==0.26.2 gym-notices==0.1.0 gymnasium==1.0.0 \
    farama-notifications==0.0.6 structlog==26.1.0 dataclasses-json==0.6.7 marshmallow==3.26.2 \
    typing-inspect==0.9.0 mypy-extensions==1.2.0

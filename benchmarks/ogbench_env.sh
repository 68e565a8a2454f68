#!/usr/bin/env bash
# OGBench's own environment (pac/data/ogbench.py, benchmarks/ogbench_generate.py): ogbench 1.2.2
# and the packages it needs that the project's pinned set lacks, installed into
# benchmarks/.ogbench with --no-deps so nothing already in .venv is replaced. ogbench's
# Requires-Dist are mujoco, dm_control (pinned in .venv: 3.17.0, 1.0.50) and gymnasium[mujoco];
# gymnasium's are numpy, cloudpickle, typing-extensions (in .venv) and farama-notifications, and its
# [mujoco] extra's imageio is in .venv too. gymnasium 1.0.0 is the version of the peers'
# environment (benchmarks/peers_env.sh), so both can sit on one PYTHONPATH.
#
#     bash benchmarks/ogbench_env.sh            # then:
#     PYTHONPATH=benchmarks/.ogbench:$PWD .venv/bin/python benchmarks/ogbench_generate.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/side_env.sh
install_side_env benchmarks/.ogbench \
    'import gymnasium, mujoco, dm_control, ogbench.manipspace
from importlib.metadata import version
print("ogbench", version("ogbench"), "gymnasium", gymnasium.__version__, "mujoco",
      mujoco.__version__)' \
    ogbench==1.2.2 gymnasium==1.0.0 farama-notifications==0.0.6

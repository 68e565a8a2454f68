#!/usr/bin/env bash
# The real lerobot package's own environment (benchmarks/lerobot_write.py,
# tests/test_your_robot.py; `make test` installs it): lerobot 0.4.4 (the newest for Python
# 3.11, LeRobotDataset v3.0) and what its dataset writer imports that the project's pinned set
# lacks, installed into benchmarks/.lerobot with --no-deps so nothing in .venv is replaced. lerobot never enters
# requirements.lock / pyproject. Its writer needs numpy < 2.4 (save_episode fails on shape-(1,)
# features under 2.4): numpy 2.3.5 here shadows .venv's 2.4.6 when this folder comes first on
# PYTHONPATH (torch, pandas, pyarrow of .venv run on it). av 15.1.0 is lerobot's own pin (< 16);
# the project reads the videos with its own av. torchvision 0.28.0 is the release of .venv's
# torch 2.13 (lerobot imports it; its CUDA-built C ops do not load beside the CPU torch:
# lerobot_write.py declares the one op schema torchvision registers unguarded at import).
#
#     bash benchmarks/lerobot_env.sh            # then:
#     PYTHONPATH=benchmarks/.lerobot:$PWD .venv/bin/python benchmarks/lerobot_write.py OUT
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/side_env.sh
install_side_env benchmarks/.lerobot \
    'import numpy, benchmarks.lerobot_write as w
w.import_lerobot()
from importlib.metadata import version
print("lerobot", version("lerobot"), "numpy", numpy.__version__, "av", version("av"))' \
    lerobot==0.4.4 datasets==4.8.5 huggingface-hub==0.35.3 av==15.1.0 jsonlines==4.0.0 \
    draccus==0.10.0 numpy==2.3.5 torchvision==0.28.0 httpx==0.29.0 dill==0.4.1 \
    multiprocess==0.70.19 xxhash==4.1.0 mergedeep==1.3.4 pyyaml-include==1.4.1 toml==0.10.2 \
    typing-inspect==0.9.0 mypy-extensions==1.2.0 accelerate==1.16.0

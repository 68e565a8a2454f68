"""The `pac` command line as the multi-GPU launchers call it (README.md, docs/scaling_out.md).

`deepspeed` and `torch.distributed.launch` add `--local_rank=N` / `--local-rank=N` before the
sub-command; `torchrun` adds nothing. Each argv here is parsed by `pac`'s own parser on CPU.
"""

import base64
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pac.cli import build_parser, main
from pac.cli_args import config_from_args

ROOT = Path(__file__).resolve().parent.parent
L_PRESET = "params/presets/L.yaml"
USER_ARGS = ["train", "--params", L_PRESET]


def deepspeed_launcher_argvs(ranks: int, user_args: list[str]) -> list[list[str]]:
    """The argv DeepSpeed's per-node launcher (what `deepspeed --num_gpus N` runs) gives each
    rank's program, recorded by launching `echo` in place of `pac`."""
    world = base64.urlsafe_b64encode(json.dumps({"localhost": list(range(ranks))}).encode())
    cmd = [sys.executable, "-m", "deepspeed.launcher.launch", f"--world_info={world.decode()}",
           "--node_rank=0", "--master_addr=127.0.0.1", f"--master_port={29400 + os.getpid() % 500}",
           "--no_python", "echo", *user_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # DeepSpeed logs to stdout too, each line starting with "[<date>"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("[")]
    return [shlex.split(line) for line in lines]


def test_deepspeed_launcher_argv_parses_for_every_rank():
    argvs = deepspeed_launcher_argvs(2, USER_ARGS)
    assert sorted(argvs) == [["--local_rank=0", *USER_ARGS], ["--local_rank=1", *USER_ARGS]]
    parser = build_parser()
    for argv in argvs:
        args = parser.parse_args(argv)
        assert args.command == "train" and args.params == L_PRESET
        assert args.local_rank == int(argv[0].split("=")[1])
        assert config_from_args(args).model.scale == "L"


@pytest.mark.parametrize(
    ("argv", "local_rank"),
    [
        (["--local-rank=3", *USER_ARGS], 3),  # torch.distributed.launch (torch >= 2.0 spelling)
        (["--local_rank", "5", *USER_ARGS], 5),
        (USER_ARGS, None),  # torchrun --nproc_per_node 8 -m pac.cli train ...
    ],
)
def test_launcher_argv_spellings(argv, local_rank):
    args = build_parser().parse_args(argv)
    assert (args.command, args.params, args.local_rank) == ("train", L_PRESET, local_rank)


def test_main_accepts_local_rank_and_exports_it(monkeypatch, capsys):
    """A whole `pac` run under the launcher's argv (`pac config` stands in for `pac train`); a
    launcher that only passes the flag still gets LOCAL_RANK for the engine."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("LOCAL_RANK")
    assert main(["--local_rank=2", "config", "--params", L_PRESET, "--json", "--flat"]) == 0
    assert json.loads(capsys.readouterr().out)["model.scale"] == "L"
    assert os.environ["LOCAL_RANK"] == "2"

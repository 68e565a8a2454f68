"""Step functions of the PAC pipeline, shared by `flows/pac_flow.py` and tests.

Each Metaflow step calls one function here (or one room's function directly); nothing in this
module knows about Metaflow. Paths are relative to the working directory, the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pac.config import DEFAULT_PARAMS, PACConfig, load_config

#: Stages of dvc.yaml that build the training data (App. C.3-C.4).
DATA_STAGES = ("generate", "tokenizer")


@dataclass
class Settings:
    """What a flow run was asked for: a params file plus overrides (validated at `start`)."""

    params: str
    overrides: list[str]

    def config(self) -> PACConfig:
        return load_config(self.params, self.overrides)


def flow_overrides(
    text: str, scale: str = "", alpha: float = -1.0, beta: float = -1.0, rounds: int = -1
) -> list[str]:
    """Turn the flow's parameters into `--set` style overrides (';'-separated KEY=VALUE)."""
    out = [s.strip() for s in text.replace("\n", ";").split(";") if s.strip()]
    if scale:
        out.append(f"model.scale={scale}")
    if alpha >= 0:
        out.append(f"loss.alpha={alpha}")
    if beta >= 0:
        out.append(f"loss.beta={beta}")
    if rounds >= 0:
        out.append(f"rlft.rounds={rounds}")
    return out


#: Output folders a flow run keeps to itself (so a second run never meets the first's state).
RUN_OUTPUTS = ("train.out_dir", "eval.out_dir", "rlft.out_dir")


def run_workspace_overrides(
    overrides: list[str], run_id: str, root: str = "runs/flow"
) -> list[str]:
    """Per-run output folders ``runs/flow/<run_id>/{pretrain,eval,rlft}`` unless set explicitly."""
    given = {o.split("=", 1)[0].strip() for o in overrides}
    names = {"train.out_dir": "pretrain", "eval.out_dir": "eval", "rlft.out_dir": "rlft"}
    extra = [f"{key}={root}/{run_id}/{names[key]}" for key in RUN_OUTPUTS if key not in given]
    return extra + list(overrides)


def _pac_command() -> list[str]:
    return [sys.executable, "-m", "pac.cli"]


def _env_with_venv() -> dict[str, str]:
    """The environment with this interpreter's bin/ first on PATH (DVC stages call `pac`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def uses_dvc_pipeline(settings: Settings) -> bool:
    """`dvc repro` builds the data when the run uses params/default.yaml's data settings."""
    same_file = Path(settings.params).resolve() == DEFAULT_PARAMS.resolve() or (
        Path(settings.params).resolve() == (Path.cwd() / "params" / "default.yaml").resolve()
    )
    return same_file and not any(o.startswith("data.") for o in settings.overrides)


def version_data(settings: Settings) -> dict[str, Any]:
    """Build (or confirm up to date) the training data and return its version.

    With the default data settings this is `dvc repro generate tokenizer` (a no-op when the
    outputs are current); with other data settings the same `pac data` commands run directly.
    Returns `pac.data.dataset_version` (the DVC hashes and the store fingerprint).
    """
    from pac.data import dataset_version

    cfg = settings.config()
    env = _env_with_venv()
    if uses_dvc_pipeline(settings):
        subprocess.run(["dvc", "repro", *DATA_STAGES], check=True, env=env)
    else:
        sets = [a for o in settings.overrides for a in ("--set", o)]
        base = [*_pac_command()]
        for group in cfg.data.groups:
            subprocess.run(
                [*base, "data", "generate", "--params", settings.params, *sets,
                 "--group", group.name, "--quiet"], check=True, env=env)
        subprocess.run([*base, "tokenizer", "train", "--params", settings.params, *sets],
                       check=True, env=env)
    return dataset_version(cfg.data.root)


def distributed_train_command(
    settings: Settings,
    num_nodes: int,
    node_rank: int,
    main_addr: str,
    nproc_per_node: int,
    parent_run_id: str | None,
    port: int = 29533,
) -> list[str]:
    """The torchrun command one node of a Metaflow `@parallel` step runs (multi-node ZeRO)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(num_nodes), "--node_rank", str(node_rank),
        "--nproc_per_node", str(nproc_per_node),
        "--master_addr", main_addr, "--master_port", str(port),
        "-m", "pac.cli", "train", "--params", settings.params,
    ]
    for o in settings.overrides:
        cmd += ["--set", o]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    return cmd


def run_distributed_node(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, env=_env_with_venv())


def finish(
    cfg: PACConfig,
    *,
    policy_dir: str | Path,
    mlflow_run_id: str,
    started: float,
    data_version: dict[str, Any],
    eval_table: str = "",
    rlft_table: str = "",
    policy_model_uri: str | None = None,
    metaflow_pathspec: str = "",
    out_dir: str | Path = "runs",
) -> dict[str, Any]:
    """Register the final policy, write its model card, log both and close the parent run."""
    from pac.checkpoint import load_inference_checkpoint
    from pac.model_card import ModelCardFacts, detect_hardware, write_model_card
    from pac.tracking import Tracker, register_policy

    model, _, _ = load_inference_checkpoint(policy_dir)
    hardware, gpus = detect_hardware()
    tracker = Tracker(cfg, "", run_id=mlflow_run_id)
    uri = policy_model_uri or tracker.log_policy(policy_dir)
    version = register_policy(cfg, uri, tags={"metaflow.pathspec": metaflow_pathspec}) if uri \
        else None
    facts = ModelCardFacts(
        name=f"{cfg.tracking.registered_model} v{version}" if version else "pac-policy",
        params=sum(p.numel() for p in model.parameters()),
        wall_clock_s=time.time() - started,
        hardware=hardware,
        gpu_count=gpus,
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        data_version={k: str(v) for k, v in data_version.items() if v is not None},
        eval_markdown=eval_table,
        rlft_markdown=rlft_table,
        mlflow_run_id=mlflow_run_id,
        metaflow_pathspec=metaflow_pathspec,
    )
    card = write_model_card(cfg, facts, Path(out_dir) / "model_card.md")
    tracker.log_artifact(card)
    tracker.log_metrics({"flow/wall_clock_s": facts.wall_clock_s}, step=0)
    tracker.finish()
    text = (f"PAC flow finished in {facts.wall_clock_s / 60:.1f} min: policy {policy_dir}"
            f" ({facts.params:,} parameters), registered {cfg.tracking.registered_model}"
            f" v{version}, model card {card}, MLflow run {mlflow_run_id}")
    return {"model_card": str(card), "registered_version": version, "text": text}

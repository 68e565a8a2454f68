"""DVC: `dvc repro` builds the data, is then up to date, and a param change reruns only its stage.

Real dvc and git in a temporary copy of the repository (dvc.yaml, params, the code it hashes).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pac.config import load_config
from pac.data.generate import generate_group
from pac.data.store import EpisodeStore
from pac.data.version import dataset_version

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATA_STAGES = ("generate", "tokenizer")


def test_dvc_yaml_lists_every_simulated_group_by_index():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    foreach = stages["generate"]["foreach"]
    groups = load_config(REPO / "params" / "default.yaml").data.groups
    assert foreach == {g.name: i for i, g in enumerate(groups) if g.source == "sim"}


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages with each `foreach` expanded the way DVC does (`${key}`, `${item}`)."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for key, item in stage["foreach"].items():
            text = yaml.safe_dump(stage["do"]).replace("${key}", str(key))
            stages[f"{name}@{key}"] = yaml.safe_load(text.replace("${item}", str(item)))
    return stages


def _names(entries: list) -> list[str]:
    """Path names of a deps/outs/params list, whose entries are strings or one-key mappings."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def test_every_dvc_dependency_exists_or_is_a_stage_output():
    """A stale path (a renamed module) would make DVC fail, or stop rerunning on code changes."""
    stages = _dvc_stages()
    outs = {o for s in stages.values() for o in _names(s.get("outs", []) + s.get("metrics", []))}
    deps = {d for s in stages.values() for d in _names(s.get("deps", []))}
    missing = sorted(d for d in deps - outs if not (REPO / d).exists())
    assert not missing, f"dvc.yaml names missing dependencies: {missing}"
    # and every repository file its comments point to
    comments = [ln for ln in (REPO / "dvc.yaml").read_text().splitlines() if ln.lstrip()[:1] == "#"]
    named = set(re.findall(r"[\w./-]+/[\w.-]+\.(?:py|yaml|md)\b", "\n".join(comments)))
    stale = sorted(p for p in named if not (REPO / p).exists())
    assert named and not stale, f"dvc.yaml's comments name missing files: {stale}"


def test_every_dvc_param_key_is_in_the_params_file():
    """Each `params:` key resolves in its file (a renamed key would silently never rerun)."""
    for name, stage in _dvc_stages().items():
        for entry in stage.get("params", []):
            for file, keys in entry.items():
                params = yaml.safe_load((REPO / file).read_text())
                for key in keys:
                    node = params
                    for part in key.split("."):
                        found = part in node if isinstance(node, dict) else int(part) < len(node)
                        assert found, f"{name}: {file} has no {key}"
                        node = node[part] if isinstance(node, dict) else node[int(part)]


def test_default_low_quality_group_is_chef_like(tmp_path):
    """Table 6's CHEF: 28% successful episodes. The default low_quality group lands at 25-30%."""
    cfg = load_config(REPO / "params" / "default.yaml")
    res = generate_group(cfg, "low_quality", tmp_path, workers=2, progress=False)
    print(f"low_quality: {res['episodes']} episodes, success {100 * res['success_rate']:.1f}%")
    assert 0.25 <= res["success_rate"] <= 0.30


def _run(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A fresh git + DVC repository holding dvc.yaml, a small default.yaml and the code deps."""
    root = tmp_path / "repo"
    (root / "params").mkdir(parents=True)
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    mine = {k: v for k, v in pipeline["stages"].items() if k in DATA_STAGES}  # later stages need
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": mine}, sort_keys=False))  # training
    shutil.copytree(REPO / "pac", root / "pac", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    params["data"]["episode_steps"] = 12
    params["data"]["generate_workers"] = 1  # not a DVC dependency: the output is the same
    for group in params["data"]["groups"]:
        group["episodes_per_task"] = 2
    (root / "params" / "default.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(root, "git", "init", "-q")
    _run(root, "dvc", "init", "-q")
    _run(root, "dvc", "config", "core.analytics", "false")
    _run(root, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    return root


def _set_param(root: Path, group: str, key: str, value) -> None:
    path = root / "params" / "default.yaml"
    params = yaml.safe_load(path.read_text())
    next(g for g in params["data"]["groups"] if g["name"] == group)[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_up_to_date_targeted_rerun_push_pull(repo_copy):
    out = _run(repo_copy, "dvc", "repro", "generate", "tokenizer")
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running"))
    assert ran == ["generate@expert", "generate@low_quality", "generate@noisy", "tokenizer"]
    store = EpisodeStore(repo_copy / "data" / "episodes", verify=True)
    assert store.groups == ["expert", "low_quality", "noisy"]
    assert (repo_copy / "data" / "tokenizer" / "spm.model").is_file()

    assert "Data and pipelines are up to date." in _run(repo_copy, "dvc", "repro", *DATA_STAGES)
    v1 = dataset_version(repo_copy / "data")
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
    assert v1["data/episodes/noisy"] == lock["generate@noisy"]["outs"][0]["md5"]
    assert v1["data/tokenizer/spm.model"] == lock["tokenizer"]["outs"][0]["md5"]

    _set_param(repo_copy, "low_quality", "weight", 5.0)  # lambda: sampling only, no regeneration
    assert "Data and pipelines are up to date." in _run(repo_copy, "dvc", "status")

    _set_param(repo_copy, "low_quality", "quality", 0.9)
    status = _run(repo_copy, "dvc", "status")
    assert "generate@low_quality" in status and "generate@noisy" not in status
    out = _run(repo_copy, "dvc", "repro", *DATA_STAGES)
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'generate@low_quality':"], out
    v2 = dataset_version(repo_copy / "data")
    changed = sorted(k for k in v1 if v1[k] != v2[k] and k != "dvc_lock")
    assert changed == ["data/episodes/low_quality", "episodes_fingerprint"]

    _run(repo_copy, "dvc", "push")
    shutil.rmtree(repo_copy / "data" / "episodes")
    shutil.rmtree(repo_copy / ".dvc" / "cache")
    _run(repo_copy, "dvc", "pull")
    assert dataset_version(repo_copy / "data") == v2
    assert len(EpisodeStore(repo_copy / "data" / "episodes", verify=True).episodes) == 2 * 7

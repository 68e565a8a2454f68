"""`pac data generate`: reproducible across workers, atomic per group, bad input named."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import make_cfg

from pac.cli import main
from pac.data.generate import CRASH_ENV, generate_group
from pac.data.store import EpisodeStore

TINY = ("[{name: g, tasks: [point_mass.easy, cartpole.balance], quality: 0.5,"
        " episodes_per_task: 12}]")


def _manifests(root):
    """The visible shards' manifests (readers skip hidden .tmp-* folders)."""
    return {p.relative_to(root).as_posix(): json.loads(p.read_text())
            for p in sorted(root.glob("*/*/manifest.json")) if not p.parts[-3].startswith(".")}


def test_output_is_identical_whatever_the_worker_count(tmp_path):
    cfg = make_cfg(TINY, "data.episode_steps=20")
    one = generate_group(cfg, "g", tmp_path / "one", workers=1, progress=False)
    two = generate_group(cfg, "g", tmp_path / "two", workers=2, progress=False)
    assert one == two and one["episodes"] == 24 and one["transitions"] == 24 * 20
    assert _manifests(tmp_path / "one") == _manifests(tmp_path / "two")  # byte-identical files
    store = EpisodeStore(tmp_path / "two", verify=True)
    eps = store.episodes
    assert len(eps) == 24 and set(eps["task"]) == {"point_mass.easy", "cartpole.balance"}
    assert (eps["length"] == 20).all() and (eps["quality"] == 0.5).all()
    assert set(eps["source"]) == {"sim"}
    shard = store.shards[0]
    assert shard.proprio.shape[1] == 5 and shard.actions.shape[1] == 1  # cartpole sizes
    assert np.abs(np.asarray(shard.actions)).max() <= 1.0


def test_regenerating_replaces_the_group_and_a_crash_leaves_the_old_one(tmp_path):
    cfg = make_cfg(TINY, "data.episode_steps=10")
    generate_group(cfg, "g", tmp_path, workers=1, progress=False)
    before = _manifests(tmp_path)
    code = (
        "from pac.config import load_config\n"
        "from pac.data.generate import generate_group\n"
        f"cfg = load_config(overrides=['data.groups={TINY}', 'data.episode_steps=10',"
        " 'data.seed=7'])\n"
        f"generate_group(cfg, 'g', {str(tmp_path)!r}, workers=1, progress=False)\n"
    )
    env = {**os.environ, CRASH_ENV: "2"}  # dies after two of its four shards
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert any(p.name.startswith(".tmp-g-") for p in tmp_path.iterdir())  # hidden leftovers
    assert _manifests(tmp_path) == before  # the old group, whole
    assert len(EpisodeStore(tmp_path, verify=True).episodes) == 24
    generate_group(make_cfg(TINY, "data.episode_steps=10", "data.seed=7"), "g", tmp_path,
                   progress=False)
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    assert _manifests(tmp_path) != before and len(EpisodeStore(tmp_path).episodes) == 24


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ("[{name: g, tasks: [humanoid.fly]}]", "unknown task 'humanoid.fly'"),
        ("[{name: g, tasks: [point_mass.easy], quality: 1.5}]",
         "data.groups.g.quality=1.5 is outside the allowed range [0, 1]"),
        ("[{name: g, tasks: [point_mass.easy], episodes_per_task: 0}]",
         "data.groups.g.episodes_per_task=0 is outside the allowed range [1, inf]"),
        ("[{name: g, tasks: [walker.stand]}]", "task 'walker.stand' has no scripted expert"),
        ("[{name: g, tasks: [point_mass.easy], source: real}]", "its episodes come from"),
    ],
)
def test_bad_requests_fail_before_any_episode(tmp_path, capsys, groups, message):
    code = main(["data", "generate", "--group", "g", "--set", f"data.groups={groups}", "--set",
                 "model.num_proprio=24", "--set", "model.num_actions=6",
                 "--root", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "episodes").exists()


def test_unknown_group_is_named(tmp_path, capsys):
    code = main(["data", "generate", "--group", "nope", "--root", str(tmp_path)])
    assert code == 2 and "unknown group 'nope'; groups in params: expert" in capsys.readouterr().err


def test_rendered_images_are_stored(tmp_path):
    cfg = make_cfg("[{name: v, tasks: [cartpole.balance], episodes_per_task: 1}]",
                   "data.render=true", "data.cameras=2", "model.num_images=2",
                   "data.episode_steps=4")
    generate_group(cfg, "v", tmp_path, workers=1, progress=False)
    (shard,) = EpisodeStore(tmp_path, verify=True).shards
    assert shard.images.shape == (4, 2, 80, 80, 3) and shard.images.dtype == np.uint8
    assert shard.images[:, 0].std() > 5 and not np.array_equal(shard.images[:, 0],
                                                                shard.images[:, 1])

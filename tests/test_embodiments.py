"""Embodiments and tasks declared in params: validation, the resolver, action normalisation in
the sampler, instructions as text input, and the reward-support check before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from embodiment_helpers import DECLARATIONS, HIGH, LOW
from embodiment_helpers import write_params as write_file

from pac.config import REPO_ROOT, ConfigError, load_config
from pac.data import EpisodeStore, TaskTokenizer
from pac.data.sampler import TrajectorySampler, return_range
from pac.data.store import Episode
from pac.data.tokenizer import instruction_tasks
from pac.tasks import TASKS, from_unit, to_unit

ARM = DECLARATIONS + """data:
  tokenizer_vocab: 96
  groups: [{name: lab, tasks: [pick_red], source: real}]
"""


def write_params(folder: Path, body: str = ARM) -> Path:
    return write_file(folder, body)


def affine(x: np.ndarray, src: list[float], dst: tuple[float, float] | list) -> np.ndarray:
    """Per-dimension linear interpolation (np.interp): an independent range map."""
    src_lo, src_hi = src
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[-1]):
        lo = dst[0] if np.isscalar(dst[0]) else dst[0][j]
        hi = dst[1] if np.isscalar(dst[1]) else dst[1][j]
        a = src_lo if np.isscalar(src_lo) else src_lo[j]
        b = src_hi if np.isscalar(src_hi) else src_hi[j]
        out[..., j] = np.interp(x[..., j], [a, b], [lo, hi])
    return out


def test_declared_robot_and_rate_resolve_like_builtins(tmp_path, declared_tasks):
    load_config(write_params(tmp_path))
    arm = TASKS.resolve("pick_red")
    assert (arm.num_proprio, arm.num_actions, arm.fps, arm.simulator) == (14, 7, 30.0, "")
    assert arm.action_low == tuple(LOW) and arm.action_high == tuple(HIGH)
    assert arm.instruction == "pick up the red cube" and arm.domain == "arm7"
    fast = TASKS.resolve("reacher.easy_50hz")
    base = TASKS.resolve("reacher.easy")
    assert (fast.action_repeat, base.action_repeat) == (1, 2)
    assert (fast.domain, fast.task, fast.num_proprio, fast.angle_dims) == ("reacher", "easy", 6,
                                                                            (0, 1))
    # a LeRobot task string is a name or an instruction: the built-in first
    assert TASKS.matching("reacher.easy") == ["reacher.easy", "reacher.easy_50hz"]
    assert TASKS.matching("pick up the red cube") == ["pick_red"]
    # the built-ins are unchanged: instruction = name, actions in [-1, 1]
    assert base.instruction == "reacher.easy" and base.action_low == (-1.0, -1.0)
    # declarations are replaced by the next params loaded
    load_config()
    assert "pick_red" not in TASKS and "reacher.easy" in TASKS


def test_example_preset_loads(declared_tasks):
    cfg = load_config(REPO_ROOT / "params" / "presets" / "my_robot_example.yaml")
    spec = TASKS.resolve(cfg.data.groups[0].tasks[0])
    assert spec.num_actions == 7 and spec.simulator == "" and spec.fps > 0
    assert all(lo < hi for lo, hi in zip(spec.action_low, spec.action_high))
    assert set(cfg.tasks) <= set(instruction_tasks(cfg))


@pytest.mark.parametrize(("edit", "message"), [
    (("    fps: 30\n", "    fps: 30\n    joints: 7\n"),
     "unknown key embodiments.arm7.joints; allowed keys here:"),
    (("    fps: 30\n", ""),
     "embodiments.arm7.fps: the control rate (Hz) is needed by task pick_red"),
    (("action_low: [-3.1, ", "action_low: ["),
     "embodiments.arm7.action_low: expected 7 values (one per action) or one, got 6"),
    (("0.0]\n", "0.1]\n"), "embodiments.arm7: action_low must be below action_high in every"
                           " dimension; dimension 6 has [0.1, 0.085]"),
    (("    state_size: 14\n", ""), "embodiments.arm7: give state_size (>= 1) or state_names"),
    (("embodiment: arm7}", "embodiment: arm8}"),
     "tasks.pick_red.embodiment: unknown embodiment 'arm8'; declared: arm7"),
    (("pick_red: {", "cartpole.balance: {"),
     "tasks.cartpole.balance: 'cartpole.balance' is a built-in task"),
    (("dm_control: reacher.easy,", "dm_control: reacher.fly,"),
     "tasks.reacher.easy_50hz.simulator.dm_control: 'reacher.fly' is not a built-in"),
    (("action_repeat: 1}", "action_repeat: 1, n_sub_steps: 2}"),
     "unknown key tasks.reacher.easy_50hz.simulator.n_sub_steps"),
    (("tasks: [pick_red]", "tasks: [place_red]"),
     "data.groups.lab.tasks: unknown task 'place_red'"),
    (("pick_red: {", "pick/../red: {"), "tasks: the name 'pick/../red' must be made of letters"),
    (("instruction: pick up the red cube", "instruction: '  '"),
     "tasks.pick_red.instruction: one line of printable text, got '  '"),
])
def test_declarations_are_validated_naming_the_field(tmp_path, declared_tasks, edit, message):
    body = ARM.replace(*edit)
    assert body != ARM
    with pytest.raises(ConfigError) as err:
        load_config(write_params(tmp_path, body))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_to_unit_and_back_equal_an_independent_affine_map():
    rng = np.random.default_rng(0)
    low, high = np.array(LOW, np.float32), np.array(HIGH, np.float32)
    a = rng.uniform(low, high, (50, 7)).astype(np.float32)
    unit = to_unit(a, low, high)
    np.testing.assert_allclose(unit, affine(a, [LOW, HIGH], (-1.0, 1.0)), atol=2e-6)
    np.testing.assert_allclose(from_unit(unit, low, high), a, atol=1e-6)
    centres = np.linspace(-1, 1, 101, dtype=np.float32)[:, None].repeat(7, 1)  # the bins
    np.testing.assert_allclose(from_unit(centres, low, high),
                               affine(centres, [-1.0, 1.0], (LOW, HIGH)), atol=1e-6)
    # identity for [-1, 1]: the built-ins train on their stored values, bit for bit
    same = rng.uniform(-1, 1, (9, 2)).astype(np.float32)
    assert to_unit(same, np.full(2, -1.0), np.full(2, 1.0)) is same


def _arm_episode(rng: np.random.Generator, rewards: np.ndarray) -> Episode:
    n = len(rewards)
    return Episode(task="pick_red", proprio=rng.normal(size=(n, 14)).astype(np.float32),
                   actions=rng.uniform(LOW, HIGH, (n, 7)).astype(np.float32),
                   rewards=rewards.astype(np.float32), discounts=np.ones(n, np.float32),
                   source="real")


def test_sampler_feeds_unit_actions_and_the_instruction(tmp_path, declared_tasks):
    cfg = load_config(write_params(tmp_path), ["data.trajectory_length=3"])
    rng = np.random.default_rng(1)
    store = EpisodeStore(tmp_path / "episodes")
    episode = _arm_episode(rng, np.r_[np.zeros(5), 1.0])
    store.append_episodes("lab", [episode])
    tok = TaskTokenizer.train(tmp_path / "spm.model", 96, tasks=instruction_tasks(cfg))
    sampler = TrajectorySampler(cfg, EpisodeStore(store.root), tok)
    _, _, _, offset = sampler.sample_indices(0, 6)
    batch = sampler.batch(0, 6)
    for b, o in enumerate(offset):
        valid = batch.step_mask[b].numpy()
        rows = np.arange(o, o + 3)[valid]
        want = affine(episode.actions[rows], [LOW, HIGH], (-1.0, 1.0))
        np.testing.assert_allclose(batch.actions[b, valid].numpy(), want, atol=2e-6)
    ids, mask = tok.encode("pick up the red cube")
    assert (batch.text[0].numpy() == ids).all() and (batch.text_mask[0].numpy() == mask).all()
    assert not (batch.text[0].numpy() == tok.encode("pick_red")[0]).all()


@pytest.mark.parametrize(("r_min", "r_max", "gamma", "horizon", "expected"), [
    (0.0, 1.0, 0.95, 100, (0.0, 20.0)),
    (-1.0, 0.0, 0.9, 100, (-10.0, 0.0)),
    (0.5, 2.0, 1.0, 7, (0.5, 14.0)),
    (-3.0, -1.0, 0.5, 10, (-6.0, -1.0)),
])
def test_return_range_is_the_geometric_bound(r_min, r_max, gamma, horizon, expected):
    assert return_range(r_min, r_max, gamma, horizon) == pytest.approx(expected)


def test_rewards_outside_the_value_support_are_refused_before_training(tmp_path, declared_tasks):
    cfg = load_config(write_params(tmp_path))  # default support [0, 20], gamma 0.95
    rng = np.random.default_rng(2)
    store = EpisodeStore(tmp_path / "episodes")
    store.append_episodes("lab", [_arm_episode(rng, np.r_[-np.ones(5), 1.0])])  # step penalty
    tok = TaskTokenizer.train(tmp_path / "spm.model", 96, tasks=instruction_tasks(cfg))
    with pytest.raises(ConfigError) as err:
        TrajectorySampler(cfg, EpisodeStore(store.root), tok)
    assert str(err.value) == (
        "loss.value_min/value_max [0, 20] cannot hold the data's returns: rewards span [-1, 1]"
        " (task pick_red), returns with loss.gamma 0.95 span [-20, 20]; widen the support or"
        " rescale the rewards")
    wide = load_config(write_params(tmp_path), ["loss.value_min=-20.0"])
    assert TrajectorySampler(wide, EpisodeStore(store.root), tok).datasets  # now accepted


def test_pac_tokenizer_train_learns_the_declared_instructions(tmp_path, declared_tasks, capsys):
    from pac.cli import main
    from pac.data.tokenizer import UNK_ID

    out = tmp_path / "spm.model"
    assert main(["tokenizer", "train", "--params", str(write_params(tmp_path)),
                 "--out", str(out)]) == 0
    assert "'pick up the red cube' ->" in capsys.readouterr().out  # the group's first task
    learned = TaskTokenizer.load(out)
    builtin_only = TaskTokenizer.train(tmp_path / "builtin.model", 96)
    ids, mask = learned.encode("pick up the red cube")
    assert UNK_ID not in ids[mask] and learned.decode(ids) == "pick up the red cube"
    assert mask.sum() < builtin_only.encode("pick up the red cube")[1].sum()


def test_a_task_without_simulator_is_not_rolled_out(tmp_path, declared_tasks):
    from pac.evaluation.evaluator import evaluate

    cfg = load_config(write_params(tmp_path))
    with pytest.raises(ValueError, match="task pick_red has no simulator .* cannot be rolled out"):
        evaluate(cfg, tasks=["pick_red"], policy="random", track=False, out_dir=tmp_path / "e")

"""dm_control tasks: sizes match the registry, experts succeed, random fails, success is defined."""

import os
import subprocess
import sys

import numpy as np
import pytest

from pac.envs import (
    behaviour_action,
    expert_action,
    flatten_observation,
    is_success,
    make_env,
    render,
)
from pac.tasks import TASKS, WEAK_TASKS

EXPERT_TASKS = sorted(t for t, s in TASKS.items() if s.scripted_expert)


def _episode(task: str, quality: float, seed: int, steps: int = 100) -> np.ndarray:
    env = make_env(task, seed, steps)
    rng = np.random.default_rng(seed)
    time_step, rewards = env.reset(), []
    while not time_step.last():
        time_step = env.step(behaviour_action(task, env, quality, rng))
        rewards.append(time_step.reward)
    return np.asarray(rewards)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_registry_sizes_match_dm_control(task):
    env = make_env(task, seed=0, episode_steps=7)
    obs = flatten_observation(env.reset().observation)
    assert obs.dtype == np.float32 and obs.shape == (TASKS[task].num_proprio,)
    assert env.action_spec().shape == (TASKS[task].num_actions,)
    assert np.all(env.action_spec().minimum == TASKS[task].action_low)
    steps = 0
    time_step = env.reset()
    while not time_step.last():
        time_step = env.step(np.zeros(TASKS[task].num_actions))
        steps += 1
    assert steps == 7  # the time limit is exactly episode_steps control steps


@pytest.mark.parametrize("task", EXPERT_TASKS)
def test_expert_succeeds_and_random_fails(task):
    steps = 1000 if task.endswith("_native") else 100  # native: dm_control's own episode
    expert = [is_success(task, _episode(task, 1.0, seed, steps)) for seed in range(3)]
    random = [is_success(task, _episode(task, 0.0, seed, steps)) for seed in range(3)]
    print(f"{task}: expert {sum(expert)}/3 successes, random {sum(random)}/3")
    assert all(expert) and not any(random)


def test_expert_is_deterministic_and_in_range():
    env = make_env("reacher.easy", 3, 10)
    env.reset()
    a1 = expert_action("reacher.easy", env)
    a2 = expert_action("reacher.easy", env)
    assert np.array_equal(a1, a2) and a1.dtype == np.float32 and np.all(np.abs(a1) <= 1)


def test_success_definition():
    ok = np.r_[np.zeros(90), np.full(10, 0.9)]
    assert is_success("point_mass.easy", ok)
    assert not is_success("point_mass.easy", np.r_[ok[:-1], 0.5])  # one bad final step
    assert is_success("cartpole.balance", np.full(100, 0.8))
    assert not is_success("cartpole.balance", np.r_[0.7, np.full(99, 1.0)])  # every step
    assert not is_success("reacher.easy", np.array([]))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'humanoid.fly'"):
        make_env("humanoid.fly", 0, 10)
    env = make_env("point_mass.easy", 0, 10)
    env.reset()
    with pytest.raises(ValueError, match=r"quality must be in \[0, 1\], got 1.5"):
        behaviour_action("point_mass.easy", env, 1.5, np.random.default_rng(0))
    walker = make_env("walker.stand", 0, 10)
    walker.reset()
    with pytest.raises(ValueError, match="no scripted expert for task 'walker.stand'"):
        expert_action("walker.stand", walker)


def test_render_80x80_images():
    env = make_env("cartpole.balance", 0, 5)
    env.reset()
    frames = []
    for _ in range(3):
        env.step(np.ones(1))
        frames.append(render(env))
    frames = np.stack(frames)
    assert frames.shape == (3, 80, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 5  # a real scene, not a blank buffer
    assert not np.array_equal(frames[0], frames[-1])  # the cart moved


def test_unavailable_rendering_fails_with_a_clear_message():
    code = (
        "from pac.envs import make_env, render, RenderingUnavailable\n"
        "env = make_env('point_mass.easy', 0, 5); env.reset()\n"
        "try:\n    render(env)\nexcept RenderingUnavailable as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "MUJOCO_GL": "disable"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "rendering is unavailable" in out.stdout and "libosmesa6" in out.stdout


def _pd_point_mass(env) -> np.ndarray:
    """The point-mass expert written out again from the physics (40 x to-target - velocity)."""
    to_target = env.physics.named.data.geom_xpos["target", :2] - env.physics.position()
    return np.clip(40.0 * to_target - env.physics.velocity(), -1.0, 1.0)


def test_the_weak_behaviour_mixes_the_expert_with_its_weak_controller_per_episode():
    """quality 0.3 + weak: 30% of episodes by the expert, 70% by 0.35 x expert, each + N(0, 0.1)."""
    env = make_env("point_mass.easy", 5, 6)
    rng, weak_episodes, weak_residuals = np.random.default_rng(0), 0, []
    for _ in range(300):
        env.reset()
        nearer_weak, residuals = [], []
        for _ in range(6):
            expert = _pd_point_mass(env)
            action = behaviour_action("point_mass.easy", env, 0.3, rng, "weak")
            to_weak = np.linalg.norm(action - 0.35 * expert)
            nearer_weak.append(to_weak < np.linalg.norm(action - expert))
            residuals.append(action - 0.35 * expert)
            env.step(action)
        assert len(set(nearer_weak)) == 1  # one controller drives the whole episode
        if nearer_weak[0]:
            weak_episodes += 1
            weak_residuals += residuals
    assert abs(weak_episodes / 300 - 0.7) < 0.06  # 300 episodes: SE 0.026
    weak_residuals = np.concatenate(weak_residuals)  # 0.35 x expert + N(0, 0.1), never clipped
    assert abs(weak_residuals.mean()) < 0.01 and abs(weak_residuals.std() - 0.1) < 0.01
    env.reset()
    with pytest.raises(ValueError, match="suboptimal must be one of"):
        behaviour_action("point_mass.easy", env, 0.3, rng, "lazy")
    reacher = make_env("reacher.easy", 0, 10)
    reacher.reset()
    with pytest.raises(ValueError, match="task 'reacher.easy' has no weak controller"):
        behaviour_action("reacher.easy", reacher, 0.0, rng, "weak")


def test_action_noise_is_fresh_gaussian_noise_on_the_expert_at_every_step():
    """quality 1 + action_noise 0.2: expert + N(0, 0.2) per step, independent across steps; no
    noise given keeps the noiseless expert of quality 1 (data generated before stays as it was)."""
    env = make_env("point_mass.easy", 3, 400)
    rng = np.random.default_rng(1)
    env.reset()
    residuals = []
    for _ in range(400):
        expert = _pd_point_mass(env)
        action = behaviour_action("point_mass.easy", env, 1.0, rng, noise=0.2)
        inside = np.abs(action) < 0.999  # a clipped entry hides its noise
        residuals.append(np.where(inside, action - expert, np.nan))
        env.step(action)
    r = np.asarray(residuals)
    r0, r1 = r[:-1, 0], r[1:, 0]
    both = ~np.isnan(r0) & ~np.isnan(r1)
    assert abs(np.nanstd(r) - 0.2) < 0.02 and abs(np.nanmean(r)) < 0.03
    assert abs(np.corrcoef(r0[both], r1[both])[0, 1]) < 0.15  # new noise every step
    env.reset()
    for _ in range(5):
        clean = behaviour_action("point_mass.easy", env, 1.0, rng)
        np.testing.assert_allclose(clean, _pd_point_mass(env), atol=1e-6)
        env.step(clean)


@pytest.mark.parametrize("task", WEAK_TASKS)
def test_the_weak_controller_alone_is_far_below_the_expert(task):
    """What makes it a sub-optimal *mode*: alone (with the data's N(0, 0.1) noise) it scores
    < 45% of expert (measured without noise: 22-32%)."""
    from pac.evaluation.rollout import random_policy

    steps = 1000 if task.endswith("_native") else 100  # native: dm_control's own episode

    def returns(policy) -> float:
        total = 0.0
        for seed in range(5):
            env = make_env(task, seed, steps)
            act, time_step = policy(seed), env.reset()
            while not time_step.last():
                time_step = env.step(act(env, time_step))
                total += time_step.reward
        return total / 5

    expert = returns(lambda seed: lambda env, ts: expert_action(task, env))
    weak = returns(lambda seed: lambda env, ts: behaviour_action(
        task, env, 0.0, np.random.default_rng(seed), "weak"))
    rand = returns(lambda seed: random_policy(task, seed))
    pct = 100 * (weak - rand) / (expert - rand)
    print(f"{task}: expert {expert:.1f}, weak controller {weak:.1f}, random {rand:.1f}: {pct:.1f}%")
    assert pct < 45.0


def test_the_native_variant_runs_at_dm_controls_own_rate():
    from pac.envs import _control_timestep

    assert _control_timestep("point_mass.easy_native") == pytest.approx(0.02)
    assert _control_timestep("point_mass.easy") == pytest.approx(0.06)  # action repeat 3
    rewards = _episode("point_mass.easy_native", 1.0, 0, steps=1000)  # dm_control's 20 s
    assert len(rewards) == 1000 and is_success("point_mass.easy_native", rewards)


def test_the_lqr_gain_equals_scipys_riccati_solution():
    """The cart-pole expert's gain (a Riccati iteration without LAPACK, pac.envs._dare_gain)
    equals K = (R + B'PB)^-1 B'PA with P from scipy.linalg.solve_discrete_are, on random
    stabilisable systems and on the cart-pole's own linearisation."""
    from scipy.linalg import solve_discrete_are

    from pac.envs import _dare_gain

    rng = np.random.default_rng(0)
    for n in (2, 3, 4):
        a = rng.normal(size=(n, n)) * 0.6 + np.eye(n) * 0.5
        b = rng.normal(size=(n, 1))
        q = np.diag(rng.uniform(0.1, 10.0, n))
        r = np.array([[rng.uniform(0.1, 2.0)]])
        p = solve_discrete_are(a, b, q, r)
        want = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        np.testing.assert_allclose(_dare_gain(a, b, q, r), want, rtol=1e-9, atol=1e-12)
    # an unstable open loop (the upright pole): the gain still stabilises it
    a = np.array([[1.0, 0.02], [0.4, 1.0]])
    b = np.array([[0.0], [0.02]])
    k = _dare_gain(a, b, np.eye(2), np.eye(1))
    assert np.max(np.abs(np.linalg.eigvals(a - b @ k))) < 1.0
    p = solve_discrete_are(a, b, np.eye(2), np.eye(1))
    np.testing.assert_allclose(k, np.linalg.solve(np.eye(1) + b.T @ p @ b, b.T @ p @ a),
                               rtol=1e-9)

"""dm_control Control Suite tasks (App. C.3): environments, scripted experts, graded behaviour.

Behaviour policies of graded quality generate the mixed-quality data PAC learns from (Table 6:
success rates from 97% down to 12%). ``quality`` 1 is the scripted expert, 0 a sticky uniform
random policy, anything between mixes them per step; with ``suboptimal="weak"`` each episode is
driven by the expert or by the task's weak controller instead (see :func:`behaviour_action`).

Offscreen rendering uses ``MUJOCO_GL=egl`` by default (Mesa llvmpipe works with no GPU). Other
back-ends need Debian packages: ``libegl1`` (egl), ``libosmesa6`` (``MUJOCO_GL=osmesa``). When
no back-end loads, physics still works and :func:`render` raises :class:`RenderingUnavailable`.
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from typing import Any

import numpy as np

from pac.tasks import SUBOPTIMAL, TASKS, WEAK_TASKS, TaskSpec

_RENDER_ERROR: str | None = None


class RenderingUnavailable(RuntimeError):
    """Offscreen MuJoCo rendering cannot start on this machine."""


def dm_suite():
    """Import dm_control's suite with an offscreen GL back-end (egl unless MUJOCO_GL is set)."""
    global _RENDER_ERROR
    chosen = os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import suite
    except Exception as exc:  # noqa: BLE001 - any GL loader failure: retry physics-only
        if chosen in ("off", "disable", "disabled", "false", "0"):
            raise
        _RENDER_ERROR = f"MUJOCO_GL={chosen}: {type(exc).__name__}: {exc}"
        os.environ["MUJOCO_GL"] = "disable"
        from dm_control import suite
    return suite


def task_spec(task: str) -> TaskSpec:
    """The registry entry of `task` (built-in or declared in params), or a ValueError naming the
    known tasks; a task without a simulator has no environment."""
    return TASKS.resolve(task)


def _load(spec: TaskSpec, seed: int, time_limit: float | None):
    if spec.simulator != "dm_control":
        raise ValueError(f"task {spec.name!r} has no simulator (a robot's data: evaluate it"
                         " offline); declare tasks.<name>.simulator to roll it out")
    kwargs: dict[str, Any] = {"random": seed}
    if time_limit is not None:
        kwargs["time_limit"] = time_limit
    env_kwargs = {"n_sub_steps": spec.action_repeat} if spec.action_repeat > 1 else None
    suite = dm_suite()
    return suite.load(spec.domain, spec.task, task_kwargs=kwargs, environment_kwargs=env_kwargs)


def _control_timestep(task: str) -> float:
    """Seconds per control step: the embodiment's 1/fps, or dm_control's for a simulator task."""
    spec = task_spec(task)
    if spec.simulator != "dm_control":
        return 1.0 / spec.fps
    return _simulator_timestep(spec.domain, spec.task, spec.action_repeat)


@functools.cache
def _simulator_timestep(domain: str, task: str, action_repeat: int) -> float:
    spec = TaskSpec(f"{domain}.{task}", domain, task, 0, 0, action_repeat=action_repeat)
    return float(_load(spec, 0, None).control_timestep())


def make_env(task: str, seed: int, episode_steps: int):
    """The environment of `task` (dm_control's, or an OGBench single-task env behind the same
    interface, pac.evaluation.ogbench) whose episodes end after `episode_steps` steps."""
    spec = task_spec(task)
    if episode_steps < 1:
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    if spec.simulator == "ogbench":
        from pac.evaluation.ogbench import OGBenchEnvironment

        return OGBenchEnvironment(spec, int(seed), episode_steps)
    # dm_control ends the episode once step_count >= time_limit / control_timestep.
    time_limit = (episode_steps - 0.5) * _control_timestep(task)
    return _load(spec, int(seed), time_limit)


def flatten_observation(observation: dict[str, Any]) -> np.ndarray:
    """Every observation entry flattened in spec order -> float32 [N^P_task] (App. C.3)."""
    parts = [np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def is_success(task: str, rewards: np.ndarray) -> bool:
    """Reward >= spec.success_reward on every one of the last spec.success_window of steps."""
    spec = task_spec(task)
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if rewards.size == 0:
        return False
    window = max(1, math.ceil(spec.success_window * rewards.size))
    return bool(np.all(rewards[-window:] >= spec.success_reward - 1e-6))


# --- scripted experts ----------------------------------------------------------------------------


def _point_mass(env) -> np.ndarray:
    """PD controller on the mass-to-target vector (actuators act along x and y)."""
    physics = env.physics
    to_target = physics.mass_to_target()[:2]
    return 40.0 * to_target - 1.0 * physics.velocity()


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b without BLAS (einsum's own loop): these matrices are 4 x 4 at most."""
    return np.einsum("ij,jk->ik", a, b)


def _dare_gain(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray,
               tol: float = 1e-13, max_iter: int = 200_000) -> np.ndarray:
    """The discrete LQR gain K = (R + B'PB)^-1 B'PA, P the fixed point of the Riccati recursion
    P <- Q + A'PA - A'PB (R + B'PB)^-1 B'PA (from P = Q), for one input (R 1 x 1).

    Plain iteration in numpy, no BLAS/LAPACK call: a scripted expert runs in evaluation and
    generation workers, where scipy's LAPACK DARE solver was seen spinning for minutes on a
    busy machine. tests/test_envs.py checks it against scipy.linalg.solve_discrete_are."""
    if r.shape != (1, 1):
        raise ValueError(f"one input expected, R is {r.shape}")
    p = q.copy()
    for _ in range(max_iter):
        pb, pa = _mm(p, b), _mm(p, a)
        gain = _mm(b.T, pa) / (r[0, 0] + _mm(b.T, pb)[0, 0])
        nxt = q + _mm(a.T, pa) - _mm(_mm(a.T, pb), gain)
        nxt = 0.5 * (nxt + nxt.T)
        if np.max(np.abs(nxt - p)) <= tol * max(1.0, np.max(np.abs(nxt))):
            p = nxt
            break
        p = nxt
    else:
        raise RuntimeError("the Riccati recursion did not converge")
    pb = _mm(p, b)
    return _mm(b.T, _mm(p, a)) / (r[0, 0] + _mm(b.T, pb)[0, 0])


@functools.cache
def _cartpole_gain(task: str) -> np.ndarray:
    """Discrete LQR gain of the cart-pole linearised at the upright pose (finite differences)."""
    import mujoco

    env = _load(TASKS[task], 0, None)
    model = env.physics.model.ptr
    data = mujoco.MjData(model)
    nx, nu, eps = 2 * model.nv, model.nu, 1e-5

    def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:  # one physics step (RK4 here)
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = x[: model.nv], x[model.nv :], u
        mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    x0, u0 = np.zeros(nx), np.zeros(nu)
    a = np.stack([(step(x0 + e, u0) - step(x0 - e, u0)) / (2 * eps) for e in eps * np.eye(nx)], 1)
    b = np.stack([(step(x0, u0 + e) - step(x0, u0 - e)) / (2 * eps) for e in eps * np.eye(nu)], 1)
    # One control step holds the action for `action_repeat` physics steps.
    ak, bk = np.eye(nx), np.zeros_like(b)
    for _ in range(TASKS[task].action_repeat):
        ak, bk = _mm(a, ak), _mm(a, bk) + b
    q = np.diag([1.0, 10.0, 0.1, 0.1])  # cart position, pole angle, their velocities
    return _dare_gain(ak, bk, q, np.array([[1.0]]))


def warm_expert(task: str) -> None:
    """Compute a scripted expert's cached constants (the cart-pole's LQR gain) in this process,
    so that workers forked from it inherit them instead of each computing them again."""
    spec = task_spec(task)
    if spec.simulator == "dm_control" and (spec.domain, spec.task) == ("cartpole", "balance"):
        _cartpole_gain(task)


def _cartpole(env, task: str) -> np.ndarray:
    physics = env.physics
    state = np.concatenate([physics.data.qpos, physics.data.qvel])
    state[1] = math.remainder(state[1], 2 * math.pi)
    return -_cartpole_gain(task) @ state


def _reacher(env, kp: float = 2.0, kd: float = 0.2, damping: float = 0.05) -> np.ndarray:
    """Damped-least-squares inverse kinematics towards the target, as a joint-space PD.

    dq = J^T (J J^T + damping^2 I)^-1 d, with d the fingertip-to-target vector and J the arm's
    Jacobian: one smooth function of (angles, d), with no choice between elbow branches and no
    angle wrapping. The gains keep clipped (bang-bang) actions rare, which per-dimension argmax
    decoding imitates badly (docs/experiments/2026-12-03-data-behaviours.md).
    """
    physics = env.physics
    l1 = physics.named.model.body_pos["hand", "x"]
    l2 = physics.named.model.body_pos["finger", "x"]
    q1, q2 = physics.data.qpos[:2]
    s1, c1 = math.sin(q1), math.cos(q1)
    s12, c12 = math.sin(q1 + q2), math.cos(q1 + q2)
    jac = np.array([[-l1 * s1 - l2 * s12, -l2 * s12], [l1 * c1 + l2 * c12, l2 * c12]])
    d = physics.finger_to_target()
    dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(2), d)
    return kp * dq - kd * physics.velocity()


def expert_action(task: str, env, rng: np.random.Generator | None = None) -> np.ndarray:
    """The scripted expert's action for the current state of `env` (float32 in [-1, 1])."""
    spec = task_spec(task)
    if spec.simulator == "ogbench":
        action = env.expert_action()  # the benchmark's own oracle
    elif (spec.domain, spec.task) == ("point_mass", "easy"):
        action = _point_mass(env)
    elif (spec.domain, spec.task) == ("cartpole", "balance"):
        action = _cartpole(env, task)
    elif spec.domain == "reacher":
        action = _reacher(env)
    else:
        experts = sorted(t for t, s in TASKS.items() if s.scripted_expert)
        raise ValueError(f"no scripted expert for task {task!r}; tasks with one: {experts}")
    return np.clip(action, spec.action_low, spec.action_high).astype(np.float32)


# --- graded behaviour ----------------------------------------------------------------------------

#: per-environment memory of the behaviour: env -> (physics time, sticky random action, whether
#: the expert drives this episode)
_STICKY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
EXPERT_NOISE = 0.1  # std of the Gaussian added to expert actions when quality < 1
STICKY_RESAMPLE = 0.2  # per-step probability that the random policy draws a new action


def action_noise_std(quality: float, noise: float | None = None) -> float:
    """The std of the per-step Gaussian on the driving controller's action: `noise` when given
    (``GroupConfig.action_noise``), else EXPERT_NOISE below quality 1 and none at quality 1."""
    if noise is not None:
        return float(noise)
    return EXPERT_NOISE if quality < 1.0 else 0.0


def weak_action(task: str, env) -> np.ndarray:
    """The task's weak controller: ``weak_gain`` x the scripted expert's action (pac.tasks).

    A consistently sub-optimal demonstrator, a timid operator who applies only a fraction of the
    expert's command (alone: 20-30% of expert). Unlike sticky random noise, its actions
    concentrate at one point of each state, so when it acts most of the time it is the *mode* of
    the data, and cloning the mode (argmax decoding) reproduces the weak controller instead of
    filtering it out.
    """
    spec = task_spec(task)
    if spec.weak_gain == 0.0:
        raise ValueError(
            f"task {task!r} has no weak controller; tasks with one: {list(WEAK_TASKS)}"
        )
    return (spec.weak_gain * expert_action(task, env)).astype(np.float32)


def behaviour_action(
    task: str,
    env,
    quality: float,
    rng: np.random.Generator,
    suboptimal: str = "random",
    noise: float | None = None,
) -> np.ndarray:
    """A behaviour policy of graded quality: 1 = expert ... 0 = the sub-optimal policy.

    * ``random``: each step follows the expert (plus N(0, 0.1) noise when quality < 1) with
      probability `quality`, otherwise a sticky uniform random action, kept for several steps
      (redrawn with probability 0.2 per step), so low quality drifts away from the goal instead
      of averaging out. Random actions spread over the whole range, so the data's mode at each
      state stays the expert's: cloning the mode (argmax decoding) filters the noise out.
    * ``weak``: each *episode* is driven either by the expert (probability `quality`) or, for
      the whole episode, by the task's weak controller (:func:`weak_action`), both with the same
      N(0, 0.1) noise. Mixed per step, the two would average into one adequate controller
      (docs/experiments/2026-12-03-data-behaviours.md); mixed per episode, the data is as
      poor as its episodes (like data from agents of several skill levels), and on the weak
      episodes' states the weak controller is the data's mode.

    `noise` is the std of the Gaussian added to the driving controller's action at every step
    (None: EXPERT_NOISE below quality 1, none at quality 1). Noise that is new at every step is
    what lets a cloned policy read the expert's feedback: a noiseless reacher expert's actions
    follow the joint velocity they caused, and its clones push along the motion
    (BENCHMARKS.md, "Reacher and exploration noise").
    """
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    if suboptimal not in SUBOPTIMAL:
        raise ValueError(f"suboptimal must be one of {SUBOPTIMAL}, got {suboptimal!r}")
    spec = task_spec(task)
    low, high = spec.action_low, spec.action_high
    now = float(env.physics.time())
    previous = _STICKY.get(env)
    new_episode = previous is None or previous[0] >= now
    if new_episode or rng.random() < STICKY_RESAMPLE:
        sticky = rng.uniform(low, high, spec.num_actions).astype(np.float32)
    else:
        sticky = previous[1]
    expert_drives = True
    if suboptimal == "weak":
        expert_drives = bool(rng.random() < quality) if new_episode else previous[2]
    _STICKY[env] = (now, sticky, expert_drives)
    std = action_noise_std(quality, noise)
    if quality >= 1.0:
        driver = expert_action(task, env, rng)
        if std == 0.0:  # the noiseless expert, as generated before action_noise existed
            return driver
    elif suboptimal == "weak":
        driver = expert_action(task, env, rng) if expert_drives else weak_action(task, env)
    elif rng.random() < quality:
        driver = expert_action(task, env, rng)
    else:
        return sticky
    action = driver + rng.normal(0.0, std, spec.num_actions)
    return np.clip(action, low, high).astype(np.float32)


def render(env, size: int = 80, camera: int = 0) -> np.ndarray:
    """An offscreen camera image, uint8 [size, size, 3] (App. C.3: 80x80 pixels)."""
    if _RENDER_ERROR is not None or os.environ.get("MUJOCO_GL") in ("off", "disable", "0"):
        raise RenderingUnavailable(_render_help(_RENDER_ERROR or "MUJOCO_GL disables rendering"))
    try:
        return np.asarray(env.physics.render(height=size, width=size, camera_id=camera), np.uint8)
    except Exception as exc:  # noqa: BLE001 - GL context creation failures vary by back-end
        raise RenderingUnavailable(_render_help(f"{type(exc).__name__}: {exc}")) from exc


def _render_help(reason: str) -> str:
    return (
        f"offscreen MuJoCo rendering is unavailable ({reason}). Use MUJOCO_GL=egl (Debian package "
        "libegl1, works without a GPU via Mesa) or MUJOCO_GL=osmesa (Debian package libosmesa6), "
        "or set data.render=false."
    )

"""Held-out data from outside the project: the replay buffer of an online SAC agent (d3rlpy).

The D4RL "medium-replay" recipe on dm_control's ``cartpole.swingup`` at the project's control rate:
d3rlpy 2.8.1's SAC (its documented defaults, learning rates 3e-4, gamma 0.99, tau 0.005, automatic
temperature, except the networks: two layers of ``--hidden`` units, default 128, and batch
``--batch``, default 128, against d3rlpy's 256 and 256, to fit the 2-core laptop: at d3rlpy's sizes
a step with its update took about 34 ms of CPU, 23 min for 40,000) learns online for ``--episodes``
episodes of ``--steps`` control steps, one update per step after ``--random-steps`` uniform random
actions, and *every* episode it collects is written out, in order, as one rollout file
(docs/rollout_format.md) in ``<out>/landing``: the exploration episodes of a learner whose returns
rise from random to medium, the data a lab would have after training an agent online.
The project's code writes none of it; ``pac ingest <out>/landing`` then reads it as a lab's.

The environment is built here through dm_control directly, as the registry's task is
(``pac/tasks.py``: ``cartpole.swingup``, action repeat 2, i.e. 50 Hz with dm_control's 10 ms
physics step; observations flattened in spec order: 5 values; one action in [-1, 1]); each
episode lasts ``--steps`` control steps and ends by its time limit (discount 1, a truncation).
After training, the final agent's greedy policy runs ``--eval-episodes`` episodes (their own
seeds): its mean return is the data's reference ("expert") return, written to
``<out>/agent.json`` with every episode's return and the wall time, and its episodes go to
``<out>/heldout`` as rollout files: states and returns no arm trains on (the critic probes').

Deterministic given ``--seed`` on one thread (d3rlpy.seed seeds Python, NumPy and torch; the
environment and the random-action phase have their own seeded generators).

    bash benchmarks/peers_env.sh
    PYTHONPATH=benchmarks/.peers:$PWD python benchmarks/heldout_sac_replay.py \\
        --out runs/heldout/sac_replay --seed 0
    python -m pac.cli ingest runs/heldout/sac_replay/landing --group sac_replay \\
        --data-root runs/heldout/sac_replay/data --no-dvc --no-track
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK = "cartpole.swingup"


def load_env(seed: int, steps: int) -> Any:
    """dm_control's cartpole swingup at the registry's action repeat, `steps` control steps."""
    os.environ.setdefault("MUJOCO_GL", "disable")  # physics only
    from dm_control import suite

    from pac.tasks import TASKS

    spec = TASKS[TASK]
    env_kwargs = {"n_sub_steps": spec.action_repeat}
    probe = suite.load(spec.domain, spec.task, environment_kwargs=env_kwargs)
    dt = float(probe.control_timestep())
    # dm_control ends an episode once step_count >= time_limit / control_timestep
    return suite.load(spec.domain, spec.task,
                      task_kwargs={"random": seed, "time_limit": (steps - 0.5) * dt},
                      environment_kwargs=env_kwargs)


def flat(observation: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in observation.values()])


def make_gym_env(seed: int, steps: int, landing: Path | None) -> Any:
    """The dm_control env as a gymnasium.Env for d3rlpy; with `landing`, every finished episode
    is written there as a rollout file (named by its index, in collection order)."""
    import gymnasium

    from pac.data.store import Episode
    from pac.envs import is_success
    from pac.rlft.ingest import write_rollout

    class DMControlEnv(gymnasium.Env):
        def __init__(self) -> None:
            self.env = load_env(seed, steps)
            spec = self.env.action_spec()
            n_obs = sum(int(np.prod(v.shape)) for v in self.env.observation_spec().values())
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
            self.action_space = gymnasium.spaces.Box(
                spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                spec.shape, np.float32)
            self.action_space.seed(seed)
            self.episodes: list[float] = []
            self._trace: dict[str, list] = {}

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            obs = flat(self.env.reset().observation)
            self._trace = {"proprio": [obs], "actions": [], "rewards": []}
            return obs, {}

        def step(self, action: np.ndarray):
            action = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
            ts = self.env.step(action)
            obs, reward = flat(ts.observation), float(ts.reward or 0.0)
            self._trace["actions"].append(action)
            self._trace["rewards"].append(reward)
            done = ts.last()
            if done:
                self._finish()
            else:
                self._trace["proprio"].append(obs)
            return obs, reward, False, done, {}  # a time-limit end: truncated, not terminated

        def _finish(self) -> None:
            rewards = np.asarray(self._trace["rewards"], np.float32)
            index = len(self.episodes)
            self.episodes.append(float(rewards.sum()))
            if landing is None:
                return
            episode = Episode(TASK, np.stack(self._trace["proprio"]),
                              np.stack(self._trace["actions"]), rewards,
                              np.ones_like(rewards), success=is_success(TASK, rewards))
            write_rollout(landing / f"sac-{index:04d}.npz", episode,
                          {"robot": "dm_control", "agent": "d3rlpy SAC (online)",
                           "episode": index, "seed": seed})

    return DMControlEnv()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder: landing/ (rollout files), heldout/ and agent.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=80, help="episodes the learner collects")
    ap.add_argument("--steps", type=int, default=500, help="control steps per episode (10 s)")
    ap.add_argument("--random-steps", type=int, default=1000,
                    help="uniform random actions before the agent acts (and learns)")
    ap.add_argument("--hidden", type=int, default=128, help="units of SAC's two layers")
    ap.add_argument("--batch", type=int, default=128, help="SAC's batch size")
    ap.add_argument("--eval-episodes", type=int, default=10,
                    help="greedy episodes of the final agent: the data's reference return")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.steps < 2 or args.random_steps < 0:
        raise SystemExit("error: --episodes >= 1, --steps >= 2, --random-steps >= 0")

    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    landing = args.out.resolve() / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    env = make_gym_env(args.seed, args.steps, landing)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[args.hidden, args.hidden])
    sac = d3rlpy.algos.SACConfig(batch_size=args.batch, actor_encoder_factory=encoder,
                                 critic_encoder_factory=encoder).create(device="cpu:0")
    start = time.perf_counter()
    sac.fit_online(env, buffer=d3rlpy.dataset.create_fifo_replay_buffer(10**6, env=env),
                   n_steps=args.episodes * args.steps, n_steps_per_epoch=10 * args.steps,
                   update_start_step=args.random_steps, random_steps=args.random_steps,
                   experiment_name=f"sac_replay_seed{args.seed}", with_timestamp=False,
                   logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=False)
    train_s = time.perf_counter() - start
    held_out = args.out.resolve() / "heldout"  # not for ingestion: states no arm trains on
    held_out.mkdir(exist_ok=True)
    eval_env = make_gym_env(args.seed + 10_000, args.steps, held_out)
    finals = []
    for _ in range(args.eval_episodes):
        obs, _ = eval_env.reset()
        total, done = 0.0, False
        while not done:
            obs, reward, _, done, _ = eval_env.step(sac.predict(obs[None])[0])
            total += reward
        finals.append(total)
    returns = env.episodes
    report = {
        "task": TASK, "seed": args.seed, "episodes": len(returns), "steps": args.steps,
        "random_steps": args.random_steps, "hidden": args.hidden, "batch": args.batch,
        "d3rlpy": d3rlpy.__version__,
        "returns": [round(r, 2) for r in returns],
        "data_mean_return": float(np.mean(returns)),
        "final_agent_returns": [round(r, 2) for r in finals],
        "final_agent_mean_return": float(np.mean(finals)),
        "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - start, 1),
    }
    (args.out / "agent.json").write_text(json.dumps(report, indent=1))
    first, last = returns[: max(1, len(returns) // 10)], returns[-max(1, len(returns) // 10):]
    print(f"{len(returns)} episodes: returns {np.mean(first):.1f} (first tenth) ->"
          f" {np.mean(last):.1f} (last tenth), mean {report['data_mean_return']:.1f};"
          f" final agent {report['final_agent_mean_return']:.1f};"
          f" {train_s:.0f} s training, {report['total_s']:.0f} s in all")


if __name__ == "__main__":
    main()

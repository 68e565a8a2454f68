"""`pac data generate`: graded-quality dm_control episodes for each dataset group (App. C.3-C.4).

Every episode's seed is derived from (data.seed, group, task, episode index), and shards have a
fixed size, so the output is byte-identical whatever the number of worker processes. A group is
built in a hidden temp folder and swapped in whole: a crash leaves the previous group untouched.
"""

from __future__ import annotations

import math
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pac.config import PACConfig, group_alpha_beta
from pac.data.store import Episode, StoreError, remove_stale_temps, temp_dir, write_shard
from pac.tasks import TASKS

#: test hook: crash (os._exit) after writing this many shards of a group, to prove atomicity
CRASH_ENV = "PAC_GENERATE_CRASH_AFTER"


def episode_seed(seed: int, group: str, task: str, index: int) -> int:
    """A stable 31-bit environment seed per (data.seed, group, task, episode index)."""
    parts = [seed, zlib.crc32(group.encode()), zlib.crc32(task.encode()), index]
    return int(np.random.SeedSequence(parts).generate_state(1)[0] & 0x7FFFFFFF)


def run_episode(
    env,
    task: str,
    quality: float,
    seed: int,
    cameras: int = 0,
    suboptimal: str = "random",
    noise: float | None = None,
) -> Episode:
    """Roll out the graded behaviour policy for one episode of `env` (o_t, a_t, r_t, d_t)."""
    from pac.envs import behaviour_action, flatten_observation, is_success, render

    rng = np.random.default_rng(seed)
    time_step = env.reset()
    obs, acts, rews, discs, imgs = [], [], [], [], []
    while not time_step.last():
        obs.append(flatten_observation(time_step.observation))
        if cameras:
            imgs.append(np.stack([render(env, 80, c) for c in range(cameras)]))
        action = behaviour_action(task, env, quality, rng, suboptimal, noise)
        time_step = env.step(action)
        acts.append(action)
        rews.append(time_step.reward)
        discs.append(time_step.discount)
    rewards = np.asarray(rews, dtype=np.float32)
    truncated = discs[-1] > 0  # a time limit, not a terminal state: keep o_L to bootstrap from
    final_proprio = flatten_observation(time_step.observation) if truncated else None
    final_images = (
        np.stack([render(env, 80, c) for c in range(cameras)]) if truncated and cameras else None
    )
    return Episode(
        task=task,
        proprio=np.stack(obs),
        actions=np.stack(acts).astype(np.float32),
        rewards=rewards,
        discounts=np.asarray(discs, dtype=np.float32),
        success=is_success(task, rewards),
        quality=float(quality),
        source="sim",
        images=np.stack(imgs) if cameras else None,
        final_proprio=final_proprio,
        final_images=final_images,
    )


@dataclass(frozen=True)
class Chunk:
    """Episodes [first, first + count) of one task of one group: one shard."""

    folder: str
    group: str
    task: str
    quality: float
    seed: int
    first: int
    count: int
    episode_steps: int
    cameras: int
    suboptimal: str = "random"
    noise: float | None = None

    @property
    def name(self) -> str:
        return f"{self.task}-{self.first:06d}"


def _write_chunk(chunk: Chunk) -> tuple[int, int, int]:
    """Generate and write one shard; returns (episodes, successes, steps).

    One environment per shard (MJCF compiled once), seeded by the shard's first episode; the
    behaviour policy's generator is seeded per episode.
    """
    from pac.envs import make_env

    seeds = [episode_seed(chunk.seed, chunk.group, chunk.task, chunk.first + i)
             for i in range(chunk.count)]
    env = make_env(chunk.task, seeds[0], chunk.episode_steps)
    episodes = [run_episode(env, chunk.task, chunk.quality, s, chunk.cameras, chunk.suboptimal,
                            chunk.noise)
                for s in seeds]
    write_shard(Path(chunk.folder), chunk.name, chunk.group, episodes)
    steps = sum(len(ep.rewards) for ep in episodes)
    return len(episodes), sum(ep.success for ep in episodes), steps


def episodes_per_shard(episodes_per_task: int) -> int:
    """Fixed shard size (independent of the worker count, so output is reproducible)."""
    return min(1000, max(10, math.ceil(episodes_per_task / 4)))


def check_generation(cfg: PACConfig, groups: list[str]) -> None:
    """Validate the request before any compute: known groups, sim source, scripted experts."""
    known = {g.name: g for g in cfg.data.groups}
    if not groups:
        raise StoreError("no groups to generate")
    for name in groups:
        if name not in known:
            raise StoreError(f"unknown group {name!r}; groups in params: {', '.join(known)}")
        g = known[name]
        if g.source != "sim":
            raise StoreError(
                f"group {name!r} has source {g.source!r}: its episodes come from `pac ingest`,"
                " not from simulation"
            )
        for task in g.tasks:
            if not TASKS[task].scripted_expert:
                experts = sorted(t for t, s in TASKS.items() if s.scripted_expert)
                raise StoreError(
                    f"group {name!r}: task {task!r} has no scripted expert to generate data;"
                    f" tasks with one: {', '.join(experts)}"
                )
        if not 0.0 <= g.quality <= 1.0:
            raise StoreError(f"group {name!r}: quality {g.quality} is outside [0, 1]")
        if g.episodes_per_task < 1:
            raise StoreError(f"group {name!r}: episodes_per_task must be >= 1")


def _probe_render(task: str) -> None:
    """Render one frame: raises RenderingUnavailable (naming the Debian packages) early."""
    from pac.envs import make_env, render

    env = make_env(task, 0, 2)
    env.reset()
    render(env)


def generate_group(
    cfg: PACConfig, group: str, root: str | Path, workers: int = 1, progress: bool = True
) -> dict[str, float]:
    """(Re)generate one group under `root/<group>`; returns its episodes / success summary."""
    check_generation(cfg, [group])
    g = next(x for x in cfg.data.groups if x.name == group)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    tmp = temp_dir(root, group)
    per_shard = episodes_per_shard(g.episodes_per_task)
    cameras = cfg.data.cameras if cfg.data.render else 0
    chunks = [
        Chunk(str(tmp), group, task, g.quality, cfg.data.seed, first,
              min(per_shard, g.episodes_per_task - first), cfg.data.episode_steps, cameras,
              g.suboptimal, g.action_noise)
        for task in g.tasks
        for first in range(0, g.episodes_per_task, per_shard)
    ]
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    from pac.envs import dm_suite, warm_expert

    dm_suite()  # import dm_control once, before workers fork
    for task in g.tasks:
        warm_expert(task)  # the experts' cached constants, computed before workers fork
    totals = np.zeros(3, dtype=np.int64)
    try:
        from tqdm import tqdm

        bar = tqdm(total=g.episodes_per_task * len(g.tasks), unit="ep",
                   desc=f"generate {group}", disable=not progress)
        if workers <= 1:
            if cameras:
                _probe_render(g.tasks[0])
            results = (_write_chunk(c) for c in chunks)
            for done, res in enumerate(results, 1):
                totals += res
                bar.update(res[0])
                if crash_after and done >= crash_after:
                    os._exit(3)
        else:
            # fork: workers inherit the imports; the parent never opens a GL context
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
                if cameras:
                    pool.submit(_probe_render, g.tasks[0]).result()
                for done, fut in enumerate(as_completed(pool.submit(_write_chunk, c)
                                                        for c in chunks), 1):
                    res = fut.result()
                    totals += res
                    bar.update(res[0])
                    if crash_after and done >= crash_after:
                        os._exit(3)
        bar.close()
        final = root / group
        if final.exists():  # swap: the old group moves aside, the new one in, then old goes
            old = temp_dir(root, f"old-{group}")
            os.rename(final, old / group)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    alpha, beta = group_alpha_beta(cfg, g)
    return {
        "group": group, "episodes": int(totals[0]), "successes": int(totals[1]),
        "transitions": int(totals[2]), "success_rate": float(totals[1] / max(1, totals[0])),
        "alpha": alpha, "beta": beta,
    }

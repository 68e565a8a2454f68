"""The lambda-weighted trajectory sampler (App. C.4) and its DataLoader.

Sample ``i`` of the global stream (``i = (step * world_size + rank) * batch_size + j``) is a pure
function of (seed, i):

1. group: a seeded, shuffled period of ``PERIOD`` slots holds each group in proportion to its
   weight lambda, so group frequencies match lambda (to 1/PERIOD) over any whole period;
2. dataset: the m-th visit of a group goes to its datasets (tasks) in turn: uniform within a group;
3. trajectory: the k-th visit of a dataset takes window ``perm_e(k mod n)`` of its n windows, with a
   fresh seeded permutation per pass e: every dataset loops deterministically, never exhausted.

Windows. An episode of L steps has L windows, starting at offsets 0..L-1; a window that runs past
the end is padded (``step_mask`` False). The loss uses positions 0..T-2 (position t+1 gives
s_{t+1}), so with offsets only up to L-T the last step of an episode would never be a loss
position and a terminal reward would never reach Q. Past the end, position L - offset holds the
final observation o_L of a truncated episode when the store has it (``observed`` True,
``step_mask`` False): the last transition then bootstraps from it.

Held out. Every ``eval.offline_holdout``-th episode of a task without a simulator is never
sampled: the offline evaluation measures the policy on those (:mod:`pac.evaluation.offline`).

Counts m and k follow in closed form from i, so training resumes exactly from the step number,
ranks read disjoint parts of the stream, and the union of the ranks' batches at a step equals the
one-rank batch of the same global size.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pac.batch import Batch
from pac.config import ConfigError, PACConfig, group_alpha_beta
from pac.data.store import EpisodeStore, Shard
from pac.data.tokenizer import TaskTokenizer
from pac.tasks import TASKS, proprio_features, to_unit

PERIOD = 10_000  # slots of the group schedule


@functools.lru_cache(maxsize=4096)
def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


@dataclass
class _Dataset:
    """One task of one group: its episodes (from one or more shards) and their windows."""

    task: str
    shards: list[Shard]
    shard_of: np.ndarray  # [E] index into shards
    start: np.ndarray  # [E] first row of the episode in its shard
    length: np.ndarray  # [E]
    row: np.ndarray  # [E] row of the episode in its shard's index (for its final observation)
    has_final: np.ndarray  # [E] bool: the final observation o_L is stored
    first_window: np.ndarray  # [E + 1] cumulative window counts

    @property
    def num_windows(self) -> int:
        return int(self.first_window[-1])


@functools.lru_cache(maxsize=4096)
def _affine_params(n: int, seed: int) -> tuple[int, int]:
    """a, b of a seeded bijection k -> (a * k + b) mod n of [0, n), gcd(a, n) = 1."""
    rng = np.random.default_rng(seed)
    a = int(rng.integers(1, n)) if n > 1 else 1
    while math.gcd(a, n) != 1:
        a = a % (n - 1) + 1
    return a, int(rng.integers(0, n))


def _affine_permutation(k: np.ndarray, n: int, seed: int) -> np.ndarray:
    a, b = _affine_params(n, seed)
    return (a * k.astype(np.int64) + b) % n


class TrajectorySampler:
    """Batches of trajectories of length T from the store, in the model's padded input format."""

    def __init__(
        self, cfg: PACConfig, store: EpisodeStore, tokenizer: TaskTokenizer, seed: int = 0
    ):
        self.cfg, self.store, self.tokenizer, self.seed = cfg, store, tokenizer, int(seed)
        m, d = cfg.model, cfg.data
        self.length = d.trajectory_length
        if tokenizer.vocab_size > m.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} pieces but model.vocab_size is"
                f" {m.vocab_size}: raise model.vocab_size or lower data.tokenizer_vocab"
            )
        self.groups = d.groups
        self.datasets: list[list[_Dataset]] = []
        self.weights = np.array([g.weight for g in self.groups], dtype=np.float64)
        for gi, g in enumerate(self.groups):
            datasets = [self._dataset(g.name, task) for task in self._tasks_of(g.name, g.tasks)]
            datasets = [ds for ds in datasets if ds is not None]
            if not datasets and d.success_only and self._tasks_of(g.name, g.tasks):
                # FilteredBC: a group without any success contributes nothing (weight 0).
                warnings.warn(f"data.groups.{g.name}: no successful episodes; not sampled",
                              stacklevel=2)
                self.weights[gi] = 0.0
            elif not datasets:
                raise ValueError(
                    f"data.groups.{g.name}: the store at {store.root} has no episodes of this"
                    " group (run `pac data generate` or `pac ingest` first)"
                )
            self.datasets.append(datasets)
        if not self.weights.any():
            raise ValueError(f"no successful episodes in any group of {store.root}")
        check_reward_support(cfg, [ds for datasets in self.datasets for ds in datasets])
        self.alpha_beta = np.array([group_alpha_beta(cfg, g) for g in self.groups], np.float32)
        self._schedule, self._rank_in_period, self._quota = self._build_schedule()
        self._text = {
            ds.task: self._tokens(ds.task) for datasets in self.datasets for ds in datasets
        }

    # -- set-up -----------------------------------------------------------------------------------

    @staticmethod
    def _features(task: str, raw: np.ndarray) -> np.ndarray:
        """Stored observations -> the model's proprioceptive features (pac.tasks)."""
        return proprio_features(TASKS[task], raw) if task in TASKS else raw

    @staticmethod
    def _unit_actions(task: str, actions: np.ndarray) -> np.ndarray:
        """Stored actions (robot units) -> the policy's [-1, 1] bins (pac.tasks.to_unit)."""
        if task not in TASKS:
            return actions
        spec = TASKS[task]
        return to_unit(actions, spec.low, spec.high)

    def _tokens(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of the task's instruction padded (or checked) to model.num_text_tokens."""
        ids, mask = self.tokenizer.encode(TASKS[task].instruction if task in TASKS else task)
        n, size = int(mask.sum()), self.cfg.model.num_text_tokens
        if n > size:
            raise ValueError(f"task {task!r} needs {n} tokens > model.num_text_tokens={size}")
        out_ids, out_mask = np.zeros(size, np.int64), np.zeros(size, bool)
        out_ids[:n], out_mask[:n] = ids[:n], True
        return out_ids, out_mask

    def _tasks_of(self, group: str, configured: list[str]) -> list[str]:
        """The group's datasets: every task stored for it (configured tasks must be there)."""
        stored = sorted({s.task for s in self.store.shards if s.group == group})
        missing = [t for t in configured if t not in stored]
        if stored and missing:
            raise ValueError(
                f"data.groups.{group}: task(s) {missing} have no episodes in {self.store.root}"
            )
        return stored

    def _dataset(self, group: str, task: str) -> _Dataset | None:
        shards = [s for s in self.store.shards if s.group == group and s.task == task]
        m = self.cfg.model
        spec = TASKS.get(task)
        for s in shards:
            width = s.proprio.shape[1] + (len(spec.angle_dims) if spec else 0)
            if width > m.num_proprio or s.actions.shape[1] > m.num_actions:
                raise ValueError(
                    f"shard {s.key}: task {task} has N^P={width} (features),"
                    f" N^A={s.actions.shape[1]}; model.num_proprio/num_actions are"
                    f" {m.num_proprio}/{m.num_actions}"
                )
        shard_of, start, length, row, has_final = [], [], [], [], []
        held = {}
        if spec is not None and not spec.simulator:  # offline evaluation's held-out episodes
            from pac.evaluation.offline import holdout_masks

            held = holdout_masks(shards, self.cfg.eval.offline_holdout)
        for i, s in enumerate(shards):
            keep = np.ones(len(s.index), bool)
            if self.cfg.data.success_only:
                keep = s.index["success"].to_numpy(bool)
            if s.key in held:
                keep = keep & ~held[s.key]
            idx = s.index[keep]
            shard_of.append(np.full(len(idx), i, np.int64))
            start.append(idx["start"].to_numpy(np.int64))
            length.append(idx["length"].to_numpy(np.int64))
            row.append(np.flatnonzero(keep))
            has_final.append(idx["has_final"].to_numpy(bool))
        if not shards or sum(len(x) for x in start) == 0:
            return None
        length_arr = np.concatenate(length)
        return _Dataset(
            task, shards, np.concatenate(shard_of), np.concatenate(start), length_arr,
            np.concatenate(row), np.concatenate(has_final),
            np.concatenate([[0], np.cumsum(length_arr)]),  # one window per step: offsets 0..L-1
        )

    def _build_schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weights = self.weights
        exact = weights / weights.sum() * PERIOD
        quota = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - quota), kind="stable")
        quota[order[: PERIOD - quota.sum()]] += 1  # largest remainders
        schedule = np.repeat(np.arange(len(weights)), quota)
        schedule = np.random.default_rng(_mix(self.seed, 0x5EED)).permutation(schedule)
        rank_in_period = np.zeros(PERIOD, dtype=np.int64)  # m-th slot of its group in a period
        for gi in range(len(weights)):
            slots = np.flatnonzero(schedule == gi)
            rank_in_period[slots] = np.arange(len(slots))
        return schedule, rank_in_period, quota

    # -- the pure index -> sample map -------------------------------------------------------------

    def sample_indices(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(group, dataset, episode, offset) of each sample of this rank's batch at `step`."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        if batch_size < 1 or step < 0:
            raise ValueError(f"need batch_size >= 1 and step >= 0, got {batch_size}, {step}")
        first = (step * world_size + rank) * batch_size
        i = np.arange(first, first + batch_size, dtype=np.int64)
        slot, period = i % PERIOD, i // PERIOD
        group = self._schedule[slot]
        visit = period * self._quota[group] + self._rank_in_period[slot]  # m: visits of group
        dataset = np.zeros_like(i)
        episode = np.zeros_like(i)
        offset = np.zeros_like(i)
        for gi, datasets in enumerate(self.datasets):
            sel = np.flatnonzero(group == gi)
            if not len(sel):
                continue
            nd = len(datasets)
            dataset[sel] = visit[sel] % nd
            draw = visit[sel] // nd  # k: visits of that dataset
            for di, ds in enumerate(datasets):
                hit = dataset[sel] == di
                sub, k = sel[hit], draw[hit]
                if not len(sub):
                    continue
                n = ds.num_windows
                window = np.empty_like(k)
                for e in np.unique(k // n):  # one permutation per pass over the dataset
                    in_pass = k // n == e
                    window[in_pass] = _affine_permutation(k[in_pass] % n, n,
                                                          _mix(self.seed, gi, di, e))
                ep = np.searchsorted(ds.first_window, window, side="right") - 1
                episode[sub] = ep
                offset[sub] = window - ds.first_window[ep]
        return group, dataset, episode, offset

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """This rank's `batch_size` trajectories of global update `step` (a pure function)."""
        return to_batch(self.batch_arrays(step, batch_size, rank, world_size))

    def _drop_modalities(self, step: int, rank: int, proprio_mask: np.ndarray,
                         image_mask: np.ndarray | None, text_mask: np.ndarray) -> None:
        """Modality dropout (App. D.2.4, ``data.drop_*``), in place on the masks: per trajectory
        and modality an independent draw (seeded by data.seed, step and rank: a pure function
        of the step); a trajectory that would lose every input it has keeps them all."""
        d = self.cfg.data
        rates = [(proprio_mask, d.drop_proprio), (image_mask, d.drop_images),
                 (text_mask, d.drop_text)]
        rates = [(mask, p) for mask, p in rates if mask is not None]
        if not any(p > 0 for _, p in rates):
            return
        rng = np.random.default_rng([d.seed, step, rank, 0xD2])
        present = np.stack([mask.any(1) for mask, _ in rates], 1)  # [B, modalities]
        drop = rng.random(present.shape) < np.array([p for _, p in rates])
        drop &= present
        drop[(drop == present).all(1)] = False  # nothing would be left: keep everything
        for j, (mask, _) in enumerate(rates):
            mask[drop[:, j]] = False

    def batch_arrays(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> dict[str, np.ndarray | None]:
        """The fields of :meth:`batch` as numpy arrays (cheap to send between processes)."""
        group, dataset, episode, offset = self.sample_indices(step, batch_size, rank, world_size)
        m, T = self.cfg.model, self.length
        B = batch_size
        proprio = np.zeros((B, T, m.num_proprio), np.float32)
        actions = np.zeros((B, T, m.num_actions), np.float32)
        rewards = np.zeros((B, T), np.float32)
        discounts = np.zeros((B, T), np.float32)
        step_mask = np.zeros((B, T), bool)
        observed = np.zeros((B, T), bool)
        proprio_mask = np.zeros((B, m.num_proprio), bool)
        action_mask = np.zeros((B, m.num_actions), bool)
        text = np.zeros((B, m.num_text_tokens), np.int64)
        text_mask = np.zeros((B, m.num_text_tokens), bool)
        images = np.zeros((B, T, m.num_images, 80, 80, 3), np.uint8) if m.num_images else None
        image_mask = np.zeros((B, m.num_images), bool) if m.num_images else None
        steps = np.arange(T)
        for gi, di in {(int(g), int(d)) for g, d in zip(group, dataset)}:
            sel = np.flatnonzero((group == gi) & (dataset == di))
            ds = self.datasets[gi][di]
            e = episode[sel]
            first = ds.start[e] + offset[sel]  # row of the trajectory's first step
            n = np.minimum(T, ds.length[e] - offset[sel])  # valid steps (short episodes: fewer)
            local = ds.shard_of[e]
            text[sel], text_mask[sel] = self._text[ds.task]
            for si in np.unique(local):
                hit = local == si
                sub, shard = sel[hit], ds.shards[si]
                valid = steps[None, :] < n[hit, None]  # [b, T]
                rows = first[hit, None] + np.minimum(steps[None, :], n[hit, None] - 1)
                feats = self._features(ds.task, shard.proprio[rows])
                p, a = feats.shape[-1], shard.actions.shape[1]
                proprio[sub, :, :p] = np.where(valid[..., None], feats, 0.0)
                acts = self._unit_actions(ds.task, shard.actions[rows])
                actions[sub, :, :a] = np.where(valid[..., None], acts, 0.0)
                rewards[sub] = np.where(valid, shard.rewards[rows], 0.0)
                discounts[sub] = np.where(valid, shard.discounts[rows], 0.0)
                step_mask[sub] = valid
                observed[sub] = valid
                # o_L of a truncated episode at the position just past its last step
                final = ds.has_final[e[hit]] & (n[hit] < T)
                if final.any():
                    fsub, pos = sub[final], n[hit][final]
                    frow = ds.row[e[hit]][final]
                    proprio[fsub, pos, :p] = self._features(ds.task, shard.final_proprio[frow])
                    observed[fsub, pos] = True
                    if images is not None and shard.final_images is not None:
                        cams = min(shard.final_images.shape[1], m.num_images)
                        images[fsub, pos, :cams] = shard.final_images[frow, :cams]
                proprio_mask[sub, :p] = m.proprio_input  # pixels only: masked, not zeroed
                action_mask[sub, :a] = True
                if images is not None and shard.images is not None:
                    cams = min(shard.images.shape[1], m.num_images)
                    pix = shard.images[rows, :cams]  # [b, T, cams, 80, 80, 3]
                    images[sub, :, :cams] = np.where(valid[:, :, None, None, None, None], pix, 0)
                    image_mask[sub, :cams] = True
        self._drop_modalities(step, rank, proprio_mask, image_mask, text_mask)
        alpha_beta = self.alpha_beta[group]
        goal = m.num_goal_images
        return {
            "proprio": proprio, "proprio_mask": proprio_mask, "text": text, "text_mask": text_mask,
            "actions": actions, "action_mask": action_mask, "rewards": rewards,
            "discounts": discounts, "step_mask": step_mask, "observed": observed,
            "alpha": alpha_beta[:, 0].copy(),
            "beta": alpha_beta[:, 1].copy(), "group": group.astype(np.int64), "images": images,
            "image_mask": image_mask,
            "goal_images": np.zeros((B, goal, 80, 80, 3), np.uint8) if goal else None,
            "goal_mask": np.zeros((B, goal), bool) if goal else None,
        }


def return_range(r_min: float, r_max: float, gamma: float, horizon: int) -> tuple[float, float]:
    """The smallest and largest discounted return sum_k gamma^k r_k of rewards in
    [r_min, r_max] over 1 .. `horizon` steps (gamma < 1: over any number of steps)."""
    def forever(r: float) -> float:
        return r / (1.0 - gamma) if gamma < 1.0 else r * horizon

    return (forever(r_min) if r_min < 0 else r_min), (forever(r_max) if r_max > 0 else r_max)


def check_reward_support(cfg: PACConfig, datasets: list[_Dataset]) -> None:
    """Refuse, before any training, data whose returns the critic's support cannot hold.

    Q and V are categorical over [loss.value_min, loss.value_max] (App. B.3) and the projection
    clips every target into it, so a return outside the support is learned as its edge. The
    returns of rewards in [r_min, r_max] span :func:`return_range`; the support must contain it
    (a relative slack of 1e-6 for round-off: r_max = 1, gamma = 0.95 gives 20.000000000000004).
    The support is not derived from the data: the params say it, and this check says when to
    change it.
    """
    spans = [(float(np.min(s.rewards)), float(np.max(s.rewards)), ds.task)
             for ds in datasets for s in ds.shards if len(s.rewards)]
    if not spans:
        return
    r_min, r_max = min(x[0] for x in spans), max(x[1] for x in spans)
    horizon = max(int(ds.length.max()) for ds in datasets if len(ds.length))
    lo, hi = return_range(r_min, r_max, cfg.loss.gamma, horizon)
    v_min, v_max = cfg.loss.value_min, cfg.loss.value_max
    slack = 1e-6 * max(abs(v_min), abs(v_max), 1.0)
    if lo < v_min - slack or hi > v_max + slack:
        worst = min(spans)[2] if lo < v_min - slack else max(spans, key=lambda x: x[1])[2]
        raise ConfigError(
            f"loss.value_min/value_max [{v_min:g}, {v_max:g}] cannot hold the data's returns:"
            f" rewards span [{r_min:g}, {r_max:g}] (task {worst}), returns with loss.gamma"
            f" {cfg.loss.gamma:g} span [{lo:g}, {hi:g}]; widen the support or rescale the rewards"
        )


def to_batch(arrays: dict[str, np.ndarray | None]) -> Batch:
    """numpy arrays -> a Batch of tensors sharing their memory (no copy)."""
    return Batch(**{k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()})


class TrajectoryStream(torch.utils.data.IterableDataset):
    """Endless batches (numpy fields) for steps start_step, start_step + 1, ...; workers split
    the steps round-robin, which is the order the DataLoader returns them in."""

    def __init__(
        self, sampler: TrajectorySampler, batch_size: int, start_step: int = 0, rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.sampler, self.batch_size, self.start_step = sampler, batch_size, start_step
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + worker
        while True:
            yield self.sampler.batch_arrays(step, self.batch_size, self.rank, self.world_size)
            step += workers


def _keep(arrays):
    return arrays  # numpy crosses the worker pipe as one pickle, not one shared tensor per field


class BatchLoader:
    """Iterates a DataLoader over :class:`TrajectoryStream`, yielding :class:`Batch` objects."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __iter__(self):
        for arrays in self.loader:
            yield to_batch(arrays)


def make_dataloader(
    sampler: TrajectorySampler,
    batch_size: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> BatchLoader:
    """Batches of this rank for steps start_step, start_step + 1, ... (endless).

    `num_workers` > 0 samples in DataLoader worker processes (each maps the store's files).
    """
    stream = TrajectoryStream(sampler, batch_size, start_step, rank, world_size)
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,  # the sampler already batches
        collate_fn=_keep,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return BatchLoader(loader)

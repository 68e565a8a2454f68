"""Serving a PAC policy and driving dm_control episodes with it (evaluation, RLFT rollouts).

* :class:`PolicyServer` loads an inference checkpoint once, keeps its tokenizer, turns a raw
  observation (dm_control dict or flat proprio vector) + task instruction (+ camera images) into
  the padded :class:`~pac.batch.Observation` of training (App. B.2) and returns one action at
  batch 1. Decoding of the categorical policy (App. B.3, N_B bins per action dimension):

  - ``argmax``: the most likely bin of every action dimension;
  - ``mean``: the expected bin centre of every dimension (smooth where argmax is bang-bang);
  - ``sample``: one draw a ~ pi(.|s);
  - ``q_rerank``: K draws re-ranked by E[Q(s, a)], reusing the cached latents z_M: one encoder
    pass and one batched Q-decoder pass over the K candidates (§3.3, App. D.2.2 "the latent can
    be cached").

* A *policy* is any callable ``policy(env, time_step) -> action``; :func:`run_episode` drives a
  dm_control environment with it, so the network, the scripted expert and the random policy go
  through the same harness (:func:`expert_policy`, :func:`random_policy`,
  :func:`behaviour_policy`, :meth:`PolicyServer.policy`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pac.batch import Observation
from pac.config import DECODES, PRECISIONS, PACConfig
from pac.tasks import TASKS, TaskSpec, from_unit, proprio_features, to_unit

Policy = Callable[[Any, Any], np.ndarray]  # (dm_control env, TimeStep) -> action [N^A_task]


def _spec(task: str) -> TaskSpec:
    return TASKS.resolve(task)


# --- episodes -------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One rollout: T control steps of a task (observations include the final state)."""

    task: str
    observations: np.ndarray  # [T + 1, N^P_task] float32, flat proprioception
    actions: np.ndarray  # [T, N^A_task] float32, as sent to the environment
    rewards: np.ndarray  # [T] float32, r_t received after a_t
    discounts: np.ndarray  # [T] float32 (0 where the environment terminated)
    success: bool  # pac.envs.is_success(task, rewards)
    frames: np.ndarray | None = None  # [T + 1, H, W, 3] uint8 when recorded

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])


def run_episode(
    env: Any,
    policy: Policy,
    task: str,
    max_steps: int | None = None,
    record_frames: bool = False,
    frame_size: int = 80,
    camera: int = 0,
) -> Episode:
    """Reset `env` and step it with `policy` until the episode ends (or `max_steps` steps)."""
    from pac.envs import flatten_observation, is_success, render

    spec = _spec(task)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    time_step = env.reset()
    observations = [flatten_observation(time_step.observation)]
    frames = [render(env, frame_size, camera)] if record_frames else []
    actions, rewards, discounts = [], [], []
    while not time_step.last() and (max_steps is None or len(actions) < max_steps):
        action = np.asarray(policy(env, time_step), dtype=np.float32).reshape(-1)
        if action.shape != (spec.num_actions,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"{task}: the policy returned {action!r}; expected {spec.num_actions} finite values"
            )
        action = np.clip(action, spec.low, spec.high)  # float32 bounds: float32 actions
        time_step = env.step(action)
        actions.append(action)
        rewards.append(time_step.reward or 0.0)
        discounts.append(1.0 if time_step.discount is None else time_step.discount)
        observations.append(flatten_observation(time_step.observation))
        if record_frames:
            frames.append(render(env, frame_size, camera))
    rewards_np = np.asarray(rewards, dtype=np.float32)
    return Episode(
        task=task,
        observations=np.stack(observations).astype(np.float32),
        actions=np.stack(actions) if actions else np.zeros((0, spec.num_actions), np.float32),
        rewards=rewards_np,
        discounts=np.asarray(discounts, dtype=np.float32),
        success=is_success(task, rewards_np),
        frames=np.stack(frames) if record_frames else None,
    )


# --- scripted policies (the harness's references) -------------------------------------------------


def expert_policy(task: str, seed: int = 0) -> Policy:
    """The scripted expert behaviour policy of data generation (pac.envs.expert_action)."""
    from pac.envs import expert_action

    rng = np.random.default_rng(seed)
    return lambda env, time_step: expert_action(task, env, rng)


def behaviour_policy(
    task: str, quality: float, seed: int = 0, suboptimal: str = "random",
    noise: float | None = None,
) -> Policy:
    """The graded-quality behaviour policy of data generation (1 = expert ... 0 = `suboptimal`)."""
    from pac.envs import behaviour_action

    rng = np.random.default_rng(seed)
    return lambda env, time_step: behaviour_action(task, env, quality, rng, suboptimal, noise)


def random_policy(task: str, seed: int = 0) -> Policy:
    """I.i.d. uniform random actions over the action range (the 0% reference of Reed et al.)."""
    spec = _spec(task)
    rng = np.random.default_rng(seed)
    return lambda env, time_step: rng.uniform(
        spec.action_low, spec.action_high, spec.num_actions
    ).astype(np.float32)


# --- the network policy ---------------------------------------------------------------------------


@dataclass
class _TaskInput:
    spec: TaskSpec
    text: torch.Tensor  # [1, N_tau^L] int64
    text_mask: torch.Tensor  # [1, N_tau^L] bool
    proprio_mask: torch.Tensor  # [1, N^P] bool
    action_mask: torch.Tensor  # [1, N^A] bool


@dataclass
class PolicyServer:
    """A loaded PAC policy answering one observation at a time (batch 1, inference mode)."""

    model: torch.nn.Module
    cfg: PACConfig
    tokenizer: Any  # pac.data.tokenizer.TaskTokenizer
    decode: str = "argmax"
    num_candidates: int = 10
    precision: str = "fp32"  # or bf16: autocast (AMX-BF16 CPUs, GPUs); see EvalConfig.precision
    #: the checkpoint's task table (pac.checkpoint.task_table): instruction and action range of
    #: each task as trained; a task not in it is resolved from the registry (pac.tasks)
    task_table: dict[str, dict] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, init=False)  # seconds per act() call
    _tasks: dict[str, _TaskInput] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise ValueError(f"decode {self.decode!r} is not one of {', '.join(DECODES)}")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        self.model.eval()

    @classmethod
    def load(
        cls,
        checkpoint_dir: str | Path,
        decode: str = "argmax",
        num_candidates: int = 10,
        tokenizer_path: str | Path | None = None,
        precision: str = "fp32",
    ) -> PolicyServer:
        """Load an inference checkpoint (model.safetensors + config.yaml + tokenizer.model)."""
        from pac.checkpoint import load_inference_checkpoint, load_task_table
        from pac.data.tokenizer import TaskTokenizer

        if decode not in DECODES:  # fail before loading anything
            raise ValueError(f"decode {decode!r} is not one of {', '.join(DECODES)}")
        model, cfg, ckpt_tokenizer = load_inference_checkpoint(checkpoint_dir)
        tokenizer_path = tokenizer_path or ckpt_tokenizer
        if tokenizer_path is None:
            raise FileNotFoundError(
                f"{checkpoint_dir}: the checkpoint has no tokenizer.model; pass tokenizer_path"
            )
        tokenizer = TaskTokenizer.load(tokenizer_path, cfg.model.num_text_tokens)
        return cls(model, cfg, tokenizer, decode, num_candidates, precision,
                   load_task_table(checkpoint_dir))

    # -- input format -------------------------------------------------------------------------

    def _task_input(self, task: str) -> _TaskInput:
        """Per-task constant inputs (tokens, masks), built once and cached."""
        if task not in self._tasks:
            from pac.config import declared_tasks

            m = self.cfg.model
            spec = declared_tasks(self.cfg).get(task) or _spec(task)  # the policy's own params
            if task in self.task_table:  # as trained (the policy's action normalisation)
                row = self.task_table[task]
                spec = dataclasses.replace(spec, instruction=row["instruction"],
                                           action_low=tuple(row["action_low"]),
                                           action_high=tuple(row["action_high"]))
                if len(spec.action_low) != spec.num_actions:
                    raise ValueError(f"{task}: the checkpoint's action range has"
                                     f" {len(spec.action_low)} dimensions, the task"
                                     f" {spec.num_actions}")
            if spec.num_features > m.num_proprio or spec.num_actions > m.num_actions:
                raise ValueError(
                    f"{task} needs num_proprio>={spec.num_features}, num_actions>="
                    f"{spec.num_actions}; the model has {m.num_proprio}/{m.num_actions}"
                )
            ids, mask = self.tokenizer.encode(spec.instruction)
            text = torch.as_tensor(np.asarray(ids), dtype=torch.int64).reshape(1, -1)
            text_mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool).reshape(1, -1)
            if text.shape[1] != m.num_text_tokens:
                raise ValueError(
                    f"the tokenizer gives {text.shape[1]} tokens; the model expects"
                    f" num_text_tokens={m.num_text_tokens}"
                )
            self._tasks[task] = _TaskInput(
                spec=spec,
                text=text,
                text_mask=text_mask,
                proprio_mask=((torch.arange(m.num_proprio) < spec.num_features)
                              & m.proprio_input).unsqueeze(0),  # pixels only: all masked
                action_mask=(torch.arange(m.num_actions) < spec.num_actions).unsqueeze(0),
            )
        return self._tasks[task]

    def observation(
        self,
        proprio: np.ndarray | dict[str, Any],
        task: str,
        images: np.ndarray | None = None,
    ) -> Observation:
        """The padded batch-1 model input for one raw observation (the training format)."""
        from pac.envs import flatten_observation

        inp, m = self._task_input(task), self.cfg.model
        flat = flatten_observation(proprio) if isinstance(proprio, dict) else proprio
        flat = np.asarray(flat, dtype=np.float32).reshape(-1)
        if flat.shape[0] != inp.spec.num_proprio or not np.all(np.isfinite(flat)):
            raise ValueError(
                f"{task}: expected {inp.spec.num_proprio} finite proprio values, got {flat!r}"
            )
        features = proprio_features(inp.spec, flat)
        padded = torch.zeros(1, m.num_proprio)
        padded[0, : features.shape[0]] = torch.from_numpy(features)
        obs = Observation(padded, inp.proprio_mask, inp.text, inp.text_mask)
        if m.num_images:
            obs.images, obs.image_mask = self._images(images, m.num_images, m.image_size)
        elif images is not None:
            raise ValueError("images given but the model takes none (model.num_images=0)")
        # goal images (tau^V): none for these tasks; the model pads the absent modality
        return obs

    @staticmethod
    def _images(images: np.ndarray | None, slots: int, size: int) -> tuple[torch.Tensor, ...]:
        out = torch.zeros(1, slots, size, size, 3, dtype=torch.uint8)
        mask = torch.zeros(1, slots, dtype=torch.bool)
        if images is not None:
            images = np.asarray(images)
            if images.ndim == 3:
                images = images[None]
            if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
                raise ValueError(
                    f"images must be uint8 [N, {size}, {size}, 3], got {images.dtype}"
                    f" {list(images.shape)}"
                )
            if images.shape[0] > slots:
                raise ValueError(f"{images.shape[0]} images given; the model takes {slots}")
            out[0, : images.shape[0]] = torch.from_numpy(np.ascontiguousarray(images))
            mask[0, : images.shape[0]] = True
        return out, mask

    # -- acting -------------------------------------------------------------------------------

    @torch.inference_mode()
    def act(
        self,
        proprio: np.ndarray | dict[str, Any],
        task: str,
        images: np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """One action (float32 [N^A_task], in the task's action range: the robot's units) for
        one observation."""
        from pac.model.distributions import mean_action, mode, sample

        start = time.perf_counter()
        inp = self._task_input(task)
        device = next(self.model.parameters()).device  # inputs follow the model (CPU or CUDA)
        obs = self.observation(proprio, task, images).to(device)
        action_mask = inp.action_mask.to(device)
        with self._autocast():
            z = self.model.encode(obs)  # z_M, computed once
            logits = self.model.policy_logits(z).float()
        if self.decode == "argmax":
            action = mode(logits, action_mask)
        elif self.decode == "mean":
            action = mean_action(logits, action_mask)
        elif self.decode == "sample":
            action = sample(logits, action_mask, 1, generator=generator)[:, 0]
        else:
            candidates = sample(logits, action_mask, self.num_candidates, generator=generator)
            q = self._expected_q(z, candidates, action_mask)
            action = candidates[0, q[0].argmax()].unsqueeze(0)
        a = action[0, : inp.spec.num_actions].float().cpu().numpy()
        # bins live in [-1, 1]; map to the task's action range (identity for dm_control tasks)
        a = from_unit(a, inp.spec.low, inp.spec.high)
        self.latencies.append(time.perf_counter() - start)
        return a.astype(np.float32)

    def _expected_q(
        self, z: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor
    ) -> torch.Tensor:
        """E[Q(s, a)] [B, K] of K actions [B, K, N^A] (bin space [-1, 1]) from the cached z_M."""
        from pac.model.distributions import expected_value

        with self._autocast():
            q_logits = self.model.q_logits(z, actions, action_mask)  # [B, K, N_Q]
        return expected_value(q_logits.float(), self.cfg.loss.value_min, self.cfg.loss.value_max)

    @torch.inference_mode()
    def q_values(
        self,
        proprio: np.ndarray | dict[str, Any],
        task: str,
        actions: np.ndarray,
        num_samples: int = 0,
        images: np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """E[Q(s, a)] of given actions and of `num_samples` draws a ~ pi(.|s), one encoder pass.

        `actions` [K, N^A_task] are in the task's action range (as :meth:`act` returns them);
        they are mapped to the bins' [-1, 1] and padded to the model's N^A. Returns float64
        (Q of `actions` [K], Q of the policy samples [num_samples]): the Q decoding of
        ``q_rerank``, for critic diagnostics (benchmarks/probe_critic.py).
        """
        from pac.model.distributions import sample

        inp, m = self._task_input(task), self.cfg.model
        given = np.asarray(actions, dtype=np.float32)
        if given.ndim == 1:
            given = given[None]
        if given.ndim != 2 or given.shape[1] != inp.spec.num_actions:
            raise ValueError(
                f"{task}: actions must be [K, {inp.spec.num_actions}], got {list(given.shape)}"
            )
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        unit = to_unit(given, inp.spec.low, inp.spec.high)  # inverse of act's range mapping
        device = next(self.model.parameters()).device
        padded = torch.zeros(1, given.shape[0], m.num_actions, device=device)
        padded[0, :, : given.shape[1]] = torch.from_numpy(unit.astype(np.float32)).to(device)
        obs = self.observation(proprio, task, images).to(device)
        action_mask = inp.action_mask.to(device)
        with self._autocast():
            z = self.model.encode(obs)
        candidates = padded
        if num_samples:
            with self._autocast():
                logits = self.model.policy_logits(z).float()
            drawn = sample(logits, action_mask, num_samples, generator=generator)
            candidates = torch.cat([padded, drawn.to(padded.dtype)], dim=1)
        q = self._expected_q(z, candidates, action_mask)[0].double().cpu().numpy()
        return q[: given.shape[0]], q[given.shape[0] :]

    def _autocast(self) -> torch.autocast:
        """bf16 autocast on the model's device when precision is bf16 (a no-op for fp32)."""
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def policy(self, task: str, seed: int = 0, cameras: int | None = None) -> Policy:
        """A ``policy(env, time_step)`` for :func:`run_episode`; renders cameras if the model
        takes images. `seed` seeds the sampling of ``sample`` / ``q_rerank`` decoding."""
        from pac.envs import render

        device = next(self.model.parameters()).device
        generator = torch.Generator(device).manual_seed(int(seed))
        m = self.cfg.model
        n_cams = min(m.num_images, self.cfg.data.cameras if cameras is None else cameras)

        def act(env: Any, time_step: Any) -> np.ndarray:
            images = None
            if n_cams:
                images = np.stack([render(env, m.image_size, c) for c in range(n_cams)])
            return self.act(time_step.observation, task, images, generator)

        return act

    @property
    def inference_hz(self) -> float:
        """Policy steps per second at batch 1 (1 / mean latency of :meth:`act`)."""
        if not self.latencies:
            return float("nan")
        return len(self.latencies) / float(np.sum(self.latencies))

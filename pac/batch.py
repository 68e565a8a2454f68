"""The padded multi-modal input format (App. B.2) shared by data, model, losses and serving.

All modalities are padded to fixed sizes and carry a mask (True = valid): padded entries must
never influence the model's outputs. Shapes use B = batch, T = trajectory length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Self

import torch


class _Tensors:
    """Moving and slicing every tensor field (None fields stay None) along the batch axis."""

    proprio: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.proprio.shape[0]

    def to(self, device: torch.device | str) -> Self:
        return _map(self, lambda t: t.to(device))

    def index(self, idx: torch.Tensor | slice) -> Self:
        """A sub-batch (e.g. one micro-batch of gradient accumulation)."""
        return _map(self, lambda t: t[idx])


@dataclass
class Observation(_Tensors):
    """One time step of model input for a batch of B states (Algorithm 1 inputs)."""

    proprio: torch.Tensor  # [B, N^P] float32
    proprio_mask: torch.Tensor  # [B, N^P] bool
    text: torch.Tensor  # [B, N_tau^L] int64 SentencePiece ids
    text_mask: torch.Tensor  # [B, N_tau^L] bool
    images: torch.Tensor | None = None  # [B, N^V, H, W, C] uint8
    image_mask: torch.Tensor | None = None  # [B, N^V] bool
    goal_images: torch.Tensor | None = None  # [B, N_tau^V, H, W, C] uint8
    goal_mask: torch.Tensor | None = None  # [B, N_tau^V] bool


@dataclass
class Batch(_Tensors):
    """A batch of B trajectories of length T sampled from the episode store (App. C.4)."""

    proprio: torch.Tensor  # [B, T, N^P] float32
    proprio_mask: torch.Tensor  # [B, N^P] bool (fixed per task)
    text: torch.Tensor  # [B, N_tau^L] int64
    text_mask: torch.Tensor  # [B, N_tau^L] bool
    actions: torch.Tensor  # [B, T, N^A] float32 in the task's action range
    action_mask: torch.Tensor  # [B, N^A] bool (fixed per task)
    rewards: torch.Tensor  # [B, T] float32, r_t received after a_t
    discounts: torch.Tensor  # [B, T] float32, 0 where the episode terminates after step t
    step_mask: torch.Tensor  # [B, T] bool, valid steps (False = padding past an episode end)
    alpha: torch.Tensor  # [B] float32, per-sample alpha (alpha-PAC: per dataset group)
    beta: torch.Tensor  # [B] float32, per-sample beta
    group: torch.Tensor  # [B] int64, dataset group index
    images: torch.Tensor | None = None  # [B, T, N^V, H, W, C] uint8
    image_mask: torch.Tensor | None = None  # [B, N^V] bool
    goal_images: torch.Tensor | None = None  # [B, N_tau^V, H, W, C] uint8
    goal_mask: torch.Tensor | None = None  # [B, N_tau^V] bool
    #: [B, T] bool, s_t exists: step_mask plus the final observation o_L of a truncated episode
    #: just past its last step (None = step_mask)
    observed: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.proprio.shape[1]

    @property
    def has_observation(self) -> torch.Tensor:
        """[B, T] bool: s_t is a real observation (a transition, or a final observation)."""
        return self.step_mask if self.observed is None else self.observed

    def observation(self, t: int | slice) -> Observation:
        """Observation(s) at step(s) `t`; a slice of steps is flattened into the batch axis."""
        steps = self.proprio[:, t].shape[1] if isinstance(t, slice) else 1

        def per_step(x: torch.Tensor) -> torch.Tensor:
            x = x[:, t]
            return x.reshape(-1, *x.shape[2:]) if isinstance(t, slice) else x

        def repeat(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat_interleave(steps, dim=0)

        return Observation(
            proprio=per_step(self.proprio),
            proprio_mask=repeat(self.proprio_mask),
            text=repeat(self.text),
            text_mask=repeat(self.text_mask),
            images=None if self.images is None else per_step(self.images),
            image_mask=repeat(self.image_mask),
            goal_images=repeat(self.goal_images),
            goal_mask=repeat(self.goal_mask),
        )


def _map(obj, fn):
    return replace(
        obj,
        **{
            f.name: fn(getattr(obj, f.name))
            for f in fields(obj)
            if getattr(obj, f.name) is not None
        },
    )

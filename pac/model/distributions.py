"""The policy and value distributions (App. A.2): independent categoricals over fixed bins.

The policy is a categorical over N_B bins per action dimension spanning the normalised action
range [-1, 1]; padded action dimensions (mask False) are excluded from log-probabilities and are
zero in sampled actions. Q and V are categoricals over N_Q bins on [v_min, v_max]:
Q_theta(s, a) = E_{p_theta} q.
"""

from __future__ import annotations

import torch


def bin_centers(
    n_bins: int, low: float = -1.0, high: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The N fixed support points, evenly spaced from `low` to `high` (both included)."""
    return torch.linspace(low, high, n_bins, device=device)


def actions_to_bins(actions: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Nearest bin index (int64) of actions in [-1, 1]; values outside clip to the edge bins."""
    index = torch.round((actions.float().clamp(-1.0, 1.0) + 1.0) * 0.5 * (n_bins - 1))
    return index.long()


def log_prob(
    logits: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor
) -> torch.Tensor:
    """log pi(a | s) summed over valid action dimensions.

    logits [B, N^A, N_B]; actions [B, N^A] -> [B], or S actions per state [B, S, N^A] -> [B, S].
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)  # [B, N^A, N_B]
    index = actions_to_bins(actions, logits.shape[-1])
    if actions.dim() == 3:  # [B, S, N^A]: gather from the shared per-state logits
        log_p = log_p.unsqueeze(1).expand(-1, actions.shape[1], -1, -1)
        mask = action_mask.unsqueeze(1)
    else:
        mask = action_mask
    per_dim = log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, per_dim, torch.zeros_like(per_dim)).sum(-1)


def sample(
    logits: torch.Tensor,
    action_mask: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `num_samples` actions per state: [B, N^A, N_B] -> [B, S, N^A] bin centres."""
    b, n_a, n_bins = logits.shape
    probs = torch.softmax(logits.float(), dim=-1).reshape(b * n_a, n_bins)
    index = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    centers = bin_centers(n_bins, device=logits.device)
    actions = centers[index].reshape(b, n_a, num_samples).transpose(1, 2)
    return actions * action_mask.unsqueeze(1)


def mode(logits: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """The most likely bin per dimension: [B, N^A, N_B] -> [B, N^A] (padded dims zero)."""
    centers = bin_centers(logits.shape[-1], device=logits.device)
    return centers[logits.argmax(-1)] * action_mask


def mean_action(logits: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """The expected bin centre per dimension, E_pi[a_i]: [B, N^A, N_B] -> [B, N^A].

    Unlike the mode it moves continuously with the probabilities: from data whose actions were
    clipped to +-1 the edge bins collect the mass of everything beyond, and their argmax gives
    bang-bang actions even when most of the mass lies inside the range."""
    centers = bin_centers(logits.shape[-1], device=logits.device)
    return (torch.softmax(logits.float(), dim=-1) * centers).sum(-1) * action_mask


def entropy(logits: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Entropy of the factorised policy, summed over valid dimensions: [B, N^A, N_B] -> [B]."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    per_dim = -(log_p.exp() * log_p).sum(-1)
    return torch.where(action_mask, per_dim, torch.zeros_like(per_dim)).sum(-1)


def expected_value(logits: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """E_p[q] of a categorical over N_Q evenly spaced values on [vmin, vmax]: [..., N_Q] -> [...]"""
    support = bin_centers(logits.shape[-1], vmin, vmax, device=logits.device)
    return (torch.softmax(logits.float(), dim=-1) * support).sum(-1)

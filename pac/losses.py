"""The offline KL-regularised actor-critic losses (§3.2, App. A): eq. 11 (PAC+Q) and eq. 14 (PAC+V).

A batch holds B trajectories of length T; transitions are (s_t, a_t, r_t, s_{t+1}) for
t = 0..T-2 with s_{t+1} the next step of the same trajectory. Eq. 11, term by term, per transition:

    (1 - alpha) * -sum_k w_k log pi_theta(a'_k | s_t)     a'_k ~ pi_theta'(.|s_t), k = 1..N,
                                                         w = softmax_k(Q_theta'(s_t, a'_k) / eta)
  +      alpha  * -log pi_theta(a_t | s_t)                behaviour cloning on dataset actions
  +      beta   * -sum_q Gamma_theta'(q) log p_theta(q | s_t, a_t)

where Gamma_theta' (eq. 9) projects r_t + gamma * d_t * q' onto the fixed support, q' drawn from
the target Q distribution at s_{t+1} under actions from the target policy pi_theta'. The weights
are exp(Q/eta - K_Q) with K_Q = log E_k exp(Q/eta): a softmax over the N samples (log-sum-exp).
Variants (App. C.5): pac, bc (alpha = 1, beta = 0), bc_q (alpha = 1: BC plus a Q-function that
never reaches the policy), filtered_bc (bc on the successful episodes only), alpha_pac
(per-sample alpha, beta from the batch's dataset group), pac_v (eq. 14, below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pac.batch import Batch
from pac.config import LossConfig
from pac.model.distributions import (
    bin_centers,
    entropy,
    expected_value,
    log_prob,
    sample,
)


@dataclass
class LossOutput:
    """The total loss and each term (means over valid transitions), plus diagnostics.

    The diagnostics stay on the device as one detached vector (`metric_values`, named by
    `metric_names`): nothing in the loss waits for the device, and the trainer reads them once
    per logging window. `metrics` is the same as a dict of floats (one sync when read).
    """

    total: torch.Tensor
    policy_improvement: torch.Tensor  # KL to pi_imp (advantage-weighted for PAC+V)
    bc: torch.Tensor  # -log pi_theta(a_t | s_t)
    q: torch.Tensor  # cross-entropy of p_theta(q | s_t, a_t) against Gamma_theta' (0 for PAC+V)
    value: torch.Tensor  # PAC+V: cross-entropy of p_theta(v | s_t) against its target (else 0)
    alpha_mean: torch.Tensor
    metric_names: tuple[str, ...]
    metric_values: torch.Tensor  # [len(metric_names)] float32, detached

    @property
    def metrics(self) -> dict[str, float]:
        """The diagnostics as floats (one device sync)."""
        return dict(zip(self.metric_names, self.metric_values.tolist(), strict=True))

    def metric_tensors(self) -> dict[str, torch.Tensor]:
        """The diagnostics as 0-d device tensors (views of `metric_values`, no sync)."""
        return dict(zip(self.metric_names, self.metric_values.unbind(), strict=True))


def categorical_projection(
    probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor, vmin: float, vmax: float
) -> torch.Tensor:
    """Gamma (eq. 9): project the distribution of r + discount * q', q' ~ probs, onto the support.

    probs [N, n] over n evenly spaced values on [vmin, vmax]; rewards, discounts [N] (discount =
    gamma * d_t, 0 at episode ends). Each shifted atom is clipped to [vmin, vmax] and split
    between its two neighbouring bins in proportion to closeness (Bellemare et al., 2017): mass
    is conserved and, for in-range targets, the mean is exactly r + discount * E[q']. (The
    indicator of eq. 9 is the nearest-bin version of this split.)
    """
    n = probs.shape[-1]
    support = bin_centers(n, vmin, vmax, device=probs.device)
    shifted = (rewards[:, None] + discounts[:, None] * support).clamp(vmin, vmax)  # [N, n]
    spacing = (vmax - vmin) / (n - 1)
    # hat = max(0, 1 - |shifted - support| / spacing), [N, j, i]: the same operations in the
    # same order as the out-of-place expression (1 - x is -x + 1 exactly), but in place on one
    # buffer: the O(N n^2) tensor is the loss's largest work outside the networks (6.0 -> 2.5 ms
    # at N = 128, n = 101; benchmarks/bench_loss.py, BENCHMARKS.md).
    hat = (shifted[:, :, None] - support).abs_().div_(spacing).neg_().add_(1.0).clamp_(min=0.0)
    return torch.bmm(probs.float()[:, None, :], hat)[:, 0]


def td_valid(batch: Batch) -> torch.Tensor:
    """[B, T-1] bool: transitions with a TD target. A transition (s_t, a_t, r_t) is valid and
    either terminates (discount 0: the target is r_t alone) or has its next observation s_{t+1}
    in the window (the next step, or the final observation of a truncated episode)."""
    valid = batch.step_mask[:, :-1]
    return valid & (batch.has_observation[:, 1:] | (batch.discounts[:, :-1] == 0))


def only_bootstrapped(
    next_probs: torch.Tensor, q_valid: torch.Tensor, discounts: torch.Tensor
) -> torch.Tensor:
    """next_probs [B, n, N_Q] where the target bootstraps, a fixed one-hot elsewhere: at a
    terminal step (discount 0) the target is r alone, and the distribution at the padded step
    after it must not enter even through rounding (its probabilities sum to 1 only up to 1e-7)."""
    fixed = torch.zeros_like(next_probs)
    fixed[..., 0] = 1.0
    keep = (q_valid & (discounts != 0))[..., None]
    return torch.where(keep, next_probs, fixed)


def relative_eta(q_values: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale` x the mean over valid states of the std of Q over the N samples (last axis):
    a temperature that follows the scale of Q differences (0-d; floored at 1e-6)."""
    std = q_values.float().std(-1, correction=0)
    mean = torch.where(valid, std, torch.zeros_like(std)).sum() / valid.sum().clamp(min=1)
    return (scale * mean).clamp(min=1e-6)


def improvement_weights(q_values: torch.Tensor, eta: float | torch.Tensor) -> torch.Tensor:
    """Weights of the N samples (last axis) in eq. 11: (1/N) exp(Q_k / eta - K_Q) with
    K_Q = log (1/N) sum_k exp(Q_k / eta), the 1/N being the sample mean over a' ~ pi_theta'.
    That is softmax_k(Q_k / eta): sums to one, stable for any eta (log-sum-exp)."""
    return torch.softmax(q_values.float() / eta, dim=-1)


def _scheduled_alpha(loss_cfg: LossConfig, step: int) -> float | None:
    """alpha from `loss.alpha_schedule` ([[from_update, alpha], ...], §4.3), if one applies."""
    active = [alpha for start, alpha in sorted(loss_cfg.alpha_schedule) if step >= start]
    return active[-1] if active else None


def effective_alpha(loss_cfg: LossConfig, step: int, batch_alpha: torch.Tensor) -> torch.Tensor:
    """Per-sample alpha [B]: the schedule's value once it applies, else the dataset group's
    alpha (alpha-PAC, App. C.5), else `loss.alpha`."""
    scheduled = _scheduled_alpha(loss_cfg, step)
    if scheduled is not None:
        return torch.full_like(batch_alpha, scheduled)
    if loss_cfg.variant == "alpha_pac":
        return batch_alpha.float()
    return torch.full_like(batch_alpha, loss_cfg.alpha)


def compute_loss(
    model: nn.Module,
    target_model: nn.Module | None,
    batch: Batch,
    loss_cfg: LossConfig,
    step: int = 0,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """Eq. 11 (or eq. 14 for ``pac_v``) on the T-1 transitions of each trajectory in `batch`."""
    if batch.length < 2:
        raise ValueError(f"a batch needs trajectories of length >= 2, got T={batch.length}")
    if loss_cfg.variant == "pac_v":
        return _pac_v_loss(model, batch, loss_cfg, step)
    b, t_len, n_act = batch.batch_size, batch.length, batch.actions.shape[-1]
    n = t_len - 1
    valid = batch.step_mask[:, :-1]  # [B, n]
    alpha = effective_alpha(loss_cfg, step, batch.alpha)[:, None].expand(b, n)
    per_sample_beta = loss_cfg.variant == "alpha_pac"
    beta = (batch.beta.float() if per_sample_beta else torch.full_like(batch.alpha, loss_cfg.beta))
    beta = beta[:, None].expand(b, n)
    alpha_value = _scheduled_alpha(loss_cfg, step)
    if alpha_value is None and not per_sample_beta:
        alpha_value = loss_cfg.alpha
    need_pi = alpha_value is None or alpha_value < 1.0  # zero-weight terms are skipped
    need_q = per_sample_beta or loss_cfg.beta > 0.0
    mask_t = batch.action_mask.repeat_interleave(n, dim=0)  # [B*n, N^A]

    # Online network: one encoder pass on s_t, policy logits and Q of the dataset action.
    z = model.encode(batch.observation(slice(0, n)))
    logits = model.policy_logits(z)  # [B*n, N^A, N_B]
    actions = batch.actions[:, :-1].reshape(b * n, n_act)
    bc = -log_prob(logits, actions, mask_t).view(b, n)

    zeros = torch.zeros(b, n, device=bc.device)
    pi_term, q_term = zeros, zeros
    q_valid = td_valid(batch)
    diag: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (value, where valid)
    if need_pi or need_q:
        if target_model is None:
            raise ValueError(f"loss.variant={loss_cfg.variant} needs a target network")
        with torch.no_grad():  # target network theta': one pass over all T steps
            n_samples = loss_cfg.num_action_samples
            mask_all = batch.action_mask.repeat_interleave(t_len, dim=0)
            z_target = target_model.encode(batch.observation(slice(0, t_len)))
            sampled = sample(target_model.policy_logits(z_target), mask_all, n_samples, generator)
            q_logits_target = target_model.q_logits(z_target, sampled, mask_all).float()
            q_sampled = expected_value(q_logits_target, loss_cfg.value_min, loss_cfg.value_max)
            q_sampled = q_sampled.view(b, t_len, n_samples)
        if need_pi:  # KL[pi_imp, pi_theta] with w = exp(Q_theta'/eta - K_Q)
            eta = loss_cfg.eta
            if loss_cfg.eta_relative > 0:  # eta from the batch's scale of Q differences
                eta = relative_eta(q_sampled[:, :-1], valid, loss_cfg.eta_relative)
                diag["eta"] = (eta.expand(b, n), valid)
            weights = improvement_weights(q_sampled[:, :-1], eta)  # [B, n, N]
            a_prime = sampled.view(b, t_len, n_samples, n_act)[:, :-1].reshape(b * n, n_samples, -1)
            log_pi = log_prob(logits, a_prime, mask_t).view(b, n, n_samples)
            pi_term = -(weights * log_pi).sum(-1)
            w_entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)
            diag["weight_entropy"] = (w_entropy, valid)
            diag["weight_max"] = (weights.max(-1).values, valid)
            # is the critic action-sensitive? the spread of Q_theta' over the N samples against
            # eta, and the effective sample size 1 / sum w^2 (N: uniform weights, 1: one sample)
            q_now = q_sampled[:, :-1]
            diag["q_spread"] = (q_now.max(-1).values - q_now.min(-1).values, valid)
            diag["weight_ess"] = (1.0 / (weights**2).sum(-1), valid)
            diag["sampled_q"] = (q_sampled[:, :-1].mean(-1), valid)
        if need_q:  # beta * KL[Gamma_theta', p_theta] (eq. 9-10)
            with torch.no_grad():
                next_probs = torch.softmax(q_logits_target, dim=-1)
                next_probs = next_probs.view(b, t_len, n_samples, -1)[:, 1:].mean(2)
                next_probs = only_bootstrapped(next_probs, q_valid, batch.discounts[:, :-1])
                discount = loss_cfg.gamma * batch.discounts[:, :-1].float()
                target_dist = categorical_projection(
                    next_probs.reshape(b * n, -1),
                    batch.rewards[:, :-1].reshape(-1).float(),
                    discount.reshape(-1),
                    loss_cfg.value_min,
                    loss_cfg.value_max,
                )
            z_q = z if loss_cfg.critic_encoder_grad else z.detach()
            q_logits = model.q_logits(z_q, actions[:, None], mask_t)[:, 0].float()  # [B*n, N_Q]
            ce = -(target_dist * torch.log_softmax(q_logits, dim=-1)).sum(-1)
            q_term = torch.where(q_valid, ce.view(b, n), zeros)
            support = bin_centers(q_logits.shape[-1], loss_cfg.value_min, loss_cfg.value_max,
                                  device=q_logits.device)
            mean_q = (torch.softmax(q_logits.detach(), -1) * support).sum(-1).view(b, n)
            diag["mean_q"] = (mean_q, q_valid)
            diag["target_q"] = ((target_dist * support).sum(-1).view(b, n), q_valid)

    per_transition = (1 - alpha) * pi_term + alpha * bc + beta * q_term
    diag["policy_entropy"] = (entropy(logits.detach(), mask_t).view(b, n), valid)
    return _reduce(per_transition, pi_term, bc, q_term, zeros, alpha, beta, valid, q_valid, diag)


def importance_weights(log_pi: torch.Tensor, action_dims: torch.Tensor, n_bins: int,
                       where: torch.Tensor) -> torch.Tensor:
    """Eq. 13's rho = pi_theta(a_t|s_t) / b(a_t|s_t), b = N_B^-N^A (uniform over the action bins,
    the paper's first option for b), scaled to mean 1 over the transitions in `where` (0 elsewhere).

    log_pi, action_dims (N^A of each transition's task), where: [B, n]. The scale is a choice the
    paper leaves open ("b constant ... can be dropped"): a constant factor leaves the minimiser of
    the weighted cross-entropy unchanged, and mean 1 keeps beta on the scale of eq. 11's Q term
    (pi_theta(a_t|s_t) alone is a product of N^A probabilities; N_B^{N^A} is 1e12 at 6 x 101).
    No truncation: min(1, rho) would weigh every likely action alike and pull V towards the
    behaviour policy's value (tests/test_losses_targets.py). No gradient (a weight, like theta').
    """
    log_rho = log_pi.float() + action_dims.float() * math.log(n_bins)
    log_rho = torch.where(where, log_rho, torch.full_like(log_rho, -math.inf))
    rho = torch.softmax(log_rho.flatten(), dim=0).view_as(log_rho) * where.sum()
    return torch.where(where, rho, torch.zeros_like(rho)).detach()


#: Largest advantage weight exp(A / eta) of PAC+V. Eq. 14 drops the normaliser of the
#: exponentiated advantage "as is common (Peng et al., 2019)"; that reference clips the weights at
#: 20, and so does this: at the paper's eta = 1e-4 an unclipped weight overflows for A > 0.009.
MAX_ADVANTAGE_WEIGHT = 20.0


def _pac_v_loss(model: nn.Module, batch: Batch, loss_cfg: LossConfig, step: int) -> LossOutput:
    """PAC+V (App. A.3, eq. 14): advantage-weighted BC on dataset actions + a distributional V.

        -exp(A_t / eta) log pi(a_t | s_t)  +  beta rho_t CE(Gamma'(v | s_t, a_t), p(v | s_t))

    with A_t = r_t + gamma d_t V_theta'(s_{t+1}) - V_theta'(s_t). No target network: theta' are
    the current parameters, detached. As eq. 14: the weights are not normalised (only clipped at
    :data:`MAX_ADVANTAGE_WEIGHT`). rho_t = pi_theta(a_t|s_t) / b(a_t|s_t) is eq. 13's importance
    weight with the paper's first option for b, a constant: uniform over the N_B^{N^A} action bins
    (see :func:`importance_weights`). The weighted cross-entropy's minimiser in a state is
    E_b[rho Gamma'] / E_b[rho], so V's fixed point is the value of pi_theta when the data's
    actions are uniform over the bins, and the value of the policy proportional to b pi_theta
    otherwise (the paper's constant-b assumption; tests/test_losses_targets.py). The paper sets
    alpha = 0, eta = 1e-4 for PAC+V (params/presets/pac_v.yaml); an alpha > 0 adds eq. 11's BC term.
    """
    b, t_len, n_act = batch.batch_size, batch.length, batch.actions.shape[-1]
    n = t_len - 1
    valid = batch.step_mask[:, :-1]
    q_valid = td_valid(batch)
    alpha = effective_alpha(loss_cfg, step, batch.alpha)[:, None].expand(b, n)
    beta = torch.full((b, n), loss_cfg.beta, device=alpha.device)
    mask_t = batch.action_mask.repeat_interleave(n, dim=0)

    z_all = model.encode(batch.observation(slice(0, t_len)))  # s_0 .. s_{T-1} in one pass
    v_logits = model.value_logits(z_all).float().view(b, t_len, -1)
    z = z_all.view(b, t_len, *z_all.shape[1:])[:, :-1].reshape(b * n, *z_all.shape[1:])
    logits = model.policy_logits(z)
    bc = -log_prob(logits, batch.actions[:, :-1].reshape(b * n, n_act), mask_t).view(b, n)

    with torch.no_grad():
        v_probs = torch.softmax(v_logits.detach(), dim=-1)
        support = bin_centers(v_probs.shape[-1], loss_cfg.value_min, loss_cfg.value_max,
                              device=v_probs.device)
        values = (v_probs * support).sum(-1)  # [B, T]
        discount = loss_cfg.gamma * batch.discounts[:, :-1].float()
        rewards = batch.rewards[:, :-1].float()
        advantage = rewards + discount * values[:, 1:] - values[:, :-1]
        advantage = torch.where(q_valid, advantage, torch.zeros_like(advantage))
        log_w = (advantage / loss_cfg.eta).clamp(max=math.log(MAX_ADVANTAGE_WEIGHT))
        weights = torch.where(q_valid, log_w.exp(), torch.zeros_like(log_w))
        rho = importance_weights(-bc.detach(), mask_t.sum(-1).view(b, n), logits.shape[-1],
                                 q_valid)
        target_dist = categorical_projection(
            only_bootstrapped(v_probs[:, 1:], q_valid, batch.discounts[:, :-1]).reshape(b * n, -1),
            rewards.reshape(-1), discount.reshape(-1),
            loss_cfg.value_min, loss_cfg.value_max,
        )
    zeros = torch.zeros(b, n, device=bc.device)
    pi_term = torch.where(q_valid, weights * bc, zeros)
    ce = -(target_dist * torch.log_softmax(v_logits[:, :-1].reshape(b * n, -1), dim=-1)).sum(-1)
    v_term = torch.where(q_valid, rho * ce.view(b, n), zeros)
    per_transition = (1 - alpha) * pi_term + alpha * bc + beta * v_term
    diag = {
        "mean_v": (values[:, :-1], valid),
        "mean_advantage": (advantage, q_valid),
        "weight_max": (weights.max().expand(b, n), valid),
        # the effective share of transitions V learns from: (sum rho)^2 / (n sum rho^2)
        "importance_ess": ((q_valid.sum() / (rho**2).sum().clamp_min(1e-12)).expand(b, n), q_valid),
        "policy_entropy": (entropy(logits.detach(), mask_t).view(b, n), valid),
    }
    return _reduce(per_transition, pi_term, bc, zeros, v_term, alpha, beta, valid, q_valid, diag)


def _reduce(
    per_transition: torch.Tensor,
    pi_term: torch.Tensor,
    bc: torch.Tensor,
    q_term: torch.Tensor,
    v_term: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    valid: torch.Tensor,
    q_valid: torch.Tensor,
    diag: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> LossOutput:
    """Means over valid transitions (padding never enters: torch.where, not multiplication).

    Every metric is a mean over `valid` or `q_valid`: each mask's count is taken once."""
    counts: dict[int, torch.Tensor] = {}

    def mean(x: torch.Tensor, mask: torch.Tensor = valid) -> torch.Tensor:
        if id(mask) not in counts:
            counts[id(mask)] = mask.sum().clamp(min=1)
        return torch.where(mask, x, torch.zeros_like(x)).sum() / counts[id(mask)]

    scalars = {
        "loss": mean(per_transition), "policy_improvement": mean(pi_term), "bc": mean(bc),
        "q_loss": mean(q_term, q_valid), "value_loss": mean(v_term, q_valid),
        "alpha_mean": mean(alpha), "beta_mean": mean(beta),
        "valid_transitions": valid.sum().float(),
    }
    scalars |= {k: mean(v.float(), where) for k, (v, where) in diag.items()}
    return LossOutput(
        total=scalars["loss"],
        policy_improvement=scalars["policy_improvement"],
        bc=scalars["bc"],
        q=scalars["q_loss"],
        value=scalars["value_loss"],
        alpha_mean=scalars["alpha_mean"],
        metric_names=tuple(scalars),
        metric_values=torch.stack([v.detach().float() for v in scalars.values()]),
    )

"""Eq. 11's two optional knobs: a temperature that follows the batch's Q spread, and a critic
whose gradient stops before the shared encoder (pac.losses, LossConfig)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from pac.config import ConfigError, LossConfig, ModelConfig, load_config
from pac.losses import compute_loss, relative_eta
from pac.model import PerceiverActorCritic
from tests.test_losses_targets import batch_of

CFG = ModelConfig(
    d_z=32, num_blocks=1, widening=1, num_heads=2, d_i=16, num_proprio=2, num_actions=1,
    num_text_tokens=1, vocab_size=2, num_latents=4, num_action_bins=101, num_value_bins=101,
)


def test_relative_eta_is_scale_times_the_mean_population_std_over_valid_states():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 5)) * np.array([1.0, 2.0, 4.0])[None, :, None]
    valid = np.array([[True, True, False], [True, False, True]])
    expected = 0.5 * np.mean([q[b, t].std() for b in range(2) for t in range(3) if valid[b, t]])
    got = relative_eta(torch.tensor(q), torch.tensor(valid), 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # identical samples everywhere: the floor, never a division by zero
    assert relative_eta(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), 1.0) == 1e-6


def _encoder_grads(loss_cfg: LossConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(encoder grads, Q decoder grads) of one loss on a fixed batch, seeded networks."""
    torch.manual_seed(0)
    model = PerceiverActorCritic(CFG)
    for p in model.q_decoder.head.parameters():  # the zero-initialised head passes no gradient
        torch.nn.init.normal_(p, std=1.0)
    target = copy.deepcopy(model).requires_grad_(False)
    batch = batch_of([0.7, 0.3, -0.2], [0.4, 1.0, 0.0], [1.0, 1.0, 1.0], [True, True, True])
    out = compute_loss(model, target, batch, loss_cfg, 0, torch.Generator().manual_seed(0))
    out.total.backward()
    enc = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
           for p in model.perceiver.parameters()]
    q = [p.grad.clone() for p in model.q_decoder.parameters() if p.grad is not None]
    return enc, q


def test_a_detached_critic_leaves_the_encoder_to_the_policy_terms():
    bc_q = LossConfig(variant="bc_q", alpha=1.0, beta=5.0, gamma=0.9, num_action_samples=4,
                      value_min=0.0, value_max=20.0)
    bc_only, _ = _encoder_grads(dataclasses.replace(bc_q, beta=0.0))
    detached, q_grads = _encoder_grads(dataclasses.replace(bc_q, critic_encoder_grad=False))
    shared, _ = _encoder_grads(bc_q)
    # the encoder sees exactly the BC gradient, while the critic itself still learns
    for a, b in zip(detached, bc_only, strict=True):
        torch.testing.assert_close(a, b)
    assert any(g.abs().max() > 0 for g in q_grads)
    # with the gradient shared (eq. 11 as written) the critic's term reaches the encoder
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(shared, bc_only, strict=True))


def test_the_relative_temperature_is_reported_and_the_knobs_are_validated():
    loss_cfg = LossConfig(variant="pac", alpha=0.5, beta=1.0, eta_relative=2.0, gamma=0.9,
                          num_action_samples=4, value_min=0.0, value_max=20.0)
    torch.manual_seed(0)
    model = PerceiverActorCritic(CFG)
    batch = batch_of([0.7, 0.3], [0.4, 0.0], [1.0, 1.0], [True, True])
    out = compute_loss(model, copy.deepcopy(model), batch, loss_cfg, 0,
                       torch.Generator().manual_seed(0))
    assert out.metrics["eta"] > 0
    with pytest.raises(ConfigError, match="loss.eta_relative=-1.0 is outside"):
        load_config(overrides=["loss.eta_relative=-1.0"])
    cfg = load_config()
    assert cfg.loss.critic_encoder_grad is True and cfg.loss.eta_relative == 0.0

"""The offline actor-critic losses (App. A): projection (eq. 9), eq. 11 terms, variants, bandit."""

import copy
import dataclasses
import math

import pytest
import torch

from pac.batch import Batch
from pac.config import LossConfig, ModelConfig
from pac.losses import (
    categorical_projection,
    compute_loss,
    effective_alpha,
    improvement_weights,
)
from pac.model import PerceiverActorCritic
from pac.model.distributions import expected_value, log_prob, mode
from pac.model.examples import random_batch

SMALL = ModelConfig(
    d_z=32, num_blocks=1, widening=1, num_heads=2, d_i=16, num_proprio=5, num_actions=3,
    num_text_tokens=4, vocab_size=9, num_action_bins=11, num_value_bins=11, value_head=True,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model_and_target(cfg: ModelConfig = SMALL, seed: int = 0):
    torch.manual_seed(seed)
    model = PerceiverActorCritic(cfg)
    with torch.no_grad():  # non-uniform initial heads so every term has a gradient
        for head in (model.policy_decoder.head, model.q_decoder.head, model.value_decoder.head):
            head.weight.normal_(std=0.3)
    return model, copy.deepcopy(model).requires_grad_(False)


# --- eq. 9: the categorical projection --------------------------------------------------------


def test_projection_conserves_mass_and_clips():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 21, generator=g) * 3, dim=-1)
    rewards = torch.randn(64, generator=g) * 20  # many targets outside [0, 10]
    discounts = torch.rand(64, generator=g) * torch.randint(0, 2, (64,), generator=g)
    out = categorical_projection(probs, rewards, discounts, 0.0, 10.0)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(-1), torch.ones(64), atol=1e-5)
    high = categorical_projection(probs[:2], torch.tensor([50.0, 10.0]), torch.ones(2), 0.0, 10.0)
    assert torch.allclose(high[:, -1], torch.ones(2))  # all mass on the top edge bin
    low = categorical_projection(probs[:1], torch.tensor([-50.0]), torch.ones(1), 0.0, 10.0)
    assert torch.allclose(low[0, 0], torch.tensor(1.0))


def test_projection_mean_is_r_plus_gamma_expected_q():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(32, 51, generator=g), dim=-1)
    rewards = torch.rand(32, generator=g) * 2
    gamma = torch.full((32,), 0.8)  # r + 0.8 q' stays inside [0, 10] for q' in [0, 10]
    out = categorical_projection(probs, rewards, gamma, 0.0, 10.0)
    support = torch.linspace(0.0, 10.0, 51)
    expected = rewards + gamma * (probs * support).sum(-1)
    assert torch.allclose((out * support).sum(-1), expected, atol=1e-5)


def test_projection_hand_computed_cases():
    # support {0, 1, 2, 3}
    one = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    out = categorical_projection(one, torch.tensor([0.5]), torch.tensor([1.0]), 0.0, 3.0)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 0.5, 0.0]]))  # 1.5 splits evenly
    ends = torch.tensor([[0.5, 0.0, 0.0, 0.5]])
    out = categorical_projection(ends, torch.tensor([0.25]), torch.tensor([0.5]), 0.0, 3.0)
    # atoms 0 -> 0.25 (0.75 | 0.25), 3 -> 1.75 (0.25 | 0.75), each with mass 0.5
    assert torch.allclose(out, torch.tensor([[0.375, 0.25, 0.375, 0.0]]))
    terminal = categorical_projection(ends, torch.tensor([2.0]), torch.tensor([0.0]), 0.0, 3.0)
    assert torch.allclose(terminal, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))  # episode end: r only


# --- eq. 11: the terms --------------------------------------------------------------------------


def test_improvement_weights_sum_to_one_and_match_eq11():
    q = torch.tensor([[1.0, 2.0, 3.0, 0.5], [5e3, 5e3 + 1, -5e3, 0.0]])
    for eta in (0.1, 1.0, 1e-4):
        w = improvement_weights(q, eta)
        assert torch.isfinite(w).all()
        assert torch.allclose(w.sum(-1), torch.ones(2))
    k_q = torch.log(torch.exp(q[0] / 0.5).mean())  # K_Q = log E_{a'} exp(Q / eta)
    assert torch.allclose(improvement_weights(q[:1], 0.5)[0], torch.exp(q[0] / 0.5 - k_q) / 4)


def test_alpha_one_beta_zero_is_exactly_the_bc_gradient():
    batch = random_batch(SMALL, batch_size=4, length=3, seed=3)
    n = batch.length - 1

    def grads(loss: torch.Tensor, model) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                for p in model.parameters()]

    model, target = _model_and_target()
    logits = model.policy_logits(model.encode(batch.observation(slice(0, n))))
    actions = batch.actions[:, :-1].reshape(-1, SMALL.num_actions)
    bc = -log_prob(logits, actions, batch.action_mask.repeat_interleave(n, 0)).mean()
    reference = grads(bc, model)
    assert any(g.abs().sum() > 0 for g in reference)

    configs = [LossConfig(alpha=1.0, beta=0.0), LossConfig(variant="filtered_bc", alpha=1.0,
                                                           beta=0.0)]
    batch_a = dataclasses.replace(batch, alpha=torch.ones(4), beta=torch.zeros(4))
    for loss_cfg, b in [(c, batch) for c in configs] + [(LossConfig(variant="alpha_pac"), batch_a)]:
        out = compute_loss(model, target, b, loss_cfg, generator=torch.Generator().manual_seed(0))
        assert out.total.item() == out.bc.item() == bc.item()
        for g_ref, g in zip(reference, grads(out.total, model), strict=True):
            assert torch.equal(g_ref, g), loss_cfg.variant


def reference_eq11(model, target, batch: Batch, cfg: LossConfig, seed: int) -> dict:
    """Eq. 11 written a second time, one transition at a time in plain loops: log pi summed over
    the valid action dimensions from each dimension's nearest bin, w_k = exp(Q'_k / eta) / sum_j
    exp(Q'_j / eta), Gamma' (eq. 9) by splitting each shifted atom r + gamma d q_j between its
    two neighbouring bins, and means over the valid transitions. Everything from theta' is a
    constant (computed under no_grad). The N samples a' ~ pi_theta' are drawn with the same
    generator seed (sampling itself is tested in tests/model)."""
    from pac.model.distributions import sample

    b, t_len = batch.batch_size, batch.length
    n_bins, n_v = SMALL.num_action_bins, SMALL.num_value_bins
    support = [cfg.value_min + j * (cfg.value_max - cfg.value_min) / (n_v - 1) for j in range(n_v)]
    support_t = torch.tensor(support)
    with torch.no_grad():
        mask_all = batch.action_mask.repeat_interleave(t_len, dim=0)
        z_target = target.encode(batch.observation(slice(0, t_len)))
        a_prime = sample(target.policy_logits(z_target), mask_all, cfg.num_action_samples,
                         torch.Generator().manual_seed(seed))  # [B*T, N, N^A]
        q_probs = torch.softmax(target.q_logits(z_target, a_prime, mask_all), -1)
    z = model.encode(batch.observation(slice(0, t_len - 1)))
    logits = model.policy_logits(z)
    dims = [int(batch.action_mask[i].sum()) for i in range(b)]
    terms: dict[str, list[torch.Tensor]] = {"pi": [], "bc": [], "q": []}
    for i in range(b):
        for t in range(t_len - 1):
            if not batch.step_mask[i, t]:
                continue
            row, log_p = i * (t_len - 1) + t, torch.log_softmax(logits[i * (t_len - 1) + t], -1)

            def log_pi(a, i=i, log_p=log_p):
                return sum(log_p[d, round((float(a[d]) + 1) / 2 * (n_bins - 1))]
                           for d in range(dims[i]))

            terms["bc"].append(-log_pi(batch.actions[i, t]))
            q_values = [float((q_probs[i * t_len + t, k] * support_t).sum())
                        for k in range(cfg.num_action_samples)]
            e = [math.exp(q / cfg.eta) for q in q_values]
            w = [x / sum(e) for x in e]
            terms["pi"].append(-sum(w[k] * log_pi(a_prime[i * t_len + t, k])
                                    for k in range(cfg.num_action_samples)))
            discount = cfg.gamma * float(batch.discounts[i, t])
            next_p = q_probs[i * t_len + t + 1].mean(0).tolist()  # mean over a' at s_{t+1}
            if discount == 0.0:
                next_p = [1.0] + [0.0] * (n_v - 1)  # the target is r alone
            gamma_target = [0.0] * n_v
            spacing = support[1] - support[0]
            for j in range(n_v):
                v = min(max(float(batch.rewards[i, t]) + discount * support[j], support[0]),
                        support[-1])
                lo = min(int((v - support[0]) / spacing), n_v - 2)
                frac = (v - support[lo]) / spacing
                gamma_target[lo] += next_p[j] * (1 - frac)
                gamma_target[lo + 1] += next_p[j] * frac
            q_logits = model.q_logits(z[row:row + 1], batch.actions[i, t][None, None],
                                      batch.action_mask[i:i + 1])[0, 0]
            terms["q"].append(-(torch.tensor(gamma_target) * torch.log_softmax(q_logits, -1)).sum())
    mean = {k: torch.stack(v).mean() for k, v in terms.items()}
    mean["total"] = ((1 - cfg.alpha) * mean["pi"] + cfg.alpha * mean["bc"]
                     + cfg.beta * mean["q"])
    return mean


def test_eq11_matches_a_second_implementation_and_theta_prime_gets_no_gradient():
    """compute_loss against :func:`reference_eq11` on a batch with an episode end and padding:
    each term, the total and the gradient of every online parameter. theta' differs from theta
    (noised copy), so the online network in theta''s place (or the reverse) changes the values;
    theta' is built WITH requires_grad and must still get no gradient (the loss's stop-gradient,
    not the caller's requires_grad_(False)), and the online gradient must equal the one of the
    reference, whose targets and weights are constants."""
    batch = random_batch(SMALL, batch_size=3, length=3, seed=4)
    discounts, step_mask = torch.ones(3, 3), torch.ones(3, 3, dtype=torch.bool)
    discounts[1, 0], step_mask[1, 1:] = 0.0, False  # trajectory 1 terminates after step 0
    batch = dataclasses.replace(batch, discounts=discounts, step_mask=step_mask)
    model, _ = _model_and_target()
    target = copy.deepcopy(model)  # requires_grad left on
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loss_cfg = LossConfig(alpha=0.6, beta=2.0, eta=0.5, gamma=0.9, num_action_samples=4,
                          value_min=0.0, value_max=5.0)
    out = compute_loss(model, target, batch, loss_cfg, generator=torch.Generator().manual_seed(3))
    ref = reference_eq11(model, target, batch, loss_cfg, seed=3)
    for got, want in ((out.policy_improvement, ref["pi"]), (out.bc, ref["bc"]),
                      (out.q, ref["q"]), (out.total, ref["total"])):
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    assert out.metrics["valid_transitions"] == 5

    got_grads = torch.autograd.grad(out.total, list(model.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad(ref["total"], list(model.parameters()), allow_unused=True)
    for (name, _), g, r in zip(model.named_parameters(), got_grads, ref_grads, strict=True):
        if r is None:
            assert g is None or not g.any(), name
        else:
            assert g is not None and (g - r).norm() <= 1e-4 * r.norm() + 1e-6, name  # fp32 sums
    out = compute_loss(model, target, batch, loss_cfg, generator=torch.Generator().manual_seed(3))
    out.total.backward()
    assert all(p.grad is None for p in target.parameters())  # no gradient reaches theta'
    assert any(p.grad is not None and p.grad.any() for p in model.q_decoder.parameters())


def test_episode_end_targets_are_the_reward():
    batch = random_batch(SMALL, batch_size=4, length=2, seed=5)
    batch = dataclasses.replace(batch, discounts=torch.zeros(4, 2))
    model, target = _model_and_target()
    out = compute_loss(model, target, batch, LossConfig(value_min=0.0, value_max=1.0))
    assert abs(out.metrics["target_q"] - batch.rewards[:, 0].mean().item()) < 1e-5


def test_padded_steps_are_ignored():
    batch = random_batch(SMALL, batch_size=4, length=4, seed=6)
    step_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]).bool()
    discounts = torch.ones(4, 4)
    discounts[1, 1] = 0.0  # trajectory 1 ends after step 1; trajectory 3 is cut (no bootstrap)
    batch = dataclasses.replace(batch, step_mask=step_mask, discounts=discounts)
    model, target = _model_and_target()
    pad = ~step_mask
    junk = dataclasses.replace(
        batch,
        proprio=torch.where(pad[..., None], torch.full_like(batch.proprio, 1e4), batch.proprio),
        actions=torch.where(pad[..., None], torch.full_like(batch.actions, 0.9), batch.actions),
        rewards=torch.where(pad, torch.full_like(batch.rewards, 99.0), batch.rewards),
    )
    for loss_cfg in (LossConfig(), LossConfig(variant="pac_v", alpha=0.0)):
        outs = [compute_loss(model, target, b, loss_cfg, generator=torch.Generator().manual_seed(0))
                for b in (batch, junk)]
        assert outs[0].metrics == outs[1].metrics
        assert outs[0].metrics["valid_transitions"] == 3 + 2 + 1 + 3  # steps t with s_t valid


def test_effective_alpha_schedule_and_groups():
    batch_alpha = torch.tensor([0.0, 0.75])
    assert effective_alpha(LossConfig(alpha=0.5), 0, batch_alpha).tolist() == [0.5, 0.5]
    per_group = LossConfig(variant="alpha_pac")
    assert effective_alpha(per_group, 0, batch_alpha).tolist() == [0.0, 0.75]
    schedule = LossConfig(alpha_schedule=[[0, 1.0], [100, 0.0]])  # §4.3: BC first, then RL
    assert effective_alpha(schedule, 99, batch_alpha).tolist() == [1.0, 1.0]
    assert effective_alpha(schedule, 100, batch_alpha).tolist() == [0.0, 0.0]


def test_missing_target_and_short_trajectories_fail_clearly():
    model, _ = _model_and_target()
    batch = random_batch(SMALL, batch_size=2, length=2, seed=7)
    with pytest.raises(ValueError, match="needs a target network"):
        compute_loss(model, None, batch, LossConfig())
    compute_loss(model, None, batch, LossConfig(variant="filtered_bc", alpha=1.0, beta=0.0))
    compute_loss(model, None, batch, LossConfig(variant="pac_v"))  # no target network (eq. 14)
    with pytest.raises(ValueError, match="length >= 2"):
        compute_loss(model, None, random_batch(SMALL, 2, 1), LossConfig(variant="pac_v"))


# --- the bandit: the RL part works --------------------------------------------------------------

POOR, BEST = -0.6, 0.6  # the frequent action (70%, reward 0) and the rare best one (30%, reward 1)
BANDIT = ModelConfig(
    d_z=32, num_blocks=1, widening=1, num_heads=2, d_i=16, num_proprio=1, num_actions=1,
    num_text_tokens=1, vocab_size=2, num_latents=4, num_action_bins=21, num_value_bins=21,
    value_head=True,
)


def bandit_batch(g: torch.Generator, n: int = 64) -> Batch:
    """One state; one-step episodes (discount 0): Q(s, a) = r(a)."""
    best = torch.rand(n, generator=g) < 0.3
    first = torch.where(best, BEST, POOR)
    ones = torch.ones(n, 2, dtype=torch.bool)
    return Batch(
        proprio=torch.full((n, 2, 1), 0.5),
        proprio_mask=ones[:, :1],
        text=torch.ones(n, 1, dtype=torch.long),
        text_mask=ones[:, :1],
        actions=torch.stack([first, torch.zeros(n)], dim=1)[..., None],
        action_mask=ones[:, :1],
        rewards=torch.stack([best.float(), torch.zeros(n)], dim=1),
        discounts=torch.stack([torch.zeros(n), torch.ones(n)], dim=1),
        step_mask=ones,
        alpha=torch.zeros(n),
        beta=torch.ones(n),
        group=torch.zeros(n, dtype=torch.long),
    )


def train_bandit(loss_cfg: LossConfig, steps: int = 100, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    model = PerceiverActorCritic(BANDIT)
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=True)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        out = compute_loss(model, target, bandit_batch(g), loss_cfg, step, generator=g)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        if (step + 1) % 10 == 0:  # f_theta' = 10 updates here
            target.load_state_dict(model.state_dict())
    state = bandit_batch(g, 1)
    with torch.no_grad():
        z = model.encode(state.observation(0))
        logits = model.policy_logits(z)
        both = torch.tensor([[[POOR], [BEST]]])
        q = expected_value(model.q_logits(z, both), loss_cfg.value_min, loss_cfg.value_max)[0]
        probs = torch.softmax(logits[0, 0], dim=-1)
    return {
        "mode": mode(logits, state.action_mask).item(),
        "log_pi_poor": log_prob(logits, torch.tensor([[POOR]]), state.action_mask).item(),
        "log_pi_best": log_prob(logits, torch.tensor([[BEST]]), state.action_mask).item(),
        "p_positive": probs[BANDIT.num_action_bins // 2 + 1 :].sum().item(),
        "q_poor": q[0].item(),
        "q_best": q[1].item(),
    }


def test_bandit_bc_imitates_pac_improves():
    """BC (alpha = 1) copies the frequent poor action; PAC with alpha = 0 prefers the best one."""
    common = dict(beta=1.0, eta=0.1, value_min=0.0, value_max=1.0)
    bc = train_bandit(LossConfig(variant="bc_q", alpha=1.0, **common))
    pac = train_bandit(LossConfig(variant="pac", alpha=0.0, **common))
    for name, r in (("BC (alpha=1)", bc), ("PAC (alpha=0)", pac)):
        print(f"{name}: mode {r['mode']:+.2f}, log pi(poor) {r['log_pi_poor']:.2f}, log pi(best)"
              f" {r['log_pi_best']:.2f}, P(a>0) {r['p_positive']:.3f},"
              f" Q(poor) {r['q_poor']:.2f}, Q(best) {r['q_best']:.2f}")
    assert abs(bc["mode"] - POOR) < 1e-6
    assert bc["log_pi_poor"] > bc["log_pi_best"] + 0.5  # ~70% vs ~30%
    assert pac["mode"] > 0.3 and pac["p_positive"] > 0.95
    assert pac["log_pi_best"] > pac["log_pi_poor"] + 3.0
    for r in (bc, pac):  # the distributional Q has learned r(a)
        assert r["q_best"] - r["q_poor"] > 0.8


def test_bandit_pac_v_prefers_the_best_action():
    """PAC+V (eq. 14): advantage-weighted on dataset actions, no target network."""
    loss_cfg = LossConfig(variant="pac_v", alpha=0.0, beta=1.0, eta=0.1, value_min=0.0,
                          value_max=1.0)
    r = train_bandit(loss_cfg, steps=60)
    print(f"PAC+V: mode {r['mode']:+.2f}, log pi(poor) {r['log_pi_poor']:.2f},"
          f" log pi(best) {r['log_pi_best']:.2f}")
    assert abs(r["mode"] - BEST) < 1e-6
    assert r["log_pi_best"] > r["log_pi_poor"] + 3.0


def test_pac_v_preset_has_app_c5_values():
    """params/presets/pac_v.yaml: "All PAC+V models use alpha = 0.0, beta = 38 and a temperature
    tau of 1e-4" (App. C.5; tau is eq. 14's eta); loss.variant=pac_v alone points at it."""
    from pac.config import ConfigError, load_config

    cfg = load_config("params/presets/pac_v.yaml")
    assert (cfg.loss.variant, cfg.loss.alpha, cfg.loss.beta, cfg.loss.eta) == ("pac_v", 0.0,
                                                                               38.0, 1e-4)
    assert cfg.model.value_head
    with pytest.raises(ConfigError, match="params/presets/pac_v.yaml"):
        load_config(overrides=["loss.variant=pac_v"])

"""Eq. 9-11 against values computed by hand, with a target network whose outputs are known.

The target network theta' here is a small hand-written module (not a copy of the online one):
its policy puts all mass on one action a' = +0.6 in every dimension and its Q-function is
Q'(s, a) = 5 + 2 s[0] + 3 a[0] on a grid point of the value support, so every TD target has a
closed form. Each case is built to fail for one bug class:

* bootstrapping from the dataset's next action (SARSA) instead of a' ~ pi_theta':
  Q'(s', a_data = -0.4) = 5 + 2 s'[0] - 1.2 differs from Q'(s', a') = 5 + 2 s'[0] + 1.8;
* dropping gamma; bootstrapping from s_t instead of s_{t+1} (s_t[0] != s_{t+1}[0]);
* the online network in place of theta' (its zero-initialised head gives Q = 10);
* episode ends: a terminal step's target is r alone (on any value support); a truncated step
  bootstraps from the final observation when the store kept it, and has no TD loss when it
  did not;
* weights exp(Q/eta - K_Q) that carry a gradient, or come from the online Q.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from pac.batch import Batch
from pac.config import LossConfig, ModelConfig
from pac.losses import compute_loss
from pac.model import PerceiverActorCritic

CFG = ModelConfig(
    d_z=32, num_blocks=1, widening=1, num_heads=2, d_i=16, num_proprio=2, num_actions=1,
    num_text_tokens=1, vocab_size=2, num_latents=4, num_action_bins=101, num_value_bins=101,
)
LOSS = LossConfig(variant="pac", alpha=0.5, beta=1.0, eta=1.0, gamma=0.9,
                  num_action_samples=4, value_min=0.0, value_max=20.0)
A_PRIME, A_DATA = 0.6, -0.4  # both bin centres of the 101-bin action grid


def q_prime(s0: float, a0: float) -> float:
    return 5.0 + 2.0 * s0 + 3.0 * a0


class KnownTarget(nn.Module):
    """theta' with closed-form outputs: pi'(a | s) = delta(a - 0.6), Q'(s, a) = q_prime(s0, a0)."""

    def __init__(self, q_scale: float = 1.0) -> None:
        super().__init__()
        self.q_scale = q_scale

    def encode(self, obs) -> torch.Tensor:
        return obs.proprio[:, None, :]  # "z" is the state itself

    def policy_logits(self, z: torch.Tensor) -> torch.Tensor:
        logits = torch.full((z.shape[0], CFG.num_actions, CFG.num_action_bins), -1e4)
        logits[..., round((A_PRIME + 1) / 2 * (CFG.num_action_bins - 1))] = 0.0
        return logits

    def q_logits(self, z: torch.Tensor, actions: torch.Tensor, mask=None) -> torch.Tensor:
        value = self.q_scale * (5.0 + 2.0 * z[:, 0, 0, None] + 3.0 * actions[..., 0])  # [B, K]
        spacing = (LOSS.value_max - LOSS.value_min) / (CFG.num_value_bins - 1)
        index = torch.round((value - LOSS.value_min) / spacing).long()
        logits = torch.full((*value.shape, CFG.num_value_bins), -1e4)
        return logits.scatter(-1, index[..., None], 0.0)


def batch_of(s0: list[float], rewards: list[float], discounts: list[float],
             step_mask: list[bool], observed: list[bool] | None = None) -> Batch:
    """One trajectory (B = 1) with proprio[t] = (s0[t], 0) and the dataset action -0.4."""
    t = len(s0)
    proprio = torch.zeros(1, t, CFG.num_proprio)
    proprio[0, :, 0] = torch.tensor(s0)
    return Batch(
        proprio=proprio,
        proprio_mask=torch.ones(1, CFG.num_proprio, dtype=torch.bool),
        text=torch.ones(1, 1, dtype=torch.long),
        text_mask=torch.ones(1, 1, dtype=torch.bool),
        actions=torch.full((1, t, 1), A_DATA),
        action_mask=torch.ones(1, 1, dtype=torch.bool),
        rewards=torch.tensor([rewards]),
        discounts=torch.tensor([discounts]),
        step_mask=torch.tensor([step_mask]),
        alpha=torch.full((1,), LOSS.alpha),
        beta=torch.full((1,), LOSS.beta),
        group=torch.zeros(1, dtype=torch.long),
        observed=None if observed is None else torch.tensor([observed]),
    )


@pytest.fixture(scope="module")
def online() -> PerceiverActorCritic:
    torch.manual_seed(0)
    return PerceiverActorCritic(CFG)


def target_q(online, batch: Batch) -> tuple[float, float]:
    out = compute_loss(online, KnownTarget(), batch, LOSS, 0, torch.Generator().manual_seed(0))
    return out.metrics["target_q"], out.metrics["q_loss"]


def test_target_bootstraps_from_the_target_policy_at_the_next_state(online):
    # s_0[0] = 0.7, s_1[0] = 0.3, r_0 = 0.4, d_0 = 1
    got, _ = target_q(online, batch_of([0.7, 0.3], [0.4, 0.0], [1.0, 1.0], [True, True]))
    expected = 0.4 + 0.9 * q_prime(0.3, A_PRIME)  # 0.4 + 0.9 * 7.4 = 7.06
    wrong = {
        "SARSA (dataset next action)": 0.4 + 0.9 * q_prime(0.3, A_DATA),
        "gamma dropped": 0.4 + q_prime(0.3, A_PRIME),
        "s_t instead of s_{t+1}": 0.4 + 0.9 * q_prime(0.7, A_PRIME),
        "online network as target": 0.4 + 0.9 * 10.0,
    }
    assert got == pytest.approx(expected, abs=1e-4)
    for bug, value in wrong.items():
        assert abs(value - expected) > 0.5, bug  # every bug class moves the target visibly


def test_each_position_bootstraps_from_its_own_successor(online):
    # three transitions, each with its own next state; the mean target is checked
    s0, r = [0.1, 0.5, 0.9, 0.3], [1.0, 2.0, 0.0, 0.0]
    got, _ = target_q(online, batch_of(s0, r, [1.0] * 4, [True] * 4))
    expected = sum(r[t] + 0.9 * q_prime(s0[t + 1], A_PRIME) for t in range(3)) / 3
    shifted = sum(r[t] + 0.9 * q_prime(s0[min(t + 2, 3)], A_PRIME) for t in range(3)) / 3
    assert got == pytest.approx(expected, abs=1e-4)
    assert abs(shifted - expected) > 0.1  # an off-by-one successor would be seen


def test_terminal_step_target_is_the_reward(online):
    # the episode terminates after step 0 (discount 0); position 1 is padding
    got, q_loss = target_q(online, batch_of([0.7, 0.0], [1.0, 0.0], [0.0, 0.0], [True, False]))
    assert got == pytest.approx(1.0, abs=1e-5)
    assert q_loss > 0  # the terminal transition has a TD loss


@pytest.mark.parametrize("value_min", [-8.0, 3.0])
def test_terminal_step_target_is_the_reward_on_a_shifted_support(online, value_min):
    """Bootstrapping through a termination with gamma in place of gamma * d_t is hidden on a
    support starting at 0 (the padded successor's fixed one-hot sits on the value 0); on
    [value_min, value_min + 20] it would give r + gamma * value_min instead of r alone."""
    loss = dataclasses.replace(LOSS, value_min=value_min, value_max=value_min + 20.0)
    batch = batch_of([0.7, 0.0], [4.0, 0.0], [0.0, 0.0], [True, False])
    out = compute_loss(online, KnownTarget(), batch, loss, 0, torch.Generator().manual_seed(0))
    assert out.metrics["target_q"] == pytest.approx(4.0, abs=1e-4)
    assert abs(loss.gamma * value_min) > 1.0  # the bug's target r + gamma * v_min is apart


def test_truncated_step_bootstraps_from_the_final_observation(online):
    # a time limit after step 0: position 1 holds o_L (observed, not a transition)
    batch = batch_of([0.7, 0.3], [0.4, 0.0], [1.0, 0.0], [True, False], observed=[True, True])
    got, _ = target_q(online, batch)
    assert got == pytest.approx(0.4 + 0.9 * q_prime(0.3, A_PRIME), abs=1e-4)


def test_truncated_step_without_final_observation_has_no_td_loss(online):
    batch = batch_of([0.7, 0.3], [0.4, 0.0], [1.0, 0.0], [True, False])
    out = compute_loss(online, KnownTarget(), batch, LOSS, 0, torch.Generator().manual_seed(0))
    assert out.metrics["q_loss"] == 0.0 and out.metrics["bc"] > 0  # BC still learns from it


def _pi_only(online, target, batch) -> torch.Tensor:
    cfg = dataclasses.replace(LOSS, alpha=0.0, beta=0.0)
    return compute_loss(online, target, batch, cfg, 0, torch.Generator().manual_seed(0)).total


def test_improvement_weights_are_constants_from_the_target_q():
    """-sum_k w_k log pi(a'_k): no gradient reaches the online Q decoder, perturbing the online Q
    changes nothing, and the weights follow Q_theta'."""
    torch.manual_seed(1)
    model = PerceiverActorCritic(CFG)
    for p in model.policy_decoder.head.parameters():  # a non-uniform online policy
        nn.init.normal_(p, std=1.0)
    batch = batch_of([0.7, 0.3], [0.4, 0.0], [1.0, 1.0], [True, True])

    class TwoActions(KnownTarget):  # pi' = 1/2 at a = +0.6 and 1/2 at a = -0.4
        def policy_logits(self, z):
            logits = torch.full((z.shape[0], 1, CFG.num_action_bins), -1e4)
            logits[..., [30, 80]] = 0.0
            return logits

    loss = _pi_only(model, TwoActions(), batch)
    loss.backward()
    q_grads = [p.grad for p in model.q_decoder.parameters() if p.grad is not None]
    assert all(g.abs().max() == 0 for g in q_grads), "the weights carry a gradient"
    with torch.no_grad():
        for p in model.q_decoder.parameters():
            p.add_(torch.randn_like(p))
    assert _pi_only(model, TwoActions(), batch).item() == pytest.approx(loss.item(), rel=1e-6)
    # the weights come from Q_theta': flattening Q' (scale 0) changes the weighted term
    assert abs(_pi_only(model, TwoActions(q_scale=0.0), batch).item() - loss.item()) > 1e-3


def _critic_setup(cfg: ModelConfig):
    """A seeded online network, its frozen copy as theta', Adam 3e-3 and a sampling generator."""
    import copy

    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg)
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return model, target, opt, torch.Generator().manual_seed(0)


def test_the_critic_ranks_actions_in_a_contextual_bandit():
    """After training on uniformly random actions in two contexts with r = 1 - |a - a*(s)| / 2
    and a*(s) = +-0.8, the critic prefers a* to its mirror image -a* in both contexts, and its Q
    follows the reward across actions (rank correlation within each context). Fails without the
    Q decoder's MLP: Q then learns the action marginal (spread 0.000 against a true 0.9)."""

    from scipy.stats import spearmanr

    from pac.model.distributions import expected_value

    cfg = dataclasses.replace(CFG, num_proprio=1, d_z=32, num_latents=4, num_value_bins=21)
    loss = dataclasses.replace(LOSS, variant="bc_q", alpha=1.0, beta=1.0, value_max=2.0)
    model, target, opt, g = _critic_setup(cfg)

    def bandit(n: int) -> Batch:
        s = torch.where(torch.rand(n, generator=g) < 0.5, -0.5, 0.5)
        a = torch.rand(n, generator=g) * 2 - 1
        ones = torch.ones(n, 2, dtype=torch.bool)
        return Batch(
            proprio=s[:, None, None].expand(n, 2, 1).contiguous(), proprio_mask=ones[:, :1],
            text=torch.ones(n, 1, dtype=torch.long), text_mask=ones[:, :1],
            actions=torch.stack([a, torch.zeros(n)], 1)[..., None], action_mask=ones[:, :1],
            rewards=torch.stack([1 - (a - 1.6 * s).abs() / 2, torch.zeros(n)], 1),
            discounts=torch.zeros(n, 2), step_mask=ones, alpha=torch.ones(n),
            beta=torch.ones(n), group=torch.zeros(n, dtype=torch.long),
        )

    for step in range(500):
        out = compute_loss(model, target, bandit(64), loss, step, g)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    grid = torch.linspace(-1, 1, 11)
    with torch.no_grad():
        for s in (-0.5, 0.5):
            obs = bandit(1).observation(0)
            obs = dataclasses.replace(obs, proprio=torch.full((1, 1), s))
            z = model.encode(obs)
            q = expected_value(model.q_logits(z, grid[None, :, None]), 0.0, 2.0)[0]
            r = 1 - (grid - 1.6 * s).abs() / 2
            best = int(torch.argmin((grid - 1.6 * s).abs()))
            assert q[best] > q[10 - best] + 0.2, (s, q.tolist())  # a* over -a*
            assert spearmanr(q.numpy(), r.numpy())[0] > 0.8, (s, q.tolist())


@pytest.mark.parametrize(("reward", "weight"), [(1.05, math.exp(0.5)), (3.0, 20.0)])
def test_pac_v_weights_are_exp_advantage_over_eta_unnormalised(reward, weight):
    """Eq. 14 with V = 10 everywhere (zero value head on [0, 20]): A = r + 0.9 * 10 - 10, the
    weight of the one transition is exp(A / eta) itself (not normalised over the batch: that
    would make it 1), clipped at 20; V's TD target is r + gamma V(s')."""
    cfg = dataclasses.replace(CFG, value_head=True)
    loss = dataclasses.replace(LOSS, variant="pac_v", alpha=0.0, beta=1.0, eta=0.1)
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg)
    batch = batch_of([0.7, 0.3], [reward, 0.0], [1.0, 1.0], [True, True])
    out = compute_loss(model, None, batch, loss)
    assert out.metrics["mean_v"] == pytest.approx(10.0, abs=1e-4)
    assert out.metrics["mean_advantage"] == pytest.approx(reward - 1.0, abs=1e-4)
    assert out.metrics["policy_improvement"] == pytest.approx(weight * out.metrics["bc"], rel=1e-4)


def test_a_terminal_reward_reaches_q_through_training():
    """A three-step episode s0 -> s1 -> s2 with one reward r = 1 after the last (terminal) step:
    trained with eq. 11's Q term and a target network refreshed every 20 updates, Q of the last
    state-action approaches r and the earlier ones its discounted value, gamma^k * r (the exact
    fixed point: the episode is deterministic). Fails when the last step never reaches a loss
    position, when gamma is dropped (Q(s0) -> 1) or when terminal targets bootstrap."""
    from pac.model.distributions import expected_value

    cfg = dataclasses.replace(CFG, num_value_bins=41)
    loss = dataclasses.replace(LOSS, variant="bc_q", alpha=1.0, beta=1.0, value_max=2.0)
    model, target, opt, g = _critic_setup(cfg)
    # s0, s1, s2 then one padded step after the terminal one (the sampler's layout)
    batch = batch_of([0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0],
                     [True, True, True, False])
    for step in range(200):
        if step % 20 == 0:
            target.load_state_dict(model.state_dict())
        out = compute_loss(model, target, batch, loss, step, g)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    with torch.no_grad():
        z = model.encode(batch.observation(slice(0, 3)))
        q_logits = model.q_logits(z, batch.actions[:, :3].reshape(-1, 1, 1))[:, 0]
        q = expected_value(q_logits, 0.0, 2.0)
    expected = torch.tensor([loss.gamma**2, loss.gamma, 1.0])
    assert torch.allclose(q, expected, atol=0.05), q.tolist()


# --- PAC+V (eq. 13-14) on a tabular MDP whose V^pi is solved exactly ------------------------------

#: Three states, three actions (the bin centres -1, 0, +1 of a 3-bin action grid), deterministic
#: moves; (s=2, a=+1) ends the episode with reward 0.8 (discount 0).
NEXT = [[0, 1, 2], [0, 2, 1], [1, 0, -1]]  # -1: terminal
REWARD = [[0.0, 0.1, 0.6], [0.5, 0.0, 0.1], [0.1, 0.0, 0.8]]
PI = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.1, 0.3], [0.2, 0.1, 0.7]], dtype=torch.float64)
PAC_V = LossConfig(variant="pac_v", alpha=0.0, beta=1.0, eta=1.0, gamma=0.8, value_min=0.0,
                   value_max=5.0)


def exact_value(policy: torch.Tensor) -> torch.Tensor:
    """V^policy by a linear solve of (I - gamma P_pi) V = r_pi (the independent reference)."""
    p_pi, r_pi = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for s in range(3):
        for a in range(3):
            r_pi[s] += policy[s, a] * REWARD[s][a]
            if NEXT[s][a] >= 0:
                p_pi[s, NEXT[s][a]] += policy[s, a]
    return torch.linalg.solve(torch.eye(3, dtype=torch.float64) - PAC_V.gamma * p_pi, r_pi)


class TabularPACV(nn.Module):
    """PAC+V's network as tables: z = one-hot of the state index proprio[0], a trainable table of
    V logits (51 bins on [0, 5]) and a fixed policy table (PI)."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.zeros(3, 51))

    def encode(self, obs) -> torch.Tensor:
        return nn.functional.one_hot(obs.proprio[:, 0].long(), 3).float()[:, None, :]

    def value_logits(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, 0] @ self.v

    def policy_logits(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] @ PI.float().log())[:, None, :]

    def values(self) -> torch.Tensor:
        return (torch.softmax(self.v, -1) * torch.linspace(0.0, 5.0, 51)).sum(-1).detach()


def tabular_batch(counts: list[list[int]]) -> Batch:
    """counts[s][a] copies of the transition (s, a): the data's behaviour b(a|s) ~ counts[s][a]."""
    rows = [(s, a) for s in range(3) for a in range(3) for _ in range(counts[s][a])]
    n = len(rows)
    proprio = torch.zeros(n, 2, 1)
    actions, rewards = torch.zeros(n, 2, 1), torch.zeros(n, 2)
    discounts, step_mask = torch.ones(n, 2), torch.ones(n, 2, dtype=torch.bool)
    for i, (s, a) in enumerate(rows):
        proprio[i, 0, 0], actions[i, 0, 0], rewards[i, 0] = s, a - 1.0, REWARD[s][a]
        if NEXT[s][a] >= 0:
            proprio[i, 1, 0] = NEXT[s][a]
        else:  # the episode ends after step 0; step 1 is padding
            discounts[i], step_mask[i, 1] = 0.0, False
    ones = torch.ones(n, 1, dtype=torch.bool)
    return Batch(proprio=proprio, proprio_mask=ones, text=torch.ones(n, 1, dtype=torch.long),
                 text_mask=ones, actions=actions, action_mask=ones, rewards=rewards,
                 discounts=discounts, step_mask=step_mask, alpha=torch.zeros(n),
                 beta=torch.ones(n), group=torch.zeros(n, dtype=torch.long))


@pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny tensors
@pytest.mark.parametrize("counts", [[[1, 1, 1]] * 3, [[3, 1, 1], [1, 1, 4], [2, 3, 1]]],
                         ids=["uniform-b", "skewed-b"])
def test_pac_v_value_converges_to_the_exact_value(counts):
    """Trained on eq. 14's V term alone, tabular V reaches the fixed point of eq. 13's weighted
    TD target: V^pi (linear solve) when the data's actions are uniform over the bins (the
    constant b the ratio assumes), and the value of the policy proportional to b pi when they are
    not. The reference values are apart from the bugs' fixed points: a dropped ratio (V^b),
    rho truncated at 1, bootstrapping from V(s_t) instead of V(s_{t+1}) (each checked in a copy)."""
    b = torch.tensor(counts, dtype=torch.float64)
    b = b / b.sum(-1, keepdim=True)
    mixed = b * PI / (b * PI).sum(-1, keepdim=True)
    expected = exact_value(mixed)  # = V^pi for uniform b
    assert (expected - exact_value(b)).abs().max() > 0.1  # a dropped ratio learns V^b
    truncated = b * (3 * PI).clamp(max=1.0)
    truncated = truncated / truncated.sum(-1, keepdim=True)
    assert (expected - exact_value(truncated)).abs().max() > 0.1  # min(1, N_B pi)

    model = TabularPACV()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    batch = tabular_batch(counts)
    for step in range(600):  # within 0.005 of the fixed point (measured)
        out = compute_loss(model, None, batch, PAC_V, step)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    got = model.values()
    print(f"V {got.tolist()}\nreference {expected.tolist()}")
    assert torch.allclose(got.double(), expected, atol=0.02), (got, expected)


def test_pac_v_advantage_and_weights_from_known_values():
    """Eq. 14's policy term on the tabular MDP with V put on one support point per state
    (V = 1.2, 0.7, 2.5): A_t = r_t + gamma d_t V(s_{t+1}) - V(s_t) and the term
    mean_t min(exp(A_t / eta), 20) * -log pi(a_t | s_t), both by hand. Fails on a bootstrap
    from V(s_t), a dropped gamma or a terminal step that bootstraps."""
    values = [1.2, 0.7, 2.5]
    model = TabularPACV()
    with torch.no_grad():
        model.v.fill_(-1e4)
        for s, v in enumerate(values):
            model.v[s, round(v / 0.1)] = 0.0
    batch = tabular_batch([[1, 1, 1]] * 3)
    loss = dataclasses.replace(PAC_V, eta=0.5)
    out = compute_loss(model, None, batch, loss).metrics
    advantages, terms = [], []
    for s in range(3):
        for a in range(3):
            nxt = values[NEXT[s][a]] if NEXT[s][a] >= 0 else 0.0
            adv = REWARD[s][a] + loss.gamma * nxt - values[s]
            advantages.append(adv)
            terms.append(min(math.exp(adv / loss.eta), 20.0) * -math.log(float(PI[s, a])))
    assert out["mean_advantage"] == pytest.approx(sum(advantages) / 9, abs=1e-5)
    assert out["policy_improvement"] == pytest.approx(sum(terms) / 9, rel=1e-5)
    assert out["mean_v"] == pytest.approx(sum(values) / 3, abs=1e-5)

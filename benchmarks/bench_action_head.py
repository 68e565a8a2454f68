"""Why reacher misses: the categorical action head against a regression head, MLP and Perceiver.

The PAC policy is a categorical over N_B = 101 bins per action dimension (App. B.3, Table 5).
This benchmark isolates that choice from everything else of the model: one plain MLP (two hidden
layers of 256, ReLU) is trained by behaviour cloning on the same expert transitions of a task
with two heads side by side,

* ``regression``: N^A outputs, mean squared error, the action itself;
* ``categorical``: N^A x 101 logits, cross-entropy against the data action's nearest bin (the
  PAC policy's BC term), or against a Gaussian of std ``--smoothing`` over the bins,

same data, seed, batch, optimiser and number of steps, and each is evaluated in dm_control over
the same episode seeds; the categorical head under every decoding of ``--decodes`` (argmax: the
mode of each marginal, mean, median). Features are the model's (``pac.tasks.proprio_features``).

Every arm is also probed open loop on ``--held-out`` expert episodes of other seeds: the mean
|a - a_expert| over all their states and over the reaching phase (some |a_expert| > 0.2), and
how often the predicted action points away from the expert's there (cosine < 0). In closed loop
it counts the steps of the failed episodes at which some action is at an edge bin (|a| > 0.97).
On reacher it also measures each joint's velocity gain d a_j / d v_j on the held-out states (the
velocity in the observation moved by +-0.5 rad/s): the expert's is -0.2, it brakes.
``--checkpoint DIR`` scores and probes a PAC inference checkpoint the same way (its own decoding).

``--networks mlp perceiver`` adds the PAC model itself to the comparison: the tiny Perceiver of
params/default.yaml (pac.model: proprio encoder, latents, policy decoder), with its last layer
giving one output (regression) or 101 logits (categorical) per action dimension, trained in the
same loop on the same batches. ``--proprio-tokens scalar joint`` gives one Perceiver arm per
``model.proprio_tokens`` (App. B.2's per-scalar tokens, or one token from an MLP over all the
features): the network is then the only thing that differs between arms.

    OMP_NUM_THREADS=1 python benchmarks/bench_action_head.py --task reacher.easy \\
        --episodes 200 --steps 4000 --smoothing 0 0.2 --checkpoint runs/pretrain/policy

One thread: that command (three networks, seven evaluated arms and the checkpoint) took 1 min
40 s on an idle laptop core; with ``--networks mlp perceiver --proprio-tokens scalar joint
--decodes argmax mean`` (six networks, nine arms, no checkpoint) 22 min 38 s, most of it the
four Perceivers' 4,000 steps at batch 256.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pac.batch import Observation
from pac.config import PROPRIO_TOKENS, load_config
from pac.envs import flatten_observation, make_env
from pac.evaluation.evaluator import episode_seed
from pac.evaluation.rollout import (
    behaviour_policy,
    expert_policy,
    random_policy,
    run_episode,
)
from pac.evaluation.stats import mean_ci, percent_of_expert, wilson_interval
from pac.model import PerceiverActorCritic
from pac.model.distributions import actions_to_bins, bin_centers, mean_action, mode
from pac.tasks import TASKS, proprio_features

NUM_BINS = 101  # Table 5: N_B
DATA_SEED = 7  # data episodes use seeds DATA_SEED * 10^6 + i; evaluation uses pac eval's seeds


def expert_data(task: str, episodes: int, steps: int, raw: bool = False,
                noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, F], actions [N, N^A]) of `episodes` scripted-expert episodes; with `raw`,
    the observations instead of the features, from other seeds (held-out episodes). With
    `noise`, the expert's every action gets fresh N(0, noise) noise, executed and recorded
    (``GroupConfig.action_noise``); held-out episodes stay noiseless."""
    spec, xs, ys = TASKS[task], [], []
    for i in range(episodes):
        seed = DATA_SEED * 10**6 + (10**5 if raw else 0) + i
        policy = (expert_policy(task, seed) if noise == 0.0 else
                  behaviour_policy(task, 1.0, seed, noise=noise))
        ep = run_episode(make_env(task, seed, steps), policy, task)
        obs = ep.observations[:-1]
        xs.append(obs if raw else proprio_features(spec, obs))
        ys.append(ep.actions)
    return np.concatenate(xs), np.clip(np.concatenate(ys), -1.0, 1.0)


class PerceiverBC(torch.nn.Module):
    """The PAC model's policy path (pac.model: proprio encoder, Perceiver, policy decoder) on
    one task's features, with the decoder's last layer giving 1 (regression) or N_B
    (categorical) outputs per action dimension: [B, F] -> [B, N^A * outputs]."""

    def __init__(self, num_features: int, num_actions: int, outputs: int,
                 overrides: list[str], bins: int = NUM_BINS) -> None:
        super().__init__()
        sets = [f"model.num_proprio={num_features}", f"model.num_actions={num_actions}",
                "model.num_text_tokens=0", f"model.num_action_bins={bins}", *overrides]
        cfg = load_config(overrides=sets).model
        self.model = PerceiverActorCritic(cfg)
        self.model.policy_decoder.head = torch.nn.Linear(cfg.decoder_width, outputs)
        torch.nn.init.zeros_(self.model.policy_decoder.head.weight)
        torch.nn.init.zeros_(self.model.policy_decoder.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f = x.shape
        empty = torch.zeros(b, 0, dtype=torch.long)
        obs = Observation(x, torch.ones(b, f, dtype=torch.bool), empty, empty.bool())
        return self.model(obs).flatten(1)


def train_bc(x: np.ndarray, y: np.ndarray, head: str, smoothing: float, steps: int,
             batch: int, seed: int, network: str = "mlp",
             bins: int = NUM_BINS) -> torch.nn.Module:
    """Behaviour cloning with a regression or a categorical head on the MLP (``mlp``) or on the
    PAC Perceiver with the given proprio tokens (``perceiver/scalar``, ``perceiver/joint``...)."""
    torch.manual_seed(seed)
    n_act = y.shape[1]
    per_dim = bins if head == "categorical" else 1
    if network.startswith("perceiver/"):
        tokens = network.split("/", 1)[1]
        net: torch.nn.Module = PerceiverBC(x.shape[1], n_act, per_dim,
                                           [f"model.proprio_tokens={tokens}"], bins)
    else:
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, n_act * per_dim),
        )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    centers = bin_centers(bins)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch,))
        pred, target = net(xt[idx]), yt[idx]
        if head == "regression":
            loss = ((pred - target) ** 2).mean()
        else:
            log_p = torch.log_softmax(pred.view(-1, n_act, bins), dim=-1)
            if smoothing > 0:
                weights = torch.softmax(-((centers - target[..., None]) ** 2)
                                        / (2 * smoothing**2), dim=-1)
            else:
                nearest = actions_to_bins(target, bins)  # the PAC policy's BC target
                weights = torch.nn.functional.one_hot(nearest, bins).float()
            loss = -(weights * log_p).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def decode(output: torch.Tensor, head: str, how: str, n_act: int) -> np.ndarray:
    """One action from the network's output: argmax and mean are the PAC policy server's own
    decodings (pac.model.distributions); the median is the first bin holding half the mass.
    A categorical output holds n_act x bins logits."""
    if head == "regression":
        return output.clamp(-1, 1).numpy()
    logits = output.view(1, n_act, -1)
    bins = logits.shape[-1]
    mask = torch.ones(1, n_act, dtype=torch.bool)
    if how == "argmax":
        a = mode(logits, mask)[0]
    elif how == "mean":
        a = mean_action(logits, mask)[0]
    else:  # median
        probs = torch.softmax(logits[0].float(), dim=-1)
        a = bin_centers(bins)[(probs.cumsum(-1) < 0.5).sum(-1).clamp(max=bins - 1)]
    return a.numpy()


def returns_of(task: str, policy_for_seed: Any, episodes: int, steps: int) -> list[Any]:
    out = []
    for i in range(episodes):
        seed = episode_seed(1000, task, i)
        out.append(run_episode(make_env(task, seed, steps), policy_for_seed(seed), task))
    return out


def score(episodes: list[Any], expert: float, random: float) -> dict[str, float]:
    returns = [e.total_return for e in episodes]
    mean, low, high = mean_ci(percent_of_expert(returns, expert, random))
    wins = sum(bool(e.success) for e in episodes)
    s_low, s_high = wilson_interval(wins, len(episodes))
    # closed-loop signature of a runaway: actions at the +-1 edge bins, in failed episodes
    failed = [e for e in episodes if not e.success]
    edge = (float(np.mean(np.concatenate([np.abs(e.actions).max(-1) > 0.97 for e in failed])))
            if failed else float("nan"))
    return {"mean_return": float(np.mean(returns)),
            "pct_expert": mean, "pct_low": low, "pct_high": high,
            "success": 100.0 * wins / len(episodes), "success_low": 100 * s_low,
            "success_high": 100 * s_high, "edge_failed": edge}


def fit_error(predict: Any, raw: np.ndarray, actions: np.ndarray) -> dict[str, float]:
    """Open-loop fit on held-out expert states: mean |a_pred - a_expert| per action entry, over
    all states and over the reaching phase (some |a_expert| > 0.2: the arm is moving), and the
    fraction of reaching states where the predicted action points away (cosine < 0)."""
    pred = np.stack([predict(x) for x in raw])
    err = np.abs(pred - actions).mean(-1)
    moving = np.abs(actions).max(-1) > 0.2
    cos = (pred * actions).sum(-1) / (
        np.linalg.norm(pred, axis=-1) * np.linalg.norm(actions, axis=-1) + 1e-9)
    return {"error": float(err.mean()), "error_reaching": float(err[moving].mean()),
            "reaching_fraction": float(moving.mean()),
            "away_reaching": float((cos[moving] < 0).mean())}


#: reacher's raw observation: position (2), to_target (2), velocity (2)
REACHER_VELOCITY = (4, 5)


def velocity_gain(predict: Any, raw: np.ndarray, delta: float = 0.5) -> list[float]:
    """d a_j / d v_j on held-out expert states, by central difference: joint j's velocity in the
    observation moved by +-`delta` rad/s, nothing else changed (an intervention, so not confounded
    by how the arm moved). The expert's is -kd = -0.2 (it brakes); a positive gain pushes along
    the motion, which in closed loop feeds it."""
    gains = []
    for j, dim in enumerate(REACHER_VELOCITY):
        up, down = raw.copy(), raw.copy()
        up[:, dim] += delta
        down[:, dim] -= delta
        a_up = np.stack([predict(x) for x in up])[:, j]
        a_down = np.stack([predict(x) for x in down])[:, j]
        gains.append(float(np.mean(a_up - a_down) / (2 * delta)))
    return gains


def fit_text(row: dict[str, Any]) -> str:
    return (f"held-out |a - a_expert| {row['error']:.3f}, reaching {row['error_reaching']:.3f},"
            f" pointing away {100 * row['away_reaching']:.0f}%; failed episodes: "
            f"{100 * row['edge_failed']:.0f}% of steps at an edge bin"
            + (f"; d a / d v {row['velocity_gain'][0]:+.3f} {row['velocity_gain'][1]:+.3f}"
               if "velocity_gain" in row else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="reacher.easy", choices=sorted(TASKS))
    ap.add_argument("--episodes", type=int, default=200, help="expert episodes of data")
    ap.add_argument("--held-out", type=int, default=20, help="held-out expert episodes")
    ap.add_argument("--action-noise", type=float, default=0.0,
                    help="std of fresh Gaussian noise on every expert action of the data")
    ap.add_argument("--bins", type=int, default=NUM_BINS, help="categorical bins per dimension")
    ap.add_argument("--episode-steps", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4000, help="Adam steps per head")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoothing", type=float, nargs="+", default=[0.0],
                    help="std of the categorical head's Gaussian target (0 = nearest bin)")
    ap.add_argument("--decodes", nargs="+", default=["argmax", "mean", "median"],
                    choices=["argmax", "mean", "median"])
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--networks", nargs="+", default=["mlp"], choices=["mlp", "perceiver"],
                    help="the MLP and/or the PAC Perceiver (pac.model, params/default.yaml)")
    ap.add_argument("--proprio-tokens", nargs="+", default=["scalar"], choices=PROPRIO_TOKENS,
                    help="the Perceiver arms' model.proprio_tokens (one arm each)")
    ap.add_argument("--checkpoint", help="also probe this PAC inference checkpoint")
    ap.add_argument("--out", help="JSON with every number")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    task, steps, n_eval = args.task, args.episode_steps, args.eval_episodes

    x, y = expert_data(task, args.episodes, steps, noise=args.action_noise)
    held_raw, held_actions = expert_data(task, args.held_out, steps, raw=True)
    expert = np.mean([e.total_return for e in returns_of(
        task, lambda s: expert_policy(task, s), n_eval, steps)])
    random = np.mean([e.total_return for e in returns_of(
        task, lambda s: random_policy(task, s), n_eval, steps)])
    print(f"{task}: {len(x)} expert transitions (action noise {args.action_noise:g});"
          f" references over {n_eval} episodes: expert {expert:.1f}, random {random:.1f}")
    spec = TASKS[task]
    reacher = spec.domain == "reacher"
    rows = []
    networks: list[str] = []  # "mlp", "perceiver/<tokens>": one network per arm group
    for n in args.networks:
        networks += [f"perceiver/{t}" for t in args.proprio_tokens] if n == "perceiver" else [n]
    arms = [(network, arm) for network in networks for arm in [("regression", 0.0, "-")] + [
        ("categorical", s, how) for s in args.smoothing for how in args.decodes]]
    nets: dict[tuple[str, str, float], torch.nn.Module] = {}
    for network, (head, smoothing, how) in arms:
        if (network, head, smoothing) not in nets:
            nets[network, head, smoothing] = train_bc(
                x, y, head, smoothing, args.steps, args.batch, args.seed, network, args.bins)
        net = nets[network, head, smoothing]

        def predict(obs: np.ndarray, net=net, head=head, how=how) -> np.ndarray:
            """The arm's action for one raw observation (the model's features, then decode)."""
            with torch.no_grad():
                out = net(torch.tensor(proprio_features(spec, obs[None])))[0]
            return decode(out, head, how, spec.num_actions)

        def make_policy(seed: int, predict=predict) -> Any:
            return lambda env, time_step: predict(flatten_observation(time_step.observation))

        row = {"network": network, "head": head, "smoothing": smoothing, "decode": how,
               **score(returns_of(task, make_policy, n_eval, steps), expert, random)}
        row |= fit_error(predict, held_raw, held_actions)
        if reacher:
            row["velocity_gain"] = velocity_gain(predict, held_raw)
        rows.append(row)
        print(f"{network:16s} {head:11s} smoothing {smoothing:4.2f} {how:6s}: "
              f"{row['pct_expert']:6.1f}% of expert [{row['pct_low']:.1f}, "
              f"{row['pct_high']:.1f}], success "
              f"{row['success']:.0f}%; {fit_text(row)}", flush=True)
    print("\n| network | head | target smoothing | decoding | % of expert [95% CI] |"
          " success % [Wilson 95%] | held-out error | reaching error | pointing away |"
          " edge steps, failed episodes |"
          " d a / d v |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['head']} | {r['smoothing']:g} | {r['decode']} | "
              f"{r['pct_expert']:.1f} [{r['pct_low']:.1f}, {r['pct_high']:.1f}] | "
              f"{r['success']:.1f} "
              f"[{r['success_low']:.1f}, {r['success_high']:.1f}] | {r['error']:.3f} | "
              f"{r['error_reaching']:.3f} | {100 * r['away_reaching']:.0f}% | "
              f"{100 * r['edge_failed']:.0f}% | "
              + (" / ".join(f"{g:+.2f}" for g in r["velocity_gain"]) if reacher else "-")
              + " |")
    result: dict[str, Any] = {"task": task, "transitions": len(x), "steps": args.steps,
                              "expert_return": expert, "random_return": random, "rows": rows}
    if args.checkpoint:
        from pac.evaluation.rollout import PolicyServer

        server = PolicyServer.load(args.checkpoint)
        ckpt = score(returns_of(task, lambda s: server.policy(task, s), n_eval, steps),
                     expert, random)
        ckpt |= fit_error(lambda obs: server.act(obs, task), held_raw, held_actions)
        if reacher:
            ckpt["velocity_gain"] = velocity_gain(lambda obs: server.act(obs, task), held_raw)
        result["checkpoint"] = {"path": args.checkpoint, **ckpt}
        print(f"\ncheckpoint {args.checkpoint} ({server.decode}): {ckpt['pct_expert']:.1f}% of "
              f"expert, success {ckpt['success']:.0f}%; {fit_text(ckpt)}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""theta' in training (§3.2, App. A.2): refreshed after every f_theta'-th update, never between,
and it is theta', not the online theta, that the loss of every update bootstraps from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pac.train import train
from pac.train.checkpoints import TARGET, set_rng_state, tag

from .conftest import train_config


def _online(ckpt: Path) -> dict[str, torch.Tensor]:
    """theta of a DeepSpeed ZeRO-0 checkpoint, named as in theta' (loaded without unpickling)."""
    module = torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=True)["module"]
    return {k.removeprefix("model."): v for k, v in module.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_target_lags_theta_and_is_what_the_loss_uses(data_root, mlflow_root, tmp_path):
    """Three updates with f_theta' = 2 and a checkpoint after each: theta' is still theta_0 after
    update 1, theta_2 after update 2 and still theta_2 after update 3 (theta read from the
    engine's own checkpoints); a target refreshed after every update, never, or one update off
    fails. Update 2's logged loss is recomputed outside the trainer from checkpoint 1 (theta_1,
    theta' = theta_0, the loss's generator) and the sampler's batch of that update: a trainer
    that hands the loss the online network as theta' logs another value."""
    from pac.data import TaskTokenizer, store_root, tokenizer_path
    from pac.data.sampler import TrajectorySampler
    from pac.data.store import EpisodeStore
    from pac.losses import compute_loss
    from pac.model import PerceiverActorCritic

    cfg = train_config(tmp_path / "run", mlflow_root, "train.steps=3", "train.log_every=1",
                       "train.checkpoint_every=1", "loss.target_update_period=2",
                       "train.warmup_steps=0", "train.lr_peak=3.0e-2",
                       "train.lr_end=1.0e-2")  # theta_1 visibly apart from theta_0
    result = train(cfg, data_root=data_root)
    root = result.checkpoint.parent
    theta = {k: _online(root / tag(k)) for k in (1, 2, 3)}
    target = {k: load_file(str(root / tag(k) / TARGET)) for k in (1, 2, 3)}
    assert not _same(theta[1], theta[2]) and not _same(theta[2], theta[3])  # every update moves
    assert not _same(target[1], theta[1]) and not _same(target[1], theta[2])
    assert _same(target[2], theta[2])
    assert _same(target[3], theta[2])

    sampler = TrajectorySampler(
        cfg, EpisodeStore(store_root(data_root)),
        TaskTokenizer.load(tokenizer_path(data_root), cfg.model.num_text_tokens),
        seed=cfg.data.seed,
    )
    batch = sampler.batch(1, cfg.train.global_batch)  # update 2 (step index 1), one rank
    nets = {}
    for name, weights in (("online", theta[1]), ("target", target[1])):
        nets[name] = PerceiverActorCritic(cfg.model)
        nets[name].load_state_dict(weights)
    rng = json.loads((root / tag(1) / "rng_rank0.json").read_text())

    def logged_loss(target_net: torch.nn.Module) -> dict[str, float]:
        generator = torch.Generator()
        set_rng_state(rng, generator)
        with torch.no_grad():
            out = compute_loss(nets["online"], target_net, batch, cfg.loss, 1, generator)
        return out.metrics

    logged = result.history[1]
    assert logged["step"] == 2
    expected, wrong = logged_loss(nets["target"]), logged_loss(nets["online"])
    for name in ("sampled_q", "target_q"):  # Q_theta'(s, a'), the TD target's mean
        assert logged[name] == pytest.approx(expected[name], abs=1e-5), name
        assert abs(wrong[name] - expected[name]) > 1e-4, name  # theta_1 in place of theta_0
    assert logged["loss/total"] == pytest.approx(expected["loss"], rel=1e-6)

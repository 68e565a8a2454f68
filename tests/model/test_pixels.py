"""Pixel inputs: pixels-only policies (proprioception masked), goal-image masks, modality
dropout (App. D.2.4) and serving with a camera equal to the training forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import TINY, tiny_checkpoint

from pac.config import ConfigError, load_config
from pac.data import EpisodeStore, TaskTokenizer
from pac.data.sampler import TrajectorySampler
from pac.data.store import Episode
from pac.evaluation.rollout import PolicyServer
from pac.model import PerceiverActorCritic

TASK = "point_mass.easy"  # 4 proprio values, 2 actions


def _logits(server: PolicyServer, proprio: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    obs = server.observation(proprio, TASK, None if image is None else image[None])
    with torch.inference_mode():
        return server.model.policy_logits(server.model.encode(obs)).numpy()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (80, 80, 3), dtype=np.uint8)


def test_a_pixels_only_policy_follows_its_camera_and_ignores_the_masked_proprio(tmp_path):
    pixels = PolicyServer.load(tiny_checkpoint(tmp_path / "pixels", "model.num_images=1",
                                               "model.proprio_input=false"))
    state = PolicyServer.load(tiny_checkpoint(tmp_path / "state", "model.num_images=1"))
    a, b = np.array([0.1, -0.2, 0.3, 0.0]), np.array([-0.4, 0.5, 0.0, 0.2])
    assert not pixels.observation(a, TASK, _image(0)[None]).proprio_mask.any()
    # the masked proprioception is still there (masked, not zeroed), and changes nothing
    assert pixels.observation(a, TASK, _image(0)[None]).proprio[0, :4].tolist() == \
        pytest.approx(a.tolist())
    np.testing.assert_array_equal(_logits(pixels, a, _image(0)), _logits(pixels, b, _image(0)))
    assert not np.allclose(_logits(pixels, a, _image(0)), _logits(pixels, a, _image(1)))
    # the same inputs reach a state-and-pixels policy through its proprio mask: the control
    assert not np.allclose(_logits(state, a, _image(0)), _logits(state, b, _image(0)))


def test_pixels_only_needs_a_camera():
    with pytest.raises(ConfigError, match="proprio_input=false .* needs model.num_images >= 1"):
        load_config(overrides=["model.proprio_input=false"])


def test_a_masked_goal_image_slot_changes_nothing_whatever_it_holds():
    cfg = load_config(overrides=[*TINY, "model.num_images=1", "model.num_goal_images=1"]).model
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg).eval()
    for name, p in model.named_parameters():
        if ".head." in name:
            p.data.add_(0.1 * torch.randn_like(p))
    from pac.model.examples import random_batch

    obs = random_batch(cfg, 1, 1).observation(slice(0, 1))
    outputs = []
    for seed, shown in ((0, False), (1, False), (2, True), (3, True)):
        obs.goal_images = torch.from_numpy(_image(seed))[None, None].clone()
        obs.goal_mask = torch.tensor([[shown]])
        with torch.inference_mode():
            outputs.append(model.policy_logits(model.encode(obs)).numpy())
    obs.goal_images = obs.goal_mask = None  # no goal modality given at all: padded by the model
    with torch.inference_mode():
        absent = model.policy_logits(model.encode(obs)).numpy()
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)  # masked: contents unseen
    np.testing.assert_allclose(outputs[0], absent, atol=1e-6)  # masked = absent
    assert not np.allclose(outputs[2], outputs[3])  # shown: the goal is an input


def _camera_store(root, episodes: int = 6, steps: int = 6) -> EpisodeStore:
    rng = np.random.default_rng(0)
    store = EpisodeStore(root)
    store.append_episodes("expert", [Episode(
        task=TASK, proprio=rng.normal(size=(steps, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
        rewards=rng.uniform(0, 1, steps).astype(np.float32),
        discounts=np.ones(steps, np.float32),
        images=rng.integers(0, 256, (steps, 1, 80, 80, 3), dtype=np.uint8))
        for _ in range(episodes)])
    return EpisodeStore(root)


def test_modality_dropout_drops_each_input_at_its_rate(tmp_path):
    cfg = load_config(overrides=[
        *TINY, "model.num_images=1", "data.trajectory_length=2", "data.drop_proprio=0.3",
        "data.drop_images=0.5", "data.drop_text=0.2",
        f"data.groups=[{{name: expert, tasks: [{TASK}]}}]"])
    tok = TaskTokenizer.train(tmp_path / "spm.model", cfg.data.tokenizer_vocab)
    sampler = TrajectorySampler(cfg, _camera_store(tmp_path / "episodes"), tok)
    dropped = []
    for step in range(100):
        arrays = sampler.batch_arrays(step, 128)
        dropped.append(np.stack([~arrays["proprio_mask"].any(1), ~arrays["image_mask"].any(1),
                                 ~arrays["text_mask"].any(1)], 1))
    dropped = np.concatenate(dropped)  # [12,800, 3]
    # independent draws, except that a trajectory losing all three keeps them all (p 0.03)
    none_left = 0.3 * 0.5 * 0.2
    assert not dropped.all(1).any()
    np.testing.assert_allclose(dropped.mean(0), [0.3 - none_left, 0.5 - none_left,
                                                 0.2 - none_left], atol=0.015)
    assert (dropped[:, 0] & dropped[:, 1]).mean() == pytest.approx(0.3 * 0.5 * 0.8, abs=0.015)
    # a pure function of the step; without dropout nothing is masked
    again = sampler.batch_arrays(7, 128)
    assert (again["image_mask"] == sampler.batch_arrays(7, 128)["image_mask"]).all()
    plain = TrajectorySampler(load_config(overrides=[
        *TINY, "model.num_images=1", "data.trajectory_length=2",
        f"data.groups=[{{name: expert, tasks: [{TASK}]}}]"]), sampler.store, tok)
    arrays = plain.batch_arrays(0, 128)
    assert arrays["proprio_mask"].any(1).all() and arrays["image_mask"].all()


def test_a_pixels_only_sampler_masks_the_proprio_it_still_carries(tmp_path):
    groups = f"data.groups=[{{name: expert, tasks: [{TASK}]}}]"
    store = _camera_store(tmp_path / "episodes")
    tok = TaskTokenizer.train(tmp_path / "spm.model", 64)
    arrays = TrajectorySampler(load_config(overrides=[
        *TINY, "model.num_images=1", "model.proprio_input=false", groups]),
        store, tok).batch_arrays(0, 16)
    assert not arrays["proprio_mask"].any() and arrays["image_mask"].all()
    assert (np.abs(arrays["proprio"][:, :, :4]).sum(-1) > 0).any()  # masked, not zeroed


def test_serving_with_a_camera_equals_the_training_forward_pass(tmp_path):
    from pac.checkpoint import save_inference_checkpoint

    cfg = load_config(overrides=[*TINY, "model.num_images=1", "data.trajectory_length=2",
                                 f"data.groups=[{{name: expert, tasks: [{TASK}]}}]"])
    store = _camera_store(tmp_path / "episodes")
    tok = TaskTokenizer.train(tmp_path / "spm.model", cfg.data.tokenizer_vocab)
    sampler = TrajectorySampler(cfg, store, tok)
    torch.manual_seed(0)
    model = PerceiverActorCritic(cfg.model).eval()
    for name, p in model.named_parameters():
        if ".head." in name:
            p.data.add_(0.1 * torch.randn_like(p))
    server = PolicyServer.load(save_inference_checkpoint(model, cfg, tmp_path / "policy",
                                                         tmp_path / "spm.model"))
    batch = sampler.batch(0, 4)
    _, _, episode, offset = sampler.sample_indices(0, 4)
    with torch.inference_mode():
        trained = model.policy_logits(model.encode(batch.observation(slice(0, 1)))).numpy()
    (shard,) = store.shards
    for b in range(4):
        row = int(shard.index["start"].iloc[episode[b]]) + int(offset[b])
        served = _logits(server, shard.proprio[row], shard.images[row, 0])
        np.testing.assert_allclose(served[0], trained[b], atol=1e-5)

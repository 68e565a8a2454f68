"""pac.evaluation.rollout: episodes in real dm_control, and a real checkpoint served at batch 1."""

import math

import numpy as np
import pytest
import torch
from eval_helpers import tiny_checkpoint

from pac.envs import make_env
from pac.evaluation.rollout import PolicyServer, expert_policy, random_policy, run_episode
from pac.model.distributions import expected_value, mode, sample

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_run_episode_expert_random_frames_and_truncation():
    task = "point_mass.easy"
    ep = run_episode(make_env(task, 1, 60), expert_policy(task), task)
    assert ep.length == 60 and ep.success
    assert ep.observations.shape == (61, 4) and ep.actions.shape == (60, 2)
    assert ep.rewards.dtype == np.float32 and ep.discounts.shape == (60,)
    assert ep.total_return == pytest.approx(float(ep.rewards.sum()))
    rnd = run_episode(make_env(task, 1, 60), random_policy(task, 0), task, max_steps=20,
                      record_frames=True, frame_size=32)
    assert rnd.length == 20 and not rnd.success
    assert rnd.frames.shape == (21, 32, 32, 3) and rnd.frames.dtype == np.uint8
    assert rnd.frames.std() > 0  # a real rendered image, not a blank buffer
    print("expert return", ep.total_return, "random return", rnd.total_return)


def test_run_episode_rejects_a_bad_policy_output():
    task = "cartpole.balance"
    with pytest.raises(ValueError, match="expected 1 finite values"):
        run_episode(make_env(task, 0, 10), lambda env, ts: np.zeros(3), task)
    with pytest.raises(ValueError, match="expected 1 finite values"):
        run_episode(make_env(task, 0, 10), lambda env, ts: np.array([np.nan]), task)


def test_server_builds_the_training_input_format(ckpt):
    server = PolicyServer.load(ckpt)
    env = make_env("reacher.easy", 0, 10)
    ts = env.reset()
    obs = server.observation(ts.observation, "reacher.easy")
    m = server.cfg.model
    assert obs.proprio.shape == (1, m.num_proprio) and obs.text.shape == (1, m.num_text_tokens)
    assert m.num_proprio == 8  # reacher: 6 observed values, its 2 angles read as (sin, cos)
    assert obs.proprio_mask[0].tolist() == [True] * 8
    ids, mask = server.tokenizer.encode("reacher.easy")
    assert obs.text[0].tolist() == ids.tolist() and obs.text_mask[0].tolist() == mask.tolist()
    flat = np.concatenate([np.ravel(v) for v in ts.observation.values()])
    assert torch.equal(server.observation(flat, "reacher.easy").proprio, obs.proprio)
    q0, q1 = (float(v) for v in ts.observation["position"])
    expected = [math.sin(q0), math.sin(q1), *flat[2:6], math.cos(q0), math.cos(q1)]
    np.testing.assert_allclose(obs.proprio[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    turned = flat.copy()
    turned[0] += 2 * math.pi  # the same arm pose, one more turn of the unbounded shoulder
    np.testing.assert_allclose(server.observation(turned, "reacher.easy").proprio.numpy(),
                               obs.proprio.numpy(), atol=1e-5)
    pm = server.observation(np.arange(4, dtype=np.float32), "point_mass.easy")  # no angles: raw
    assert pm.proprio[0].tolist() == [0, 1, 2, 3, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="expected 6 finite proprio values"):
        server.observation(flat[:5], "reacher.easy")
    with pytest.raises(ValueError, match="walker.stand needs num_proprio>=24"):
        server.observation(np.zeros(24), "walker.stand")
    with pytest.raises(ValueError, match="images given but the model takes none"):
        server.observation(flat, "reacher.easy", images=np.zeros((1, 80, 80, 3), np.uint8))


def test_decoding_argmax_sample_and_q_rerank(ckpt):
    task, x = "reacher.easy", np.linspace(-0.5, 0.5, 6).astype(np.float32)
    servers = {d: PolicyServer.load(ckpt, decode=d, num_candidates=8)
               for d in ("argmax", "sample", "q_rerank")}
    model, cfg = servers["argmax"].model, servers["argmax"].cfg
    obs = servers["argmax"].observation(x, task)
    amask = torch.tensor([[True, True]])
    with torch.no_grad():
        z = model.encode(obs)
        logits = model.policy_logits(z)
        greedy = mode(logits, amask)[0].numpy()
        cands = sample(logits, amask, 8, generator=torch.Generator().manual_seed(5))
        q = expected_value(model.q_logits(z, cands, amask), cfg.loss.value_min, cfg.loss.value_max)
    np.testing.assert_allclose(servers["argmax"].act(x, task), greedy, atol=1e-6)
    best = cands[0, q[0].argmax()].numpy()
    got = servers["q_rerank"].act(x, task, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(got, best, atol=1e-6)
    assert q[0].max() > q[0].min()  # the re-ranking had a real choice to make
    draws = [servers["sample"].act(x, task, generator=torch.Generator().manual_seed(s))
             for s in (1, 1, 2, 3, 4)]
    np.testing.assert_array_equal(draws[0], draws[1])  # same seed, same action
    assert len({tuple(d) for d in draws}) > 1
    for a in draws + [got]:
        assert a.shape == (2,) and np.all(np.abs(a) <= 1.0)
    assert servers["argmax"].inference_hz > 0 and len(servers["q_rerank"].latencies) == 1
    with pytest.raises(ValueError, match="decode 'beam' is not one of"):
        PolicyServer.load(ckpt, decode="beam")


def test_seeded_policy_episodes_repeat(ckpt):
    server = PolicyServer.load(ckpt, decode="sample")
    task = "cartpole.balance"
    eps = [run_episode(make_env(task, 3, 30), server.policy(task, seed=s), task) for s in (7, 7, 8)]
    np.testing.assert_array_equal(eps[0].actions, eps[1].actions)
    assert not np.array_equal(eps[0].actions, eps[2].actions)


def test_server_with_camera_images(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, "model.num_images=1", "model.num_goal_images=1",
                           "model.image_size=32", "model.resnet_channels=[4, 8, 8]")
    server = PolicyServer.load(ckpt)
    task = "point_mass.easy"
    ep = run_episode(make_env(task, 0, 5), server.policy(task), task)
    assert ep.length == 5 and len(server.latencies) == 5
    obs = server.observation(np.zeros(4), task, images=np.full((32, 32, 3), 7, np.uint8))
    assert obs.images.shape == (1, 1, 32, 32, 3) and obs.image_mask.tolist() == [[True]]
    assert server.observation(np.zeros(4), task).image_mask.tolist() == [[False]]
    with pytest.raises(ValueError, match="images must be uint8"):
        server.observation(np.zeros(4), task, images=np.zeros((1, 80, 80, 3), np.uint8))
    # bf16 with a camera image and the padding-only goal-image slot the ResNet skips
    frame = np.full((32, 32, 3), 7, np.uint8)
    bf16 = PolicyServer.load(ckpt, precision="bf16")
    np.testing.assert_allclose(bf16.act(np.zeros(4), task, frame),
                               server.act(np.zeros(4), task, frame), atol=0.05)


def test_bf16_inference_agrees_with_fp32(ckpt):
    """eval.precision=bf16 (autocast): the logits stay within bf16 rounding of fp32 and the
    greedy actions agree except at near-ties."""
    fp32 = PolicyServer.load(ckpt)
    bf16 = PolicyServer.load(ckpt, precision="bf16")
    task, rng = "reacher.easy", np.random.default_rng(0)
    xs = rng.normal(size=(40, 6)).astype(np.float32)
    amask = torch.tensor([[True, True]])
    agree = 0
    for x in xs:
        obs = fp32.observation(x, task)
        with torch.no_grad():
            ref = fp32.model.policy_logits(fp32.model.encode(obs))
            with bf16._autocast():
                low = bf16.model.policy_logits(bf16.model.encode(obs))
        assert low.dtype == torch.bfloat16  # the arithmetic really was bf16
        err = (low.float() - ref).norm() / ref.norm()
        assert err < 0.03, err
        a32, a16 = fp32.act(x, task), bf16.act(x, task)
        np.testing.assert_allclose(a16, mode(low.float(), amask)[0].numpy(), atol=1e-6)
        agree += int(np.allclose(a32, a16, atol=1e-6))
    print("greedy actions equal in", agree, "of", len(xs), "observations")
    assert agree >= 0.8 * len(xs), agree
    with pytest.raises(ValueError, match="precision 'fp16' is not one of fp32, bf16"):
        PolicyServer.load(ckpt, precision="fp16")

"""The lambda-weighted sampler (App. C.4): frequencies, looping, determinism, ranks, padding."""

import math

import numpy as np
import pytest
import torch
from data_helpers import make_cfg, synthetic_episode

from pac.data.sampler import TrajectorySampler, make_dataloader
from pac.data.store import EpisodeStore
from pac.data.tokenizer import TaskTokenizer

GROUPS = (
    "[{name: a, tasks: [point_mass.easy, reacher.easy], weight: 8, alpha: 0.75, beta: 38},"
    " {name: b, tasks: [cartpole.balance], weight: 2, alpha: 0.5, beta: 10},"
    " {name: c, tasks: [point_mass.easy], weight: 1}]"
)


@pytest.fixture
def tokenizer(tmp_path):
    return TaskTokenizer.train(tmp_path / "spm.model", vocab_size=64)


AP = "loss.variant=alpha_pac"  # the groups' own alpha, beta apply (App. C.5)


def _sampler(store, tokenizer, *extra, seed=0):
    cfg = make_cfg(GROUPS, AP, *extra)
    return TrajectorySampler(cfg, store, tokenizer, seed=seed)


def test_group_frequencies_match_lambda_over_100k(small_store, tokenizer):
    sampler = _sampler(small_store, tokenizer)
    group, dataset, _, _ = sampler.sample_indices(step=0, batch_size=100_000)
    freq = np.bincount(group, minlength=3) / group.size
    print("group frequencies", freq.round(4), "lambda shares", np.array([8, 2, 1]) / 11)
    assert np.abs(freq - np.array([8, 2, 1]) / 11).max() < 0.01
    in_a = dataset[group == 0]
    assert abs(np.mean(in_a == 0) - 0.5) < 0.01  # uniform over the group's two datasets
    # the same holds from an arbitrary later step and rank
    group, *_ = sampler.sample_indices(step=12345, batch_size=25_000, rank=3, world_size=4)
    freq = np.bincount(group, minlength=3) / group.size
    assert np.abs(freq - np.array([8, 2, 1]) / 11).max() < 0.01


def test_datasets_loop_deterministically_and_are_never_exhausted(small_store, tokenizer):
    sampler = _sampler(small_store, tokenizer, "data.trajectory_length=5")
    ds = sampler.datasets[2][0]  # group c: 6 episodes of 7 steps -> 7 windows each
    assert ds.num_windows == 42
    group, _, episode, offset = sampler.sample_indices(0, 20_000)
    sel = group == 2
    windows = ds.first_window[episode[sel]] + offset[sel]
    passes = len(windows) // 42
    assert passes > 20
    for p in range(passes):  # every pass visits each window exactly once
        assert sorted(windows[p * 42:(p + 1) * 42]) == list(range(42))
    assert not np.array_equal(windows[:42], windows[42:84])  # a new order each pass


def test_batch_is_a_pure_function_of_seed_step_rank(small_store, tokenizer):
    s1 = _sampler(small_store, tokenizer)
    s2 = _sampler(EpisodeStore(small_store.root), tokenizer)
    b1, b2 = s1.batch(7, 16), s2.batch(7, 16)
    for name in ("proprio", "actions", "rewards", "text", "group", "step_mask"):
        assert torch.equal(getattr(b1, name), getattr(b2, name))
    assert not torch.equal(s1.batch(8, 16).proprio, b1.proprio)
    other_seed = _sampler(small_store, tokenizer, seed=1).batch(7, 16)
    assert not torch.equal(other_seed.proprio, b1.proprio)


def test_ranks_are_disjoint_and_union_is_the_one_rank_batch(small_store, tokenizer):
    sampler = _sampler(small_store, tokenizer)
    whole = sampler.batch(3, 12, rank=0, world_size=1)
    parts = [sampler.batch(3, 4, rank=r, world_size=3) for r in range(3)]
    drawn = np.concatenate([np.stack(sampler.sample_indices(3, 4, r, 3), 1) for r in range(3)])
    assert len({tuple(x) for x in drawn}) == 12  # no trajectory drawn twice across ranks
    assert torch.equal(torch.cat([p.proprio for p in parts]), whole.proprio)
    assert torch.equal(torch.cat([p.group for p in parts]), whole.group)


def test_padding_masks_alpha_beta(small_store, tokenizer):
    sampler = _sampler(small_store, tokenizer, "data.trajectory_length=10")
    batch = sampler.batch(0, 64)
    m = sampler.cfg.model
    assert batch.proprio.shape == (64, 10, m.num_proprio)
    assert batch.actions.shape == (64, 10, m.num_actions)
    assert batch.text.shape == batch.text_mask.shape == (64, m.num_text_tokens)
    for b in range(64):
        n_p = int(batch.proprio_mask[b].sum())
        assert n_p in (4, 5, 8) and not batch.proprio[b, :, n_p:].any()  # padded dims are zero
        n_a = int(batch.action_mask[b].sum())
        assert not batch.actions[b, :, n_a:].any()
        valid = batch.step_mask[b]
        assert valid[0] and not batch.rewards[b, ~valid].any()  # steps past the end are padding
    short = (batch.group == 2).numpy()  # group c: episodes of 7 steps < T=10: padded windows
    _, _, _, offset = sampler.sample_indices(0, 64)
    assert (batch.step_mask[short].sum(1).numpy() == 7 - offset[short]).all()
    a = batch.alpha[batch.group == 0]
    assert torch.all(a == 0.75) and torch.all(batch.beta[batch.group == 1] == 10.0)
    cfg = sampler.cfg
    assert torch.all(batch.alpha[batch.group == 2] == cfg.loss.alpha)  # group default


def test_stored_reacher_angles_reach_the_model_as_sin_cos(small_store, tokenizer):
    """Reacher's raw [q0, q1, d0, d1, v0, v1] arrives as [sin q0, sin q1, d0, d1, v0, v1,
    cos q0, cos q1]; tasks without angles arrive as stored."""
    sampler = _sampler(small_store, tokenizer, "data.trajectory_length=3")
    batch = sampler.batch(0, 64)
    group, dataset, episode, offset = sampler.sample_indices(0, 64)
    seen = set()
    for b in range(64):
        ds = sampler.datasets[group[b]][dataset[b]]
        shard = ds.shards[ds.shard_of[episode[b]]]
        raw = [float(v) for v in shard.proprio[ds.start[episode[b]] + offset[b]]]
        if ds.task.startswith("reacher"):
            raw = [math.sin(raw[0]), math.sin(raw[1]), *raw[2:], math.cos(raw[0]),
                   math.cos(raw[1])]
        np.testing.assert_allclose(batch.proprio[b, 0, :len(raw)].numpy(), raw, atol=1e-6)
        assert int(batch.proprio_mask[b].sum()) == len(raw)
        seen.add(ds.task)
    assert "reacher.easy" in seen and "point_mass.easy" in seen


def test_success_only_samples_successful_episodes(small_store, tokenizer):
    with pytest.warns(UserWarning, match="data.groups.b: no successful episodes"):
        sampler = _sampler(small_store, tokenizer, "data.success_only=true")
    ds = sampler.datasets[2][0]
    assert len(ds.start) == 3  # half of group c
    idx = small_store.episodes.query("group == 'c' and success")
    assert sorted(ds.start.tolist()) == sorted(idx["start"].tolist())
    assert sampler.weights.tolist() == [8.0, 0.0, 1.0]  # group b has no success at all
    group, _, episode, _ = sampler.sample_indices(0, 5000)
    assert 1 not in group
    succ = small_store.episodes.query("group == 'c'")["success"].to_numpy()
    starts = ds.start[episode[group == 2]]
    index_c = small_store.episodes.query("group == 'c'").set_index("start")
    assert index_c.loc[starts, "success"].all() and not succ.all()


def test_dataloader_workers_resume_exactly(small_store, tokenizer):
    sampler = _sampler(small_store, tokenizer)
    loader = make_dataloader(sampler, batch_size=8, start_step=5, num_workers=2)
    got = [b for _, b in zip(range(6), loader)]
    for k, batch in enumerate(got):
        expected = sampler.batch(5 + k, 8)
        assert torch.equal(batch.proprio, expected.proprio)
        assert torch.equal(batch.text, expected.text)


def test_groups_and_sizes_are_checked(small_store, tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"data.groups.d: the store at .* has no episodes"):
        TrajectorySampler(make_cfg(GROUPS[:-1] + ", {name: d, tasks: [reacher.easy]}]", AP),
                          small_store, tokenizer)
    with pytest.raises(ValueError, match=r"task\(s\) \['cartpole.balance'\] have no episodes"):
        TrajectorySampler(make_cfg(GROUPS.replace("name: c, tasks: [point_mass.easy]",
                                                  "name: c, tasks: [cartpole.balance]"), AP),
                          small_store, tokenizer)
    big = TaskTokenizer.train(tmp_path / "big.model", vocab_size=300)
    with pytest.raises(ValueError, match="raise model.vocab_size"):
        TrajectorySampler(make_cfg(GROUPS, AP), small_store, big)
    rng = np.random.default_rng(0)
    cam_store = EpisodeStore(tmp_path / "cams")
    for g in ("a", "b", "c"):
        task = {"a": "reacher.easy", "b": "cartpole.balance", "c": "point_mass.easy"}[g]
        cam_store.append_episodes(g, [synthetic_episode(task, 6, rng, cameras=1)])
    cams = TrajectorySampler(
        make_cfg(GROUPS.replace("point_mass.easy, reacher.easy", "reacher.easy"),
                 "model.num_images=2", "data.trajectory_length=5", AP),
        cam_store, tokenizer,
    ).batch(0, 4)
    assert cams.images.shape == (4, 5, 2, 80, 80, 3) and cams.images.dtype == torch.uint8
    assert cams.image_mask[:, 0].all() and not cams.image_mask[:, 1].any()
    assert cams.images[:, :, 0].float().std() > 0 and not cams.images[:, :, 1].any()


def test_every_step_reaches_a_loss_position_and_final_observations_follow(tmp_path, tokenizer):
    """Episodes of L = 7 with T = 5: each step, the last one included, is at a loss position
    0..T-2 of some window with its own reward; a truncated episode's o_L sits right after its
    last step (observed, not a transition); a terminated one has nothing there."""
    from pac.data.store import Episode

    store = EpisodeStore(tmp_path / "episodes")
    eps = []
    for i, terminal in enumerate((True, False)):
        proprio = np.arange(7 * 4, dtype=np.float32).reshape(7, 4) + 100 * i
        eps.append(Episode(
            task="point_mass.easy", proprio=proprio, actions=np.zeros((7, 2), np.float32),
            rewards=np.arange(1, 8, dtype=np.float32) + 10 * i,  # r_t = t + 1 (+ 10)
            discounts=np.array([1] * 6 + [0 if terminal else 1], np.float32),
            final_proprio=None if terminal else np.full(4, -5.0, np.float32),
        ))
    store.append_episodes("c", eps)
    cfg = make_cfg("[{name: c, tasks: [point_mass.easy]}]", "data.trajectory_length=5",
                   "loss.value_max=400.0")  # returns of rewards up to 17 at gamma 0.95
    sampler = TrajectorySampler(cfg, EpisodeStore(store.root), tokenizer)
    _, _, episode, offset = sampler.sample_indices(0, 14)  # one pass: all 2 x 7 windows
    batch = sampler.batch(0, 14)
    seen = {(0, t): False for t in range(7)} | {(1, t): False for t in range(7)}
    for b in range(14):
        e, o = int(episode[b]), int(offset[b])
        for pos in range(4):  # loss positions
            if batch.step_mask[b, pos]:
                step = o + pos
                assert batch.rewards[b, pos] == step + 1 + 10 * e  # its own reward
                seen[(e, step)] = True
        after = 7 - o  # the position just past the last step
        if after < 5:
            assert not batch.step_mask[b, after]
            assert bool(batch.observed[b, after]) == (e == 1)  # o_L only when truncated
            if e == 1:
                assert torch.all(batch.proprio[b, after, :4] == -5.0)
    assert all(seen.values()), [k for k, v in seen.items() if not v]


def test_a_time_limit_is_a_truncation_from_simulation_to_batch(tmp_path, tokenizer):
    """point_mass.easy never terminates: dm_control ends it by its time limit with discount 1 at
    every step, the last included (dm_control.rl.control.Environment). Generated episodes of
    L = 6 keep d = 1 and store o_L, and in every window holding the last step that step is a TD
    transition with discount 1 whose successor is o_L (observed, not a step). A time limit taken
    for a termination (d = 0) would make its target r alone."""
    from pac.data.generate import generate_group
    from pac.losses import td_valid

    cfg = make_cfg("[{name: g, tasks: [point_mass.easy], quality: 0.5, episodes_per_task: 2}]",
                   "data.episode_steps=6", "data.trajectory_length=4")
    generate_group(cfg, "g", tmp_path / "episodes", workers=1, progress=False)
    store = EpisodeStore(tmp_path / "episodes")
    assert (store.episodes["length"] == 6).all() and store.episodes["has_final"].all()
    assert np.all(np.asarray(store.shards[0].discounts) == 1.0)
    sampler = TrajectorySampler(cfg, store, tokenizer)
    _, _, _, offset = sampler.sample_indices(0, 12)  # one pass: all 2 x 6 windows
    batch = sampler.batch(0, 12)
    assert torch.all(batch.discounts[batch.step_mask] == 1.0)
    has_target = td_valid(batch)
    ends = 0
    for b in range(12):
        last = 5 - int(offset[b])  # the position of the episode's last step
        if last < 3:  # a loss position (0..T-2)
            assert has_target[b, last] and batch.discounts[b, last] == 1.0
            assert batch.observed[b, last + 1] and not batch.step_mask[b, last + 1]
            ends += 1
    assert ends == 2 * 3  # offsets 3, 4, 5 of each episode


def test_filtered_bc_alone_samples_only_successful_episodes(small_store, tokenizer):
    """FilteredBC (App. C.5) is BC on the successful episodes: loss.variant=filtered_bc, with no
    data.success_only given, draws only (and every one of) group c's 3 successful episodes out
    of 6; saying data.success_only=false with it is an error."""
    from pac.config import ConfigError

    groups = "[{name: c, tasks: [point_mass.easy]}]"
    variant = ("loss.variant=filtered_bc", "loss.alpha=1.0", "loss.beta=0.0")
    sampler = TrajectorySampler(make_cfg(groups, *variant), small_store, tokenizer)
    _, _, episode, _ = sampler.sample_indices(0, 500)
    index_c = small_store.episodes.query("group == 'c'").set_index("start")
    drawn = sampler.datasets[0][0].start[episode]
    assert index_c.loc[drawn, "success"].all()
    assert set(drawn.tolist()) == set(index_c.index[index_c["success"]].tolist())
    assert (~index_c["success"]).sum() == 3  # the filter has something to remove
    with pytest.raises(ConfigError, match="data.success_only=false with loss.variant=filtered"):
        make_cfg(groups, *variant, "data.success_only=false")


def test_each_step_keeps_its_own_discount(tmp_path, tokenizer):
    """Hand-built episodes whose discounts all differ (d_t = 0.9 - 0.01 t - 0.1 i; episode 0's
    last step terminates, d = 0): in every window each valid position carries the discount of
    its own step, beside that step's reward and observation, and padding carries 0. Discounts
    shifted by one row against rewards and observations (d_{t+1} or d_{t-1} at step t) fail."""
    from pac.data.store import Episode

    store = EpisodeStore(tmp_path / "episodes")
    d = {}
    eps = []
    for i in range(2):
        d[i] = np.array([0.9 - 0.01 * t - 0.1 * i for t in range(6)], np.float32)
        if i == 0:
            d[i][-1] = 0.0
        eps.append(Episode(
            task="point_mass.easy", actions=np.zeros((6, 2), np.float32),
            proprio=np.repeat(np.arange(6, dtype=np.float32)[:, None] + 100 * i, 4, axis=1),
            rewards=np.arange(6, dtype=np.float32) + 10 * i, discounts=d[i],
            final_proprio=None if i == 0 else np.full(4, -5.0, np.float32),
        ))
    assert len(np.unique(np.concatenate([d[0], d[1]]))) == 12  # all different
    store.append_episodes("c", eps)
    cfg = make_cfg("[{name: c, tasks: [point_mass.easy]}]", "data.trajectory_length=4",
                   "loss.value_max=400")  # rewards up to 15: returns up to 300
    sampler = TrajectorySampler(cfg, EpisodeStore(store.root), tokenizer)
    _, _, episode, offset = sampler.sample_indices(0, 12)  # one pass: all 2 x 6 windows
    batch = sampler.batch(0, 12)
    for b in range(12):
        e, o = int(episode[b]), int(offset[b])
        for pos in range(4):
            step = o + pos
            if step < 6:
                assert batch.step_mask[b, pos]
                assert batch.proprio[b, pos, 0] == step + 100 * e  # its own observation
                assert batch.rewards[b, pos] == step + 10 * e  # its own reward
                assert batch.discounts[b, pos] == d[e][step], (e, step)  # its own discount
            else:
                assert not batch.step_mask[b, pos] and batch.discounts[b, pos] == 0.0

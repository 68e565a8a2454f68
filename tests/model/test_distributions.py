"""Policy/value categoricals: bins, masked log-probabilities, sampling, mode, expectation."""

import math

import torch

from pac.model.distributions import (
    actions_to_bins,
    bin_centers,
    entropy,
    expected_value,
    log_prob,
    mode,
    sample,
)


def test_bins_round_trip_and_clip():
    centers = bin_centers(101)
    assert centers[0] == -1 and centers[-1] == 1 and abs(centers[50]) < 1e-6
    assert torch.equal(actions_to_bins(centers, 101), torch.arange(101))
    clipped = actions_to_bins(torch.tensor([-3.0, 0.004, 0.016, 9.0]), 101)
    assert clipped.tolist() == [0, 50, 51, 100]


def test_log_prob_sums_valid_dimensions_only():
    logits = torch.randn(2, 3, 5)
    actions = torch.tensor([[-1.0, 0.0, 1.0], [0.5, -0.5, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    log_p = torch.log_softmax(logits, -1)
    expected = torch.stack([
        log_p[0, 0, 0] + log_p[0, 1, 2] + log_p[0, 2, 4],
        log_p[1, 0, 3] + log_p[1, 1, 1],  # the padded third dimension is ignored
    ])
    assert torch.allclose(log_prob(logits, actions, mask), expected)
    many = actions[:, None].expand(2, 4, 3)  # S = 4 actions per state -> [B, S]
    assert torch.allclose(log_prob(logits, many, mask), expected[:, None].expand(2, 4))


def test_sample_follows_probabilities_and_zeroes_padding():
    logits = torch.log(torch.tensor([[[0.7, 0.0, 0.3]], [[0.2, 0.8, 0.0]]]) + 1e-12)
    logits = logits.expand(2, 2, 3).clone()
    mask = torch.tensor([[True, True], [True, False]])
    g = torch.Generator().manual_seed(0)
    a = sample(logits, mask, 4000, generator=g)
    assert a.shape == (2, 4000, 2)
    assert set(a[0, :, 0].unique().tolist()) <= {-1.0, 1.0}
    assert abs((a[0, :, 0] == -1).float().mean().item() - 0.7) < 0.03
    assert abs((a[1, :, 0] == 0).float().mean().item() - 0.8) < 0.03
    assert (a[1, :, 1] == 0).all()  # padded dimension
    again = sample(logits, mask, 4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, again)


def test_mode_entropy_and_expected_value():
    logits = torch.tensor([[[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    assert mode(logits, mask).tolist() == [[0.0, 0.0]]
    assert mode(logits, torch.tensor([[True, True]])).tolist() == [[0.0, -1.0]]
    uniform = torch.zeros(1, 2, 3)
    assert torch.allclose(entropy(uniform, torch.tensor([[True, True]])),
                          torch.tensor([2 * math.log(3)]))
    value_logits = torch.log(torch.tensor([0.25, 0.5, 0.25, 0.0]) + 1e-30)
    assert torch.allclose(expected_value(value_logits, 0.0, 30.0), torch.tensor(10.0))

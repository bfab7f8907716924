"""Paired comparisons of subnets on the same test examples (nas.significance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.evaluation import evaluate_subnet, subnet_correct
from nas.significance import bootstrap_between, paired_difference
from search_spaces import mobilenetv3


def _correct(rng: np.random.Generator, n: int, accuracy: float) -> np.ndarray:
    return rng.random(n) < accuracy


def test_paired_difference_counts_the_discordant_examples_and_matches_scipy():
    from scipy.stats import binomtest

    rng = np.random.default_rng(1)
    a, b = _correct(rng, 5000, 0.97), _correct(rng, 5000, 0.96)
    d = paired_difference(a, b)
    assert d.a_only == int((a & ~b).sum()) and d.b_only == int((b & ~a).sum())
    assert d.difference == pytest.approx(100 * (a.mean() - b.mean()))
    assert d.p_value == pytest.approx(binomtest(d.a_only, d.a_only + d.b_only, 0.5).pvalue, rel=1e-9)
    same = paired_difference(a, a)
    assert (same.difference, same.sd, same.p_value, same.a_only) == (0.0, 0.0, 1.0, 0)
    # torch bool tensors (what subnet_correct returns) and 0/1 arrays are taken as they are
    assert paired_difference(torch.from_numpy(a), b.astype(np.int64)) == d


def test_the_standard_error_is_the_spread_of_the_difference_over_redrawn_test_sets():
    rng = np.random.default_rng(2)
    n = 10_000
    b = _correct(rng, n, 0.98)
    a = b.copy()
    flip = rng.random(n) < 0.01  # the two subnets disagree on about 1% of the examples
    a[flip] = ~a[flip]
    d = paired_difference(a, b)
    draws = rng.integers(0, n, size=(2000, n))
    spread = 100 * (a[draws].mean(1) - b[draws].mean(1)).std()
    assert d.sd == pytest.approx(spread, rel=0.1)
    assert 0.08 < d.sd < 0.12  # sqrt(100) / 10,000 images


def test_bootstrap_between_separates_clear_orderings_from_ties():
    rng = np.random.default_rng(3)
    n = 10_000
    lo = _correct(rng, n, 0.96)
    hi = lo | (rng.random(n) < 0.6)  # about 2.4 points above lo
    clearly_between = [lo | (rng.random(n) < 0.3) for _ in range(5)]
    r = bootstrap_between(lo, hi, clearly_between, rounds=300)
    assert (r.observed, r.total, r.all_between, r.rounds) == (5, 5, 1.0, 300)
    # subnets that are lo with 100 examples moved each way: about as often below lo as above it
    ties = []
    for _ in range(10):
        t = lo.copy()
        t[rng.choice(np.flatnonzero(lo), 100, replace=False)] = False
        t[rng.choice(np.flatnonzero(~lo), 100, replace=False)] = True
        ties.append(t)
    r = bootstrap_between(lo, hi, ties, rounds=300)
    assert r.all_between < 0.05 and r.count_low < r.count_median < r.count_high <= 10
    assert r.observed == sum(lo.mean() <= t.mean() <= hi.mean() for t in ties)
    assert bootstrap_between(lo, hi, ties, rounds=300) == r  # seeded
    assert bootstrap_between(lo, hi, ties, rounds=300, seed=1) != r


def test_bad_input_is_refused_with_the_fix():
    a = np.ones(10, bool)
    with pytest.raises(ValueError, match="same examples"):
        paired_difference(a, np.ones(9, bool))
    with pytest.raises(ValueError, match="bool or 0/1"):
        paired_difference(a, np.full(10, 0.5))
    with pytest.raises(ValueError, match="1-d array"):
        paired_difference(np.ones((2, 5), bool), a)
    with pytest.raises(ValueError, match="same examples"):
        bootstrap_between(a, a, [np.ones(8, bool)])
    with pytest.raises(ValueError, match="no subnets"):
        bootstrap_between(a, a, [])
    with pytest.raises(ValueError, match="rounds=0"):
        bootstrap_between(a, a, [a], rounds=0)


def test_subnet_correct_is_what_evaluate_subnet_averages():
    torch.manual_seed(0)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    y[:48] = 3  # an untrained net predicts one class for most inputs: some right, some wrong
    cfg = net.space.sample(5)
    ok = subnet_correct(net, cfg, (x, y), calib_batches=1, batch_size=40)
    assert ok.shape == (96,) and ok.dtype == torch.bool and 0 < int(ok.sum()) < 96
    assert evaluate_subnet(net, cfg, (x, y), calib_batches=1, batch_size=40) == 100.0 * int(ok.sum()) / 96

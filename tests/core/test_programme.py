"""The one dynamic programme behind the decisions and the length limits: a limit that never
binds gives exactly the cuts of no limit (random probabilities and settings), the scores
follow the unconstrained rule (the network's own cuts, or p >= threshold), the length prior
against brute force, and the sliding-window maximum against a scan of every window."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmenter.core.decisions import LengthPrior, cuts
from segmenter.core.limits import best_cuts, limits
from segmenter.core.programme import cut_scores, programme
from segmenter.core.spans import joined


@st.composite
def decision_cases(draw):
    n = draw(st.integers(1, 30))
    p = draw(st.lists(st.sampled_from([0.0, 0.2, 0.375, 0.5, 0.7, 1.0]) | st.floats(0, 1), min_size=n, max_size=n))
    p[-1] = 0.0
    default = sorted(draw(st.sets(st.integers(0, max(0, n - 2)), max_size=n)))
    m = draw(st.integers(1, 4))
    mode = draw(st.sampled_from(["own", "threshold", "num_segments"]))
    threshold = draw(st.sampled_from([0.2, 0.375, 0.5]) | st.floats(0.01, 1.0)) if mode == "threshold" else None
    k = draw(st.integers(1, n // m)) if mode == "num_segments" and n >= m else None
    point = draw(st.sampled_from([0.5, 0.375]) | st.floats(0.01, 0.99))
    prior = None
    if draw(st.booleans()):
        prior = LengthPrior(mu=draw(st.floats(0, 3)), sigma=draw(st.floats(0.1, 1.5)), weight=draw(st.floats(0, 3)))
    return p, default, m, threshold, k, point, prior


@settings(max_examples=400, deadline=None, derandomize=True)
@given(case=decision_cases())
def test_a_limit_that_never_binds_changes_no_cut(case):
    p, default, m, threshold, k, point, prior = case
    n = len(p)
    costs = None if prior is None or k is not None else prior.costs(n, min_units=m)
    steer = {"threshold": threshold, "num_segments": k, "min_segment_units": m}
    free = cuts(p, default, **steer, decision_point=point, prior=costs)
    text, spans = joined([f"u{i}" for i in range(n)])
    lim = limits(max_segment_chars=len(text) + m, min_segment_units=m)  # longer than any segment
    bounded = best_cuts(
        p, text, spans, lim, num_segments=k, threshold=threshold, candidates=default, decision_point=point, prior=costs
    )
    assert bounded == free


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=decision_cases())
def test_with_nothing_binding_the_scores_give_the_rule_itself(case):
    p, default, _, threshold, _, point, _ = case
    n = len(p)
    text, spans = joined([f"u{i}" for i in range(n)])
    lim = limits(max_segment_chars=len(text) + 1)
    own = best_cuts(p, text, spans, lim, candidates=default, decision_point=point)
    assert own == [i for i in default if i < n - 1]  # the network's labels, whatever their probabilities
    if threshold is not None:
        assert best_cuts(p, text, spans, lim, threshold=threshold) == [i for i in range(n - 1) if p[i] >= threshold]


def test_the_network_cuts_where_the_calibrated_probability_is_below_one_half():
    # A calibrator that moved the decision point to 0.375: the network's cuts have p in [0.375, 0.5).
    p = [0.45, 0.1, 0.4, 0.9, 0.2, 0.0]
    text, spans = joined(["a", "b", "c", "d", "e", "f"])
    lim = limits(max_segment_chars=1000)
    assert best_cuts(p, text, spans, lim, candidates=[0, 2, 3], decision_point=0.375) == [0, 2, 3]
    assert best_cuts(p, text, spans, lim) == [3]  # p > 0.5: what the limits decided before
    tight = limits(max_segment_chars=len("a b c d"))  # 4 units at most: a cut must come in 0..3
    assert best_cuts(p, text, spans, tight, candidates=[], decision_point=0.375) == [3]


def brute_force(score, prior, m, k=None):
    n, best = len(score), None
    for r in range(n):
        for combo in itertools.combinations(range(n - 1), r):
            bounds = [-1, *combo, n - 1]
            lengths = [b - a for a, b in zip(bounds, bounds[1:])]
            if min(lengths) < m or max(lengths) > len(prior) - 1 or (k is not None and len(lengths) != k):
                continue
            total = sum(score[i] for i in combo) + sum(prior[length] for length in lengths)
            best = total if best is None else max(best, total)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_the_length_prior_against_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    p = [rng.uniform(0.01, 0.99) for _ in range(n - 1)] + [0.0]
    m = rng.randint(1, 3)
    prior = LengthPrior(mu=rng.uniform(0, 2.5), sigma=rng.uniform(0.2, 1.2), weight=rng.uniform(0, 3))
    costs = prior.costs(n, min_units=m)
    score = cut_scores(p, candidates=None)
    k = rng.choice([None, rng.randint(1, n)])
    expected = brute_force(score, costs, min(m, n), k)
    got = programme(score, [0] * n, min(m, n), k, prior=costs)
    if expected is None:
        assert got is None
        return
    bounds = [-1, *got, n - 1]
    total = sum(score[i] for i in got) + sum(costs[b - a] for a, b in zip(bounds, bounds[1:]))
    assert total == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(30))
def test_the_sliding_maximum_equals_a_scan_of_every_window(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    score = rng.normal(size=n)
    score[-1] = 0.0
    lo = np.maximum.accumulate(np.maximum(0, np.arange(n) - rng.integers(1, 12, size=n))).tolist()
    m = int(rng.integers(1, 4))
    k = None if seed % 2 else int(rng.integers(1, 6))
    flat = np.zeros(n + 1)  # a prior that adds nothing takes the scanning path
    assert programme(score, lo, m, k) == programme(score, lo, m, k, prior=flat)


def test_a_long_segment_under_the_prior_is_cut():
    # 60 units, the network cutting nowhere: a prior of segments around 10 units long cuts it.
    p = [0.2] * 59 + [0.0]
    prior = LengthPrior(mu=np.log(10), sigma=0.3, weight=1.0)
    got = cuts(p, [], prior=prior.costs(60))
    assert 4 <= len(got) <= 6
    assert cuts(p, [], prior=None) == []


def test_a_fitted_prior_round_trips_and_refuses_bad_values():
    prior = LengthPrior.fit([5, 6, 8, 12, 7], weight=0.5, on=True, fitted_on="val")
    assert prior.mu == pytest.approx(np.log([5, 6, 8, 12, 7]).mean()) and prior.segments == 5
    assert LengthPrior.from_dict(prior.to_dict()) == prior
    assert LengthPrior.from_dict(None) is None
    with pytest.raises(ValueError, match="sigma=-1"):
        LengthPrior(mu=1.0, sigma=-1, weight=1.0)
    with pytest.raises(ValueError, match="two or more segment lengths"):
        LengthPrior.fit([3])
    for damaged, name in (
        ({"mu": "x"}, "mu"),
        ({"on": "yes"}, "on="),
        ({"pk": {"1,0": "low"}}, "pk="),
        ({"mu": 1e9}, "mu"),
    ):
        with pytest.raises(ValueError, match=f"length prior {name}"):
            LengthPrior.from_dict({**prior.to_dict(), **damaged})

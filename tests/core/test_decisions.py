"""Steered decisions: threshold, num_segments (DP against brute force), min_segment_units."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from segmenter.core.decisions import best_k, cuts


def brute_force(p, k, m):
    """Every set of k cuts, the best by total log-odds among those leaving segments >= m."""
    n, best, arg = len(p), -math.inf, None
    for combo in itertools.combinations(range(n - 1), k):
        bounds = [-1, *combo, n - 1]
        if any(b - a < m for a, b in zip(bounds, bounds[1:])):
            continue
        s = sum(math.log(p[i]) - math.log(1 - p[i]) for i in combo)
        if s > best:
            best, arg = s, list(combo)
    return arg


@pytest.mark.parametrize("seed", range(20))
def test_best_k_equals_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(4, 11)
    p = [rng.uniform(0.01, 0.99) for _ in range(n)]
    m = rng.randint(1, 3)
    k = rng.randint(0, max(0, n // m - 1))
    expected = brute_force(p, k, m)
    if expected is None:
        with pytest.raises(ValueError):
            best_k(p, k, min_segment_units=m)
    else:
        got = best_k(p, k, min_segment_units=m)
        score = lambda c: sum(math.log(p[i]) - math.log(1 - p[i]) for i in c)  # noqa: E731
        assert score(got) == pytest.approx(score(expected)) and len(got) == k


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_num_segments_gives_exactly_k_segments(k):
    p = [0.9, 0.1, 0.8, 0.05, 0.7, 0.2, 0.6, 0.3, 0.1, 0.0]
    got = cuts(p, default=[0], num_segments=k)
    assert len(got) == k - 1 and all(0 <= c < len(p) - 1 for c in got)


def test_threshold_and_min_segment_units():
    p = [0.1, 0.6, 0.7, 0.2, 0.9, 0.1, 0.0]
    assert cuts(p, default=[], threshold=0.5) == [1, 2, 4]
    assert cuts(p, default=[], threshold=0.8) == [4]
    # 2 and 4 kept (most probable first), 1 dropped: it would leave a 1-unit segment
    assert cuts(p, default=[], threshold=0.5, min_segment_units=2) == [2, 4]
    assert cuts(p, default=[1, 2], min_segment_units=2) == [2]  # the network's own cuts, filtered
    assert cuts(p, default=[1, 2]) == [1, 2]
    got = cuts(p, default=[], num_segments=3, min_segment_units=2)
    bounds = [-1, *got, len(p) - 1]
    assert len(got) == 2 and min(b - a for a, b in zip(bounds, bounds[1:])) >= 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 0.5, "num_segments": 2}, "one or the other"),
        ({"threshold": 1.5}, r"threshold=1.5"),
        ({"num_segments": 0}, "num_segments=0"),
        ({"min_segment_units": 0}, "min_segment_units=0"),
        ({"num_segments": 4, "min_segment_units": 2}, "need 8 units; the document has 5"),
    ],
)
def test_impossible_settings_name_their_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cuts([0.5] * 5, default=[], **kwargs)


def test_check_documents_names_the_document_that_cannot_be_met():
    from segmenter.core.decisions import check_documents

    check_documents([5, 4], names=["a.txt", "b.txt"], threshold=None, num_segments=2, min_segment_units=2)
    with pytest.raises(
        ValueError,
        match=r"^b\.txt: num_segments=3 segments of min_segment_units=2 or more units need 6 units; the document has 4$",
    ):
        check_documents([6, 4], names=["a.txt", "b.txt"], threshold=None, num_segments=3, min_segment_units=2)
    with pytest.raises(ValueError, match=r"^num_segments=5 .* the document has 4$"):  # no names: the message alone
        check_documents([4], threshold=None, num_segments=5, min_segment_units=1)

"""Where to cut, decided from calibrated boundary probabilities, as the user steers it.

``p[i]`` is the probability that a segment ends after unit i (the last unit's is 0: the
document end is not a choice). By default the network's own decision stands (argmax, or
the CRF's Viterbi labels); a user who knows more can say:

- ``threshold=t``: cut after every unit with p >= t (on calibrated probabilities a
  threshold means what it says: t = 0.5 keeps the cuts more likely than not);
- ``num_segments=k``: exactly k segments, the k - 1 cuts with the largest total log-odds
  (dynamic programming, so ``min_segment_units`` is honoured exactly);
- ``min_segment_units=m``: no segment shorter than m units; with a threshold or the
  network's own cuts, the most probable cuts are kept first and a cut that would leave a
  segment shorter than m is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segmenter.core.bounds import Number

# The settings' bounds (segmenter.core.bounds): checked here, and by the command line and the
# HTTP server through these same objects. null: the network's own decision (min_segment_units: 1).
THRESHOLD = Number(lo=0, lo_open=True, hi=1, whole=False, none=True)
NUM_SEGMENTS = Number(lo=1, none=True)
MIN_SEGMENT_UNITS = Number(lo=1, none=True)


def check(n: int, *, threshold: float | None, num_segments: int | None, min_segment_units: int | None) -> None:
    """ValueError naming the values when the settings cannot be met for ``n`` units."""
    THRESHOLD.check("threshold", threshold)
    NUM_SEGMENTS.check("num_segments", num_segments)
    MIN_SEGMENT_UNITS.check("min_segment_units", min_segment_units)
    if threshold is not None and num_segments is not None:
        raise ValueError(f"threshold={threshold} and num_segments={num_segments}: give one or the other")
    min_segment_units = min_segment_units or 1
    if num_segments is not None:
        if n and num_segments * min_segment_units > n:
            raise ValueError(
                f"num_segments={num_segments} segments of min_segment_units={min_segment_units} or more units "
                f"need {num_segments * min_segment_units} units; the document has {n}"
            )


def check_documents(
    lengths: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    threshold: float | None,
    num_segments: int | None,
    min_segment_units: int | None,
) -> None:
    """``check`` for each document of ``lengths`` units; the ValueError starts with the
    offending document's name (``names``, e.g. its file), or none when no names are given."""
    for i, n in enumerate(lengths):
        try:
            check(n, threshold=threshold, num_segments=num_segments, min_segment_units=min_segment_units)
        except ValueError as e:
            raise ValueError(f"{names[i]}: {e}" if names is not None else str(e)) from None


def _fits(cut: int, kept: Sequence[int], n: int, m: int) -> bool:
    """Cutting after unit ``cut`` leaves every segment (with ``kept``) at least m units long."""
    if cut + 1 < m or n - cut - 1 < m:
        return False
    return all(abs(cut - k) >= m for k in kept)


def greedy(p: Sequence[float], candidates: Sequence[int], *, min_segment_units: int) -> list[int]:
    """The candidate cuts, most probable first, each kept if no segment gets shorter than
    ``min_segment_units``; sorted."""
    n, kept = len(p), []
    for cut in sorted(candidates, key=lambda i: (-p[i], i)):
        if _fits(cut, kept, n, min_segment_units):
            kept.append(cut)
    return sorted(kept)


def best_k(p: Sequence[float], k: int, *, min_segment_units: int = 1, eps: float = 1e-6) -> list[int]:
    """The k cuts (after units 0..n-2) maximising sum log(p / (1 - p)), every segment at
    least ``min_segment_units`` long: dynamic programming, O(k n)."""
    n, m = len(p), min_segment_units
    if k == 0:
        return []
    score = [math.log(max(q, eps)) - math.log(max(1.0 - q, eps)) for q in p]
    neg = -math.inf
    # best[j][i]: the best total of j + 1 cuts, the last after unit i; back[j][i]: the cut before it
    best = [[neg] * n for _ in range(k)]
    back = [[-1] * n for _ in range(k)]
    for i in range(m - 1, n - m):
        best[0][i] = score[i]
    for j in range(1, k):
        run_max, run_arg = neg, -1  # max of best[j-1][i'] over i' <= i - m
        for i in range(n - m):
            if i - m >= 0 and best[j - 1][i - m] > run_max:
                run_max, run_arg = best[j - 1][i - m], i - m
            if run_arg >= 0:
                best[j][i], back[j][i] = run_max + score[i], run_arg
    last = max(range(n), key=lambda i: best[k - 1][i])
    if best[k - 1][last] == neg:
        raise ValueError(f"no way to place {k} cuts in {n} units with min_segment_units={m}")
    cuts = [last]
    for j in range(k - 1, 0, -1):
        cuts.append(back[j][cuts[-1]])
    return sorted(cuts)


def cuts(
    p: Sequence[float],
    default: Sequence[int],
    *,
    threshold: float | None = None,
    num_segments: int | None = None,
    min_segment_units: int | None = 1,
) -> list[int]:
    """The units after which a segment ends (sorted), from boundary probabilities ``p`` and
    the network's own cuts ``default``, as the settings ask (module docstring)."""
    n = len(p)
    check(n, threshold=threshold, num_segments=num_segments, min_segment_units=min_segment_units)
    min_segment_units = min_segment_units or 1  # null: the default, 1
    if n == 0:
        return []
    if num_segments is not None:
        return best_k(p, num_segments - 1, min_segment_units=min_segment_units)
    candidates = (
        [i for i in range(n - 1) if p[i] >= threshold] if threshold is not None else [i for i in default if i < n - 1]
    )
    if min_segment_units == 1:
        return sorted(candidates)
    return greedy(p, candidates, min_segment_units=min_segment_units)

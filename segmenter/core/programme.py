"""The one dynamic programme behind every decision on calibrated boundary probabilities.

A segmentation of n units is its cuts (a segment ends after unit j). Its score is the sum
over cuts of ``cut_scores`` (calibrated log-odds less those of the rule's decision point:
log-probability of the cuts, up to a constant) plus, per segment, a score of its length
(a prior, segmenter.core.decisions.LengthPrior). ``programme`` finds the best segmentation
whose every segment [i, j] starts at or after ``lo[j]`` (hard length limits,
segmenter.core.limits), is at least m units long and at most as long as the prior allows,
into exactly k segments when asked. The user's decisions (segmenter.core.decisions) and the
length limits both call it, with the same scores, so a limit that never binds changes no cut.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS]: every log-odds is finite
TINY = 1e-6  # the least score a rule's own cut gets (and the most any other slot gets), negated


def cut_scores(
    p: Sequence[float],
    *,
    candidates: Sequence[int] | None = None,
    threshold: float | None = None,
    decision_point: float = 0.5,
    eps: float = EPS,
) -> np.ndarray:
    """What cutting after each unit adds to a segmentation's score (``limits.programme``
    maximises their sum): the calibrated log-odds log(p / (1 - p)) less those of the rule's
    decision point, ``threshold`` when given, else ``decision_point`` (the calibrated
    probability at which the network's own labels change: a calibrator moves it away from
    0.5). ``candidates``: the cuts of the unconstrained rule (the network's labels, or p >=
    threshold); each candidate's score is made positive and every other slot's negative,
    keeping their order, so that with nothing else in the way (no limit, prior or minimum binds) the programme
    cuts exactly where that rule does, ties and a CRF's labels included. The last slot, the
    document end, scores 0."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)  # (n,)
    point = min(max(threshold if threshold is not None else decision_point, eps), 1.0 - eps)
    score = np.log(q) - np.log1p(-q) - (math.log(point) - math.log1p(-point))
    if candidates is None and threshold is not None:
        candidates = [i for i, v in enumerate(p) if v >= threshold]
    if candidates is not None:
        chosen = np.zeros(len(score), dtype=bool)
        chosen[[i for i in candidates if i < len(score)]] = True
        # Strictly positive for the rule's cuts, strictly negative elsewhere, and still in the
        # order of p within each (a limit that binds adds the most probable of the others first).
        # (TINY / (1 + |s|) stays far above float resolution for any clipped log-odds s.)
        own = np.where(score > 0, score + TINY, TINY / (1.0 - np.minimum(score, 0.0)))
        other = np.where(score < 0, score - TINY, -TINY / (1.0 + np.maximum(score, 0.0)))
        score = np.where(chosen, own, other)
    if len(score):
        score[-1] = 0.0
    return score


def programme(
    score: np.ndarray, lo: Sequence[int], m: int, k: int | None, *, prior: np.ndarray | None = None
) -> list[int] | None:
    """Best segmentation into segments [i, j] with lo[j] <= i <= j - m + 1, maximising the sum
    of ``score`` over segment ends (``score[-1]`` is 0) plus, with ``prior``, ``prior[L]`` for
    every segment of L units, no segment longer than ``len(prior) - 1``; exactly k segments
    when k is given. None when there is none. Per segment count, O(n) without a prior and
    O(n * longest segment) with one."""
    n, neg = len(score), -np.inf
    longest = n if prior is None else len(prior) - 1
    empty = np.full(n + 1, neg)  # the empty prefix: 0 segments, score 0
    empty[0] = 0.0
    # best[c, j + 1]: best total of units 0..j cut into c + 1 segments (any number when k is
    # None: one layer that is its own previous layer), the last ending at unit j; column 0 is
    # the empty prefix. back[c, j]: the first unit of that last segment.
    layers = 1 if k is None else k
    best = np.full((layers, n + 1), neg)
    back = np.full((layers, n), -1, dtype=np.int64)
    if k is None:
        best[0] = empty
    # Without a prior, and with starts that never move back (lo nondecreasing, as the length
    # limits' two pointers give it), the best of each window comes from a sliding-window
    # maximum: O(n) per layer instead of a scan of every window.
    sliding = prior is None and all(x <= y for x, y in zip(lo, lo[1:]))
    for c in range(layers):
        prev = best[0] if k is None else (empty if c == 0 else best[c - 1])
        queue: deque[int] = deque()  # sliding: window indices, values non-increasing, earliest first
        pushed = 0
        for j in range(n):
            a, b = max(lo[j], j + 1 - longest), j - m + 1
            if b < a:
                continue
            if sliding:
                while pushed <= b:  # prev[pushed] is final: it ends before unit j
                    while queue and prev[queue[-1]] < prev[pushed]:
                        queue.pop()
                    queue.append(pushed)
                    pushed += 1
                while queue[0] < a:
                    queue.popleft()
                i = queue[0] - a  # the earliest best start, as np.argmax picks it
                top = prev[queue[0]]
            else:
                window = prev[a : b + 1]  # (b - a + 1,): best totals of the prefixes before unit a..b
                if prior is not None:  # a segment a..j is j + 1 - a units long, b..j is j + 1 - b
                    window = window + prior[j + 1 - b : j + 2 - a][::-1]
                i = int(np.argmax(window))
                top = window[i]
            if top > neg:
                best[c, j + 1], back[c, j] = top + score[j], a + i
    if best[layers - 1, n] == neg:
        return None
    cuts, j, c = [], n - 1, layers - 1
    while (i := int(back[c, j])) > 0:
        cuts.append(i - 1)
        j, c = i - 1, c if k is None else c - 1
    return sorted(cuts)

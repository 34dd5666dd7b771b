"""Where to cut, decided from calibrated boundary probabilities, as the user steers it.

``p[i]`` is the probability that a segment ends after unit i (the last unit's is 0: the
document end is not a choice). By default the network's own decision stands (argmax, or
the CRF's Viterbi labels), with the model's fitted length prior where its fit switched it on;
a user who knows more can say:

- ``threshold=t``: cut after every unit with p >= t (on calibrated probabilities a
  threshold means what it says: t = 0.5 keeps the cuts more likely than not);
- ``num_segments=k``: exactly k segments, the k - 1 cuts with the largest total log-odds
  (dynamic programming, so ``min_segment_units`` is honoured exactly);
- ``min_segment_units=m``: no segment shorter than m units: of the cuts the threshold or
  the network chose, the set with the largest total score (``cut_scores``) that leaves no
  segment shorter;
- a length prior (``LengthPrior``): every segment adds its length's weighted
  log-probability under a log-normal, less a penalty per segment, both fitted on validation
  documents (segmenter.inference.prior), so a document is not cut into the lengths a model
  trained on when its sections are longer.

All of them, and the hard length limits (segmenter.core.limits), are one dynamic programme
(``limits.programme``) over the same scores (``cut_scores``): the scores follow the
unconstrained rule, so a limit that never binds changes no cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from segmenter.core.bounds import Number
from segmenter.core.programme import EPS, cut_scores, programme

# The settings' bounds (segmenter.core.bounds): checked here, and by the command line and the
# HTTP server through these same objects. null: the network's own decision (min_segment_units: 1).
THRESHOLD = Number(lo=0, lo_open=True, hi=1, whole=False, none=True)
NUM_SEGMENTS = Number(lo=1, none=True)
MIN_SEGMENT_UNITS = Number(lo=1, none=True)
# null: the model's own choice (its fitted prior's ``on``); false or 0: off; true: on at the
# fitted weight and cut penalty; a number > 0: that weight, with the fitted cut penalty.
LENGTH_PRIOR = Number(lo=0, whole=False, none=True, flag=True)
# A log-normal's mean and deviation of log length: medians from 1 to about a million units.
PRIOR_MU = Number(lo=0, hi=14, whole=False)
PRIOR_SIGMA = Number(lo=0, lo_open=True, hi=5, whole=False)
PRIOR_WEIGHT = Number(lo=0, whole=False)
PRIOR_PENALTY = Number(lo=-20, hi=20, whole=False)
# What scripts/fit_prior.py tries (segmenter.inference.prior): lists of the two, and the Pk margin.
PRIOR_WEIGHTS = Number(lo=0, whole=False, many=True)
PRIOR_PENALTIES = Number(lo=-20, hi=20, whole=False, many=True)
PRIOR_MARGIN = Number(lo=0, hi=1, whole=False)

# A log-normal prior's segments end at exp(mu + SPAN * sigma) units: the prior puts e^-(SPAN^2/2)
# of its peak there, and the programme costs O(n * that length) instead of O(n^2).
SPAN = 6.0


@dataclass(frozen=True)
class LengthPrior:
    """A log-normal prior on a segment's length L in units: every segment adds
    ``weight * log LN(L; mu, sigma) - cut_penalty`` to the segmentation's score (sum of cut
    log-odds; the penalty is a geometric prior's per-cut cost, negative: more cuts).
    ``mu``, ``sigma``: mean and standard deviation of log L over the reference segments of
    validation documents; ``weight`` and ``cut_penalty``: the pair that gave the lowest
    validation Pk; ``on``: whether decisions use it when the caller does not say
    (segmenter.inference.prior fits them all and says what it measured in ``fitted_on`` and ``pk``)."""

    mu: float
    sigma: float
    weight: float
    cut_penalty: float = 0.0
    on: bool = False
    fitted_on: str = ""
    segments: int = 0  # how many reference segments mu and sigma come from
    pk: Mapping[str, float] | None = None  # validation Pk by "weight,cut_penalty", as the fit measured it

    def __post_init__(self) -> None:
        # Read from a checkpoint: every field is checked, so a damaged entry is a ValueError naming it.
        PRIOR_MU.check("length prior mu", self.mu)
        PRIOR_SIGMA.check("length prior sigma", self.sigma)
        PRIOR_WEIGHT.check("length prior weight", self.weight)
        PRIOR_PENALTY.check("length prior cut_penalty", self.cut_penalty)
        if not isinstance(self.on, bool) or not isinstance(self.fitted_on, str):
            raise ValueError(
                f"length prior on={self.on!r}, fitted_on={self.fitted_on!r}: expected true/false and a text"
            )
        Number(lo=0).check("length prior segments", self.segments)
        if self.pk is not None and not (
            isinstance(self.pk, Mapping)
            and all(isinstance(k, str) and Number(whole=False).allows(v) for k, v in self.pk.items())
        ):
            raise ValueError(f"length prior pk={self.pk!r}: expected a mapping of settings to numbers")

    @property
    def longest(self) -> int:
        """The longest segment the prior allows (``SPAN`` standard deviations above mu)."""
        return max(2, math.ceil(math.exp(self.mu + SPAN * self.sigma)))

    def costs(self, n: int, *, weight: float | None = None, min_units: int = 1) -> np.ndarray:
        """(L + 1,) per-segment scores by length, L = min(n, longest) (at least 2 * min_units,
        so a document can always be cut); index 0 unused. ``weight``: instead of the fitted one."""
        w = self.weight if weight is None else weight
        longest = max(min(n, self.longest), 2 * min_units, 1)
        length = np.arange(1, longest + 1, dtype=np.float64)  # (L,)
        log_l = np.log(length)
        log_pdf = -log_l - math.log(self.sigma * math.sqrt(2 * math.pi)) - (log_l - self.mu) ** 2 / (2 * self.sigma**2)
        return np.concatenate(([-np.inf], w * log_pdf - self.cut_penalty))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pk"] = dict(self.pk) if self.pk is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> LengthPrior | None:
        """From a checkpoint's calibration entry; None (none fitted) stays None."""
        if not d:
            return None
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def fit(cls, lengths: Sequence[int], *, weight: float = 1.0, **kwargs: Any) -> LengthPrior:
        """mu and sigma of log length over reference segment ``lengths`` (maximum likelihood)."""
        if len(lengths) < 2 or min(lengths) < 1:
            raise ValueError(f"a length prior needs two or more segment lengths >= 1, got {list(lengths)[:10]}")
        logs = np.log(np.asarray(lengths, dtype=np.float64))
        return cls(
            mu=float(logs.mean()), sigma=max(float(logs.std()), 1e-3), weight=weight, segments=len(lengths), **kwargs
        )


def prior_weight(prior: LengthPrior | None, setting: bool | float | None) -> float | None:
    """The weight a ``length_prior`` setting asks of ``prior`` (LENGTH_PRIOR: true, the fitted
    weight; a number > 0, that weight, with the fitted cut penalty): None when the prior is
    off. ValueError when it asks for a prior the model does not have."""
    LENGTH_PRIOR.check("length_prior", setting)
    if setting is None:
        return prior.weight if prior is not None and prior.on else None
    if setting is False or setting == 0:
        return None
    if prior is None:
        raise ValueError(
            f"length_prior={setting}: this model has no fitted length prior "
            "(fit one on validation documents: python -m segmenter.inference.prior ckpt_path=... data=...)"
        )
    return prior.weight if setting is True else float(setting)


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


def best_k(
    p: Sequence[float], k: int, *, min_segment_units: int = 1, decision_point: float = 0.5, eps: float = EPS
) -> list[int]:
    """The k cuts (after units 0..n-2) maximising sum log(p / (1 - p)), every segment at
    least ``min_segment_units`` long: ``programme`` with k + 1 segments, O(k n). The scores
    are measured from ``decision_point`` (``cut_scores``), which moves every choice of k cuts
    by the same amount: the length limits' programme uses the same scores."""
    n = len(p)
    if k == 0:
        return []
    found = programme(cut_scores(p, decision_point=decision_point, eps=eps), [0] * n, min_segment_units, k + 1)
    if found is None:
        raise ValueError(f"no way to place {k} cuts in {n} units with min_segment_units={min_segment_units}")
    return found


def cuts(
    p: Sequence[float],
    default: Sequence[int],
    *,
    threshold: float | None = None,
    num_segments: int | None = None,
    min_segment_units: int | None = 1,
    decision_point: float = 0.5,
    prior: np.ndarray | None = None,
) -> list[int]:
    """The units after which a segment ends (sorted), from calibrated boundary probabilities
    ``p`` and the network's own cuts ``default``, as the settings ask (module docstring).
    ``decision_point``: where the network's labels change on the calibrated scale
    (``cut_scores``); ``prior``: per-segment scores by length (``LengthPrior.costs``), not used
    with ``num_segments``."""
    n = len(p)
    check(n, threshold=threshold, num_segments=num_segments, min_segment_units=min_segment_units)
    min_segment_units = min_segment_units or 1  # null: the default, 1
    if n == 0:
        return []
    if num_segments is not None:
        return best_k(p, num_segments - 1, min_segment_units=min(min_segment_units, n), decision_point=decision_point)
    if threshold is None and min_segment_units == 1 and prior is None:
        return sorted(i for i in default if i < n - 1)
    # The one programme the length limits use too (segmenter.core.limits), with no limit: with
    # the same scores, a limit that never binds changes nothing.
    candidates = None if threshold is not None else default
    score = cut_scores(p, candidates=candidates, threshold=threshold, decision_point=decision_point)
    found = programme(score, [0] * n, min(min_segment_units, n), None, prior=prior)
    if found is None:  # cannot happen without a maximum: one segment always holds
        raise ValueError(f"no segmentation of {n} units with min_segment_units={min_segment_units}")
    return found

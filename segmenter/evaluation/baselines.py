"""Baselines for text segmentation, each mapping a document's units to N - 1 boundary slots.

- ``NoBoundaries``: one segment per document.
- ``AllBoundaries``: a boundary after every unit.
- ``EvenlySpaced``: a boundary every L units, L the mean segment length of the training split.
- ``C99`` (Choi 2000): cosine similarity of sentences, ranked in a local mask, then
  divisive clustering that maximises inside-segment density, stopped where the density
  gain drops below mean + c * std of the gains.
- ``TextTiling`` on sentences (Hearst 1997, units = sentences, not paragraphs): cosine
  similarity of the ``block`` sentences before and after each gap, depth scores, and a
  boundary at each local depth maximum above mean - std / 2.

Both classical methods work on bag-of-words vectors of content words (lower-cased,
stopwords removed, a light suffix stripping in place of a stemmer).

For section labels (``task=section``, e.g. verse/chorus), baselines map units to a label
per unit instead (``tasks = (SECTION,)``):

- ``MajorityLabel``: every unit gets the training split's most frequent label (all verse).
- ``RepetitionRule``: a unit whose normalised text occurs again elsewhere in its document
  gets the label most frequent among such units in training (chorus), every other unit
  the label most frequent among the rest: "a line that recurs is chorus".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from segmenter.core.document import BOUNDARY, SECTION, Document, boundary_labels

_WORD = re.compile(r"[a-z]+")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up upon very was we were what when where which while who whom
    why will with would you your yours yourself yourselves one two may might must shall said mr mrs
    new many much even well way like get got made make us n t s""".split()
)


def content_words(text: str) -> list[str]:
    words = []
    for w in _WORD.findall(text.lower()):
        if w in STOPWORDS or len(w) < 3:
            continue
        for suffix in ("ies", "ing", "ed", "es", "ly", "s"):  # crude stemming: merge inflections
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                w = w[: -len(suffix)]
                break
        words.append(w)
    return words


def bag_of_words(units: Sequence[str]) -> np.ndarray:
    """(N, V) term counts of the units' content words."""
    tokens = [content_words(u) for u in units]
    vocab = {w: i for i, w in enumerate(sorted({w for t in tokens for w in t}))}
    x = np.zeros((len(units), max(len(vocab), 1)))
    for i, t in enumerate(tokens):
        for w, c in Counter(t).items():
            x[i, vocab[w]] = c
    return x


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    return x @ x.T  # (N, N)


def _slots(n: int, ends: Sequence[int]) -> list[int]:
    """Units that end a segment -> N - 1 boundary slots."""
    slots = [0] * max(n - 1, 0)
    for e in ends:
        if 0 <= e < n - 1:
            slots[e] = 1
    return slots


class NoBoundaries:
    name = "no boundaries"
    tasks = (BOUNDARY,)

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> NoBoundaries:
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        return _slots(len(units), [])


class AllBoundaries:
    name = "every unit"
    tasks = (BOUNDARY,)

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> AllBoundaries:
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        return _slots(len(units), range(len(units)))


class EvenlySpaced:
    """A boundary every ``length`` units; ``fit`` sets it to the training mean segment length."""

    tasks = (BOUNDARY,)

    def __init__(self, *, length: int | None = None) -> None:
        if length is not None and length < 1:
            raise ValueError(f"length={length} must be >= 1")
        self.length = length

    @property
    def name(self) -> str:
        return f"evenly spaced (every {self.length})"

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> EvenlySpaced:
        units = segments = 0
        for d in docs:  # one pass: the training split may be read from disk
            units += len(d)
            segments += sum(boundary_labels(d.labels, task)) + 1
        if segments == 0:
            raise ValueError("cannot fit EvenlySpaced on no documents")
        self.length = max(1, round(units / segments))
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        if self.length is None:
            raise ValueError("EvenlySpaced has no length: pass length= or call fit() on training documents")
        return _slots(len(units), range(self.length - 1, len(units), self.length))


class C99:
    """Choi (2000): rank-transformed similarity, divisive clustering, automatic stopping."""

    tasks = (BOUNDARY,)

    name = "C99"

    def __init__(self, *, mask: int = 11, cutoff: float = 1.2, num_segments: int | None = None) -> None:
        if mask < 3 or mask % 2 == 0:
            raise ValueError(f"mask={mask} must be an odd number >= 3")
        self.mask, self.cutoff, self.num_segments = mask, cutoff, num_segments

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> C99:
        return self  # unsupervised

    def rank_matrix(self, sim: np.ndarray) -> np.ndarray:
        """Each similarity replaced by the share of its mask neighbours that are lower."""
        r = self.mask // 2
        padded = np.pad(sim, r, constant_values=np.nan)  # outside the matrix: not a neighbour
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.mask, self.mask))  # (N, N, m, m)
        lower = (windows < sim[:, :, None, None]).sum(axis=(2, 3))  # NaN compares False
        others = (~np.isnan(windows)).sum(axis=(2, 3)) - 1
        rank = np.where(others > 0, lower / np.maximum(others, 1), 0.0)
        return rank

    def __call__(self, units: Sequence[str]) -> list[int]:
        n = len(units)
        if n < 3:
            return _slots(n, [])
        rank = self.rank_matrix(cosine_matrix(bag_of_words(units)))
        csum = np.zeros((n + 1, n + 1))
        csum[1:, 1:] = rank.cumsum(0).cumsum(1)  # 2-D prefix sums: the sum of any block in O(1)

        def block(a: int, b: int) -> float:  # sum of rank[a:b, a:b]
            return csum[b, b] - csum[a, b] - csum[b, a] + csum[a, a]

        starts = [0]  # segments are [starts[k], starts[k + 1])
        inside, area = block(0, n), float(n * n)
        densities = [inside / area]
        cuts = []
        for _ in range(n - 1):
            best = None
            bounds = starts + [n]
            for a, b in zip(bounds, bounds[1:]):
                old = block(a, b)
                for p in range(a + 1, b):
                    s = inside - old + block(a, p) + block(p, b)
                    ar = area - (b - a) ** 2 + (p - a) ** 2 + (b - p) ** 2
                    if best is None or s / ar > best[0]:
                        best = (s / ar, p, s, ar)
            if best is None:
                break
            density, p, inside, area = best
            starts = sorted(starts + [p])
            cuts.append(p)
            densities.append(density)
        if self.num_segments is not None:
            chosen = cuts[: self.num_segments - 1]
        else:
            gain = np.diff(np.asarray(densities))  # gain of the t-th cut
            if gain.size > 2:
                # Choi smooths the gains before thresholding them.
                gain = np.convolve(gain, np.array([1, 2, 4, 8, 4, 2, 1]) / 22, mode="same")
            threshold = gain.mean() + self.cutoff * gain.std()
            m = 0
            while m < gain.size and gain[m] > threshold:
                m += 1
            chosen = cuts[:m] if m else cuts[: int(np.argmax(gain)) + 1]
        return _slots(n, [p - 1 for p in chosen])  # a cut before unit p: unit p - 1 ends a segment


class TextTiling:
    """Hearst's TextTiling computed on sentences: ``block`` sentences either side of a gap."""

    tasks = (BOUNDARY,)

    name = "TextTiling (sentences)"

    def __init__(self, *, block: int = 4, smoothing: int = 1, cutoff: float = 0.0) -> None:
        if block < 1 or smoothing < 0:
            raise ValueError(f"need block >= 1 and smoothing >= 0, got block={block}, smoothing={smoothing}")
        self.block, self.smoothing, self.cutoff = block, smoothing, cutoff

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> TextTiling:
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        n = len(units)
        if n < 3:
            return _slots(n, [])
        x = bag_of_words(units)
        scores = np.zeros(n - 1)  # gap g is between unit g and unit g + 1
        for g in range(n - 1):
            left = x[max(0, g + 1 - self.block) : g + 1].sum(0)
            right = x[g + 1 : g + 1 + self.block].sum(0)
            denom = np.linalg.norm(left) * np.linalg.norm(right)
            scores[g] = left @ right / denom if denom > 0 else 0.0
        if self.smoothing:
            w = 2 * self.smoothing + 1
            padded = np.pad(scores, self.smoothing, mode="edge")
            scores = np.convolve(padded, np.ones(w) / w, mode="valid")
        depth = np.zeros_like(scores)
        for g in range(len(scores)):
            lo = g
            while lo > 0 and scores[lo - 1] >= scores[lo]:
                lo -= 1
            hi = g
            while hi < len(scores) - 1 and scores[hi + 1] >= scores[hi]:
                hi += 1
            depth[g] = (scores[lo] - scores[g]) + (scores[hi] - scores[g])
        cutoff = depth.mean() + self.cutoff * depth.std()  # Hearst's liberal cutoff: -1/2
        ends = [
            g
            for g in range(len(depth))
            if depth[g] > cutoff
            and depth[g] > 0
            and (g == 0 or depth[g] >= depth[g - 1])
            and (g == len(depth) - 1 or depth[g] > depth[g + 1])
        ]
        return _slots(n, ends)


def normalised(unit: str) -> str:
    """Lower-case words only: "Oh, baby!" and "oh baby" are the same line."""
    return " ".join(re.findall(r"\w+", unit.lower()))


def _most_frequent(counts: Counter, default: int) -> int:
    """The most frequent label (the first seen among equals), ``default`` where none was."""
    return counts.most_common(1)[0][0] if counts else default


class MajorityLabel:
    """Every unit gets the most frequent label of the training split."""

    tasks = (SECTION,)

    def __init__(self) -> None:
        self.label: int | None = None
        self.name = "majority label"

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> MajorityLabel:
        # Counted a document at a time: the training split may be read from disk, never held.
        self.label = _most_frequent(Counter(y for d in docs for y in d.labels), 0)
        if label_names is not None:
            self.name = f"all {label_names[self.label]}"
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        if self.label is None:
            raise ValueError("MajorityLabel is not fitted: call fit() on training documents")
        return [self.label] * len(units)


class RepetitionRule:
    """A unit whose normalised text occurs again in its document gets the label most
    frequent among such units in training; the others, the label most frequent among theirs."""

    tasks = (SECTION,)
    name = "repetition rule"

    def __init__(self) -> None:
        self.repeated: int | None = None
        self.single: int | None = None

    @staticmethod
    def recurs(units: Sequence[str]) -> list[bool]:
        counts = Counter(normalised(u) for u in units)
        return [counts[normalised(u)] > 1 for u in units]

    def fit(self, docs: Sequence[Document], task: str, label_names: Sequence[str] | None = None) -> RepetitionRule:
        counts: dict[bool, Counter] = {False: Counter(), True: Counter()}  # a document at a time
        for d in docs:
            for r, y in zip(self.recurs(d.units), d.labels):
                counts[r][y] += 1
        self.single = _most_frequent(counts[False], 0)
        self.repeated = _most_frequent(counts[True], self.single)
        if label_names is not None:
            self.name = f"repetition rule (a recurring unit is {label_names[self.repeated]})"
        return self

    def __call__(self, units: Sequence[str]) -> list[int]:
        if self.repeated is None:
            raise ValueError("RepetitionRule is not fitted: call fit() on training documents")
        return [self.repeated if r else self.single for r in self.recurs(units)]

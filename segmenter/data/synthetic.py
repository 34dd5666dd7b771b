"""Choi-style documents: runs of consecutive sentences drawn from different source texts
and concatenated, so every boundary is known (Choi 2000). The built-in corpus
(segmenter/data/builtin.py) and Choi's source-disjoint training documents
(segmenter/data/corpora.py) are both drawn here."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


def draw_segments(
    rng: random.Random,
    pool: Sequence[str],
    texts: Mapping[str, Sequence[str]],
    *,
    segments_per_doc: int,
    segment_length: tuple[int, int],
) -> tuple[list[str], list[list[str]], list[tuple[int, int]]]:
    """One document's segments: (source names, segments, (start, length) of each).

    Sources are distinct within a document as far as the pool allows (then never the same
    twice in a row); each segment is a run of ``segment_length`` = (lo, hi) consecutive
    sentences (at most the whole text) from a random start of its source."""
    lo, hi = segment_length
    names = rng.sample(list(pool), min(segments_per_doc, len(pool)))
    while len(names) < segments_per_doc:
        names.append(rng.choice([n for n in pool if n != names[-1]]))
    segments, spans = [], []
    for name in names:
        sents = texts[name]
        length = min(rng.randint(lo, hi), len(sents))
        start = rng.randrange(len(sents) - length + 1)
        segments.append(list(sents[start : start + length]))
        spans.append((start, length))
    return names, segments, spans

"""Hashing of unit text into stable ids: pure functions of the text and their settings,
stable across processes (crc32, never Python's salted ``hash``) and free of any memo (a
featurizer that wants to reuse work owns a bounded cache)."""

from __future__ import annotations

import re
import zlib

_WORD = re.compile(r"\w+", re.UNICODE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def hashed_features(text: str, num_buckets: int, char_ngram: int) -> list[int]:
    """Bucket ids in [0, num_buckets) of a unit's words, word bigrams and character
    n-grams of its words; a unit without a word gets one shared "empty" feature."""
    words = _WORD.findall(text.lower())
    feats = [f"w:{w}" for w in words]
    feats += [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    if char_ngram > 0:
        for w in words:
            w = f"<{w}>"
            feats += [f"c:{w[i : i + char_ngram]}" for i in range(len(w) - char_ngram + 1)]
    if not feats:
        feats = ["<empty>"]
    return [zlib.crc32(f.encode("utf-8")) % num_buckets for f in feats]


def char_ngrams(text: str, n: int, buckets: int) -> list[int]:
    """Hashed character n-grams of a unit's normalised text (lower case, punctuation and
    runs of spaces as one space), bucket ids in [0, buckets)."""
    t = f" {_NON_WORD.sub(' ', text.lower()).strip()} "
    grams = [t[i : i + n] for i in range(max(1, len(t) - n + 1))]
    return [zlib.crc32(g.encode("utf-8")) % buckets for g in grams]

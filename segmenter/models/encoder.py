"""Unit encoders: a list of documents (lists of unit strings) -> vectors (B, T, D).

``HashedNgramEncoder`` needs no download. Each unit becomes a bag of hashed
features (words, word bigrams, character trigrams); each feature bucket has a
fixed random code (random indexing: sums of random codes preserve lexical overlap
between sentences, which is what topic segmentation feeds on) and a learned scalar
weight (so the model can learn to ignore frequent, uninformative features). The
weighted bag is projected to the model width. The random codebook is regenerated
from its seed, so it costs no parameters and no checkpoint space.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1 << 20)
def hashed_features(text: str, num_buckets: int, char_ngram: int) -> tuple[int, ...]:
    """Stable (process-independent) bucket ids of a unit's features.

    Cached: a corpus is hashed once per process, not once per epoch.
    """
    words = _WORD.findall(text.lower())
    feats = [f"w:{w}" for w in words]
    feats += [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    if char_ngram > 0:
        for w in words:
            w = f"<{w}>"
            feats += [f"c:{w[i:i + char_ngram]}" for i in range(len(w) - char_ngram + 1)]
    if not feats:  # punctuation-only or empty unit: one shared "empty" feature
        feats = ["<empty>"]
    return tuple(zlib.crc32(f.encode("utf-8")) % num_buckets for f in feats)


def pad_units(vectors: Tensor, lengths: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Scatter (N, D) unit vectors of concatenated documents into (B, T, D) plus mask (B, T)."""
    b, t = len(lengths), max(lengths)
    lengths_t = torch.as_tensor(lengths, device=vectors.device)
    mask = torch.arange(t, device=vectors.device)[None, :] < lengths_t[:, None]  # (B, T)
    out = vectors.new_zeros(b, t, vectors.shape[-1])
    out[mask] = vectors
    return out, mask


class UnitEncoder(nn.Module):
    """Base of every encoder: subclasses map a flat list of units to (N, dim) vectors
    (``encode_units``); documents are flattened and padded back here, once for all."""

    dim: int

    def encode_units(self, units: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def frozen_units(self, units: Sequence[str]) -> Tensor:
        """(N, F) frozen vectors of the units: what the encoder knows before learning, which
        no training changes, for comparing units (the cohesion and similarity features)."""
        raise NotImplementedError

    def encode_with_frozen_units(self, units: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Both at once, (N, D) and (N, F); encoders that derive one from the other
        override this to do the shared work once."""
        return self.encode_units(units), self.frozen_units(units)

    @staticmethod
    def _padded(docs: Sequence[Sequence[str]], encode) -> tuple[Tensor, ...]:
        """``encode`` the units of all documents in one call, then pad each tensor it
        returns to (B, T, .): those tensors, then the mask (B, T)."""
        lengths = [len(d) for d in docs]
        if min(lengths, default=0) == 0:
            raise ValueError(f"every document needs at least one unit, got lengths {lengths}")
        out = encode([u for d in docs for u in d])
        padded = [pad_units(t, lengths) for t in (out if isinstance(out, tuple) else (out,))]
        return (*(t for t, _ in padded), padded[0][1])

    def forward(self, docs: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """docs: B documents of units -> x (B, T, D), mask (B, T)."""
        return self._padded(docs, self.encode_units)

    def frozen(self, docs: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """docs: B documents of units -> frozen vectors (B, T, F), mask (B, T)."""
        return self._padded(docs, self.frozen_units)

    def encode_with_frozen(self, docs: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor, Tensor]:
        """docs: B documents of units -> x (B, T, D), frozen vectors (B, T, F), mask (B, T)."""
        return self._padded(docs, self.encode_with_frozen_units)


class HashedNgramEncoder(UnitEncoder):
    def __init__(
        self,
        *,
        dim: int,
        num_buckets: int = 16_384,
        code_dim: int = 256,
        char_ngram: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_buckets < 1 or code_dim < 1:
            raise ValueError(f"num_buckets={num_buckets} and code_dim={code_dim} must be >= 1")
        self.dim, self.num_buckets, self.code_dim = dim, num_buckets, code_dim
        self.char_ngram, self.seed = char_ngram, seed
        g = torch.Generator().manual_seed(seed)
        codes = torch.randn(num_buckets, code_dim, generator=g) / code_dim**0.5
        self.register_buffer("codes", codes, persistent=False)  # rebuilt from seed, never saved
        self.feature_weight = nn.Parameter(torch.ones(num_buckets))
        self.norm = nn.LayerNorm(code_dim)
        self.proj = nn.Linear(code_dim, dim)

    def featurize(self, units: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """Bucket ids (F,), bag offsets (N,), per-feature 1/sqrt(bag size) (F,)."""
        bags = [hashed_features(u, self.num_buckets, self.char_ngram) for u in units]
        sizes = torch.tensor([len(b) for b in bags])
        ids = torch.tensor([i for b in bags for i in b], dtype=torch.long)
        offsets = torch.cumsum(sizes, 0) - sizes
        norm = torch.repeat_interleave(sizes.float().rsqrt(), sizes)
        return ids, offsets, norm

    def _bags(self, units: Sequence[str], *, learned: bool = True, frozen: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """(N, code_dim) bags of the units' codes, hashed once for both: weighted by the
        learned feature weights, and unweighted (the frozen view); None where not asked."""
        ids, offsets, norm = (t.to(self.codes.device) for t in self.featurize(units))

        def bag(weights: Tensor) -> Tensor:
            return F.embedding_bag(ids, self.codes, offsets, mode="sum", per_sample_weights=weights)

        return (bag(self.feature_weight[ids] * norm) if learned else None, bag(norm) if frozen else None)

    def encode_units(self, units: Sequence[str]) -> Tensor:
        """(N, D) vectors of a flat list of units."""
        return self.proj(self.norm(self._bags(units, frozen=False)[0]))  # (N, D)

    def frozen_units(self, units: Sequence[str]) -> Tensor:
        """(N, code_dim) sums of the random codes, every feature weighted alike: their
        cosines approximate the lexical overlap of two units."""
        return self._bags(units, learned=False)[1]

    def encode_with_frozen_units(self, units: Sequence[str]) -> tuple[Tensor, Tensor]:
        learned, frozen = self._bags(units)
        return self.proj(self.norm(learned)), frozen  # (N, D), (N, code_dim)

"""Unit encoders: a batch of featurized units (segmenter.features) -> vectors (B, T, D).

``HashedNgramEncoder`` needs no download. Each unit becomes a bag of hashed
features (words, word bigrams, character trigrams); each feature bucket has a
fixed random code (random indexing: sums of random codes preserve lexical overlap
between sentences, which is what topic segmentation feeds on) and a learned scalar
weight (so the model can learn to ignore frequent, uninformative features). The
weighted bag is projected to the model width. The random codebook is regenerated
from its seed, so it costs no parameters and no checkpoint space.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmenter.core.bounds import Number
from segmenter.features.featurizer import HashedBags, UnitFeature

Features = Mapping[str, Tensor]  # a batch from segmenter.features.Featurizer


def pad_units(vectors: Tensor, mask: Tensor) -> Tensor:
    """Scatter (N, D) unit vectors of concatenated documents into (B, T, D) by the mask
    (B, T) (True at real units, row-major: the documents' units in order)."""
    out = vectors.new_zeros(*mask.shape, vectors.shape[-1])  # (B, T, D)
    out[mask] = vectors
    return out


class UnitEncoder(nn.Module):
    """Base of every encoder: subclasses map the batch's units, flattened in document order,
    to (N, dim) vectors (``encode_units``); they are padded back to (B, T, dim) here, once
    for all. What an encoder reads is what ``unit_features`` declares."""

    dim: int

    def unit_features(self, **settings) -> list[UnitFeature]:
        raise NotImplementedError

    def encode_units(self, feats: Features) -> Tensor:
        raise NotImplementedError

    def frozen_units(self, feats: Features) -> Tensor:
        """(N, F) frozen vectors of the units: what the encoder knows before learning, which
        no training changes, for comparing units (the cohesion and similarity features)."""
        raise NotImplementedError

    def encode_with_frozen_units(self, feats: Features) -> tuple[Tensor, Tensor]:
        """Both at once, (N, D) and (N, F); encoders that derive one from the other
        override this to do the shared work once."""
        return self.encode_units(feats), self.frozen_units(feats)

    def forward(self, feats: Features, mask: Tensor) -> Tensor:
        """A batch's features and mask (B, T) -> x (B, T, D)."""
        return pad_units(self.encode_units(feats), mask)

    def frozen(self, feats: Features, mask: Tensor) -> Tensor:
        """-> frozen vectors (B, T, F)."""
        return pad_units(self.frozen_units(feats), mask)

    def encode_with_frozen(self, feats: Features, mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> x (B, T, D), frozen vectors (B, T, F)."""
        x, e = self.encode_with_frozen_units(feats)
        return pad_units(x, mask), pad_units(e, mask)


class ProjectedVectors(UnitEncoder):
    """Vectors its featurizer made before the network (a frozen sentence encoder's), each
    layer-normalised and projected to the model width: only the projection trains, so every
    attention type works unchanged. ``key`` names the feature's tensor, (N, width)."""

    key: str

    def __init__(self, *, dim: int, width: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def embed(self, feats: Features) -> Tensor:
        """(N, width) the units' vectors."""
        return feats[self.key].to(self.proj.weight.device)

    def encode_units(self, feats: Features) -> Tensor:
        return self.proj(self.norm(self.embed(feats)))  # (N, D)

    def frozen_units(self, feats: Features) -> Tensor:
        return self.embed(feats)  # (N, width)

    def encode_with_frozen_units(self, feats: Features) -> tuple[Tensor, Tensor]:
        e = self.embed(feats)  # (N, width), computed once for both
        return self.proj(self.norm(e)), e


# The settings' bounds (segmenter.core.bounds): checked here, by the command line (encoder.*)
# and by the checkpoint loader (segmenter.models.registry), whose guard the upper ends are.
NUM_BUCKETS = Number(lo=1, hi=1 << 22)
CODE_DIM = Number(lo=1, hi=16_384)
CHAR_NGRAM = Number(lo=0, hi=64)


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
        NUM_BUCKETS.check("num_buckets", num_buckets)
        CODE_DIM.check("code_dim", code_dim)
        CHAR_NGRAM.check("char_ngram", char_ngram)
        self.dim, self.num_buckets, self.code_dim = dim, num_buckets, code_dim
        self.char_ngram, self.seed = char_ngram, seed
        g = torch.Generator().manual_seed(seed)
        codes = torch.randn(num_buckets, code_dim, generator=g) / code_dim**0.5
        self.register_buffer("codes", codes, persistent=False)  # rebuilt from seed, never saved
        self.feature_weight = nn.Parameter(torch.ones(num_buckets))
        self.norm = nn.LayerNorm(code_dim)
        self.proj = nn.Linear(code_dim, dim)

    def unit_features(self, **settings) -> list[UnitFeature]:
        return [HashedBags(num_buckets=self.num_buckets, char_ngram=self.char_ngram)]

    def _bags(
        self, feats: Features, *, learned: bool = True, frozen: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """(N, code_dim) bags of the units' codes: weighted by the learned feature weights,
        and unweighted (the frozen view); None where not asked. Each feature counts
        1/sqrt(its unit's number of features)."""
        ids, sizes = feats["hashed_ids"], feats["hashed_sizes"]  # (F,), (N,)
        offsets = torch.cumsum(sizes, 0) - sizes  # (N,) where each unit's ids start
        # The unit of each id: a 1 where every unit but the first starts, summed up. (The same
        # as repeat_interleave(arange(N), sizes), whose data-dependent length the ONNX export
        # cannot translate.)
        unit = torch.zeros_like(ids).index_add_(0, offsets[1:], torch.ones_like(offsets[1:])).cumsum(0)  # (F,)
        norm = sizes.float().rsqrt()[unit]  # (F,) 1/sqrt(size) of each id's unit

        def bag(weights: Tensor) -> Tensor:
            return F.embedding_bag(ids, self.codes, offsets, mode="sum", per_sample_weights=weights)

        return (bag(self.feature_weight[ids] * norm) if learned else None, bag(norm) if frozen else None)

    def encode_units(self, feats: Features) -> Tensor:
        """(N, D) vectors of the batch's units."""
        return self.proj(self.norm(self._bags(feats, frozen=False)[0]))  # (N, D)

    def frozen_units(self, feats: Features) -> Tensor:
        """(N, code_dim) sums of the random codes, every feature weighted alike: their
        cosines approximate the lexical overlap of two units."""
        return self._bags(feats, learned=False)[1]

    def encode_with_frozen_units(self, feats: Features) -> tuple[Tensor, Tensor]:
        learned, frozen = self._bags(feats)
        return self.proj(self.norm(learned)), frozen  # (N, D), (N, code_dim)

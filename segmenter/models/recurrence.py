"""Whole-document recurrence features of unit vectors (the kernel of ``SelfSimilarity``):
how strongly, how often and in which order each unit recurs in its document. Used on the
encoder's frozen vectors inside the network, and on surface n-gram counts by the featurizer
(segmenter.features), which computes them before the network sees the document."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def diagonal_shift(s: Tensor, offset: int) -> Tensor:
    """(B, T, T) -> out[:, i, j] = s[:, i + offset, j + offset], zeros past either end:
    one step along the diagonals of a self-similarity matrix."""
    if offset == 0:
        return s
    # Pad, then slice T x T: no branch on T (see segmenter.models.net.shift).
    t = s.shape[-1]
    if offset > 0:
        return F.pad(s, (0, offset, 0, offset))[:, offset : offset + t, offset : offset + t]  # (B, T, T)
    return F.pad(s, (-offset, 0, -offset, 0))[:, :t, :t]  # (B, T, T)


def recurrence_features(v: Tensor, mask: Tensor, *, thresholds: Sequence[float], stripe: int) -> Tensor:
    """v (B, T, F) unit vectors of one view, mask (B, T) -> (B, T, 2K + 1) the features
    ``SelfSimilarity`` describes (K = 4 + 2 * len(thresholds)), zeros at padding."""
    thresholds = sorted(thresholds)
    t = v.shape[1]
    m = mask.to(v.dtype)  # (B, T)
    u = F.normalize(v.float(), dim=-1) * m[..., None]  # (B, T, F) unit length, zeros at padding
    s = u @ u.transpose(1, 2)  # (B, T, T) cosines
    pair = mask[:, :, None] & mask[:, None, :]  # (B, T, T) both real units
    ones = torch.ones(t, t, dtype=torch.bool, device=v.device)  # boolean (T, T) masks: 1 byte a pair
    after = pair & ones.triu(1)  # j > i
    before = pair & ones.tril(-1)  # j < i
    other = after | before  # j != i
    far = pair & (ones.triu(stripe + 1) | ones.tril(-stripe - 1))  # |j - i| > stripe
    # Stripe: mean of S along the diagonal through (i, j), over real pairs only.
    s_real, real = s * pair, pair.to(s.dtype)  # (B, T, T) each
    num, den = torch.zeros_like(s), torch.zeros_like(s)
    for o in range(-stripe, stripe + 1):
        num += diagonal_shift(s_real, o)
        den += diagonal_shift(real, o)
    d = num.div_(den.clamp_(min=1))  # (B, T, T)
    del s_real, real, den

    def masked_max(x: Tensor, where: Tensor) -> Tensor:  # (B, T): 0 where nothing qualifies
        return x.masked_fill(~where, float("-inf")).amax(-1).clamp(min=0)

    def counts(x: Tensor, where: Tensor) -> list[Tensor]:  # per threshold, (B, T)
        return [torch.log1p(((x >= tau) & where).sum(-1).to(x.dtype)) for tau in thresholds]

    strongest = masked_max(s, other)  # (B, T)
    middle = thresholds[len(thresholds) // 2]
    share = ((strongest >= middle).to(s.dtype) * m).sum(-1) / m.sum(-1).clamp(min=1)  # (B,)
    own = (
        torch.stack(
            [
                strongest,
                masked_max(s, before),
                masked_max(s, after),
                *counts(s, other),
                masked_max(d, far),
                *counts(d, far),
            ],
            dim=-1,
        )
        * m[..., None]
    )  # (B, T, K), 0 at padding
    # The same, relative to the document's most recurrent unit: a chorus is the block
    # that recurs *most* in its song, whatever the song's overall repetitiveness.
    rel = own / own.amax(dim=1, keepdim=True).clamp(min=1e-6)  # (B, T, K)
    return torch.cat((own, rel, share[:, None, None].expand(-1, t, 1)), dim=-1) * m[..., None]  # (B, T, 2K + 1)

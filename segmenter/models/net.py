"""The segmentation network, top to bottom: encoder (+ cohesion profile) -> residual
blocks -> per-unit head.

The attention inside each block is passed in (a factory, so every layer gets its
own parameters): the network never knows which kind it holds. So is the cohesion
profile, the similarity features every attention type shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmenter.core.bounds import Number
from segmenter.features.featurizer import MASK, SurfaceRecurrence, UnitFeature
from segmenter.models.attention import Attention, AttentionOutput
from segmenter.models.encoder import Features
from segmenter.models.recurrence import recurrence_features

# The network's settings' bounds (segmenter.core.bounds): checked here, by the command line
# (model.net.*) and by the checkpoint loader (segmenter.models.registry). The upper ends are
# ten to a hundred times the sizes this project uses: a stranger's checkpoint cannot ask for
# terabytes.
DIM = Number(lo=1, hi=16_384)
NUM_LAYERS = Number(lo=1, hi=256)
FF_DIM = Number(lo=1, hi=65_536)
NUM_CLASSES = Number(lo=2, hi=65_536)
DROPOUT = Number(lo=0, hi=1, whole=False)
REACH = Number(lo=1, hi=4_096)  # CohesionProfile's radius and each of its block sizes
STRIPE = Number(lo=0, hi=4_096)
SURFACE_NGRAM = Number(lo=1, hi=64)
SURFACE_BUCKETS = Number(lo=1, hi=1 << 16)


def sinusoidal(t: int, d: int, device: torch.device, dtype: torch.dtype, start: Tensor | None = None) -> Tensor:
    """(T, D) fixed sine/cosine position codes (Vaswani et al. 2017) of positions 0..T-1;
    with ``start`` (B,), (B, T, D) codes of positions start_b..start_b+T-1 (a window of a
    longer document keeps the positions it has in the whole document)."""
    inv_freq = 10_000.0 ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # (D/2,)
    pos = torch.arange(t, device=device, dtype=torch.float32)  # (T,)
    if start is not None:
        pos = start.to(device=device, dtype=torch.float32)[:, None] + pos  # (B, T)
    angles = pos[..., None] * inv_freq  # (T, D/2) or (B, T, D/2)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(dtype)  # (T, D) or (B, T, D)


class NetOutput(NamedTuple):
    logits: Tensor  # (B, T, C) per-unit class scores
    mask: Tensor  # (B, T) True at real units
    boundary_logits: Tensor | None  # (L, B, T) from boundary-predicting attention, else None


def shift(x: Tensor, offset: int) -> Tensor:
    """(B, T, ...) -> out[:, i] = x[:, i + offset], zeros past either end."""
    if offset == 0:
        return x
    # Pad, then slice T: no branch on T (an offset past the end reads only zeros), so an
    # exported graph (ONNX) holds for documents shorter than the offset too.
    t = x.shape[1]
    pad = [0, 0] * (x.dim() - 2)  # F.pad counts dims from the last
    if offset > 0:
        return F.pad(x, pad + [0, offset])[:, offset : offset + t]  # (B, T + offset, ...) -> (B, T, ...)
    return F.pad(x, pad + [-offset, 0])[:, :t]  # (B, T - offset, ...) -> (B, T, ...)


class CohesionProfile(nn.Module):
    """U [cos(e_i, e_{i+o}) for 0 < |o| <= radius; cos(left_k, right_k) for k in blocks; flags]

    Lexical cohesion, the signal boundaries are made of: how similar unit i is to each
    neighbour, and how similar the k units ending at i are to the k units after it
    (TextTiling's gap score at k = 1, 2, ...; a drop marks a topic shift). Attention
    compares units only inside its softmax, and a network fed only unit vectors learns
    to recognise the training sentences themselves. These are similarities of the
    encoder's frozen vectors e (nothing trained moves them), not word identities, so what
    the network learns from them carries over to unseen text. A neighbour past the
    document edge or in the padding counts 0 and is flagged. U: one Linear.
    """

    def __init__(self, *, dim: int, radius: int = 10, blocks: Sequence[int] = (1, 2, 3, 4, 6, 8)) -> None:
        super().__init__()
        if not REACH.allows(radius) or not blocks or not all(REACH.allows(k) for k in blocks):
            raise ValueError(
                f"radius={radius} and every block size in blocks={list(blocks)} must be {REACH.describe()}"
            )
        self.radius, self.blocks = radius, tuple(int(k) for k in blocks)
        self.proj = nn.Linear(4 * radius + len(self.blocks), dim)  # U

    @property
    def reach(self) -> int:
        """How many units to either side a unit's features depend on."""
        return max(self.radius, *self.blocks)

    def forward(self, e: Tensor, mask: Tensor) -> Tensor:
        """e (B, T, F) frozen unit vectors, mask (B, T) -> (B, T, dim) features."""
        m = mask[..., None].to(e.dtype)  # (B, T, 1)
        u = F.normalize(e, dim=-1) * m  # (B, T, F) unit length, zeros at padding
        offsets = [o for o in range(-self.radius, self.radius + 1) if o]
        # One shifted copy at a time: attention's band() would hold all 2r at once (B, T, F, 2r + 1).
        sims = [(u * shift(u, o)).sum(-1) for o in offsets]  # 2r x (B, T)
        seen = [shift(m, o)[..., 0] * m[..., 0] for o in offsets]  # 2r x (B, T): 1 = a real neighbour
        # Block sums from cumulative sums: left_k(i) = u[i-k+1..i], right_k(i) = u[i+1..i+k],
        # clipped at the edges (padding adds nothing: u is 0 there).
        t = e.shape[1]
        c = F.pad(u.cumsum(1), (0, 0, 1, 0))  # (B, T + 1, F): c[:, j] = u[:, :j].sum(1)
        i = torch.arange(1, t + 1, device=e.device)  # (T,): c index just after unit i - 1
        gaps = []
        for k in self.blocks:
            left = c[:, i] - c[:, (i - k).clamp(min=0)]  # (B, T, F)
            right = c[:, (i + k).clamp(max=t)] - c[:, i]  # (B, T, F)
            gaps.append(F.cosine_similarity(left, right, dim=-1, eps=1e-6) * m[..., 0])  # (B, T)
        feats = torch.stack(sims + seen + gaps, dim=-1)  # (B, T, 4r + K)
        return self.proj(feats)  # (B, T, dim)


class SelfSimilarity(nn.Module):
    """U [how unit i recurs anywhere in its document, per view of the units]

    A chorus is, above all, the block that recurs; a neighbourhood (``CohesionProfile``)
    cannot see that. For each view a (T, T) cosine matrix S of the document's units
    (never a (T, T, F) tensor) gives, for unit i, over the other units j:

    - how strongly it recurs: max_j S_ij, and that max over the units before and after i;
    - how often: log(1 + #{j : S_ij >= tau}) for each threshold tau;
    - whether its neighbours recur with it, in order (a repeated block is a stripe along a
      diagonal of S): the stripe score D_ij, the mean of S over (i + o, j + o) for
      |o| <= stripe, then max and counts of D over |i - j| > stripe;
    - each of these relative to the document's largest value (the chorus is the block that
      recurs most in its song), and how repetitive the whole document is: the share of its
      units with max_j S_ij >= the middle threshold (the same for every unit).

    Views: the encoder's fixed vectors (``fixed``) and a surface view (``surface``): counts
    of the character n-grams of the normalised text, so "(Yeah) I'm on my way" and
    "I'm on my way" are near repeats. The features are similarities, not words: they carry
    over to unseen text and to any corpus. U: one Linear.

    ``gate``: the output is scaled per channel by g, a learned vector that starts at 0
    (ReZero, Bachlechner et al. 2021): the network starts as the one without the view and
    opens it as far as training finds recurrence useful. Measured (docs/results.md): on
    Choi, where recurrence says nothing, 3-11 Pk 5.55% with the gated view against 5.25%
    without (two seeds each; 5.9% vs 4.8% ungated); on verse/chorus 82.8% macro F1 gated,
    83.9% ungated (one run each).
    """

    def __init__(
        self,
        *,
        dim: int,
        gate: bool = False,
        thresholds: Sequence[float] = (0.5, 0.7, 0.9),
        stripe: int = 2,
        fixed: bool = True,
        surface: bool = True,
        surface_ngram: int = 3,
        surface_buckets: int = 4096,
    ) -> None:
        super().__init__()
        if not fixed and not surface:
            raise ValueError("SelfSimilarity needs at least one view: fixed=False and surface=False")
        if not thresholds or any(not -1.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds={list(thresholds)} must be a non-empty list of cosines in [-1, 1]")
        STRIPE.check("stripe", stripe)
        SURFACE_NGRAM.check("surface_ngram", surface_ngram)
        SURFACE_BUCKETS.check("surface_buckets", surface_buckets)
        self.thresholds = tuple(float(t) for t in sorted(thresholds))
        self.stripe, self.fixed, self.surface = stripe, fixed, surface
        self.surface_ngram, self.surface_buckets = surface_ngram, surface_buckets
        # (max, before, after; counts of S, D; max D) x (own, relative); share
        self.per_view = 2 * (3 + 2 * len(self.thresholds) + 1) + 1
        self.proj = nn.Linear(self.per_view * (fixed + surface), dim)  # U
        # False in checkpoints written before the gate existed: they load unchanged.
        self.gate = nn.Parameter(torch.zeros(dim)) if gate else None  # g

    def view_features(self, v: Tensor, mask: Tensor) -> Tensor:
        """v (B, T, F) unit vectors of one view -> (B, T, per_view) recurrence features."""
        return recurrence_features(v, mask, thresholds=self.thresholds, stripe=self.stripe)

    def unit_features(self, **settings) -> list[UnitFeature]:
        if not self.surface:
            return []
        return [
            SurfaceRecurrence(
                ngram=self.surface_ngram, buckets=self.surface_buckets, thresholds=self.thresholds, stripe=self.stripe
            )
        ]

    def forward(self, feats: Features, e: Tensor, mask: Tensor) -> Tensor:
        """The batch's features (the surface view's, computed by the featurizer), e (B, T, F)
        the encoder's fixed vectors, mask (B, T) -> (B, T, dim) features."""
        views = []
        if self.fixed:
            views.append(self.view_features(e, mask))
        if self.surface:
            views.append(feats["surface"].to(e.device))  # (B, T, per_view)
        out = self.proj(torch.cat(views, dim=-1).to(self.proj.weight.dtype))  # (B, T, dim)
        return out if self.gate is None else out * self.gate


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, *, dim: int, attention: Attention, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = attention
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        a = self.attention(self.norm1(x), mask)
        x = x + self.drop(a.y)
        x = x + self.drop(self.ff(self.norm2(x)))
        return AttentionOutput(x, a.boundary_logits)


class LabelDecoding:
    """From per-unit scores (logits) to labels and probabilities: the CRF (``self.crf``, or
    None) where the network has one. Shared by ``SegmenterNet`` and whatever else runs the
    network and keeps its CRF (the ONNX backend, segmenter.inference.onnx_backend)."""

    crf: nn.Module | None

    def unit_probs(self, logits: Tensor, mask: Tensor, *, structured: bool = True) -> Tensor:
        """(B, T, C) each unit's label probabilities: the CRF's marginals where the net has
        one (and ``structured``: the probabilities of the model that decodes), else softmax."""
        if self.crf is not None and structured:
            return self.crf.marginals(logits, mask)
        return logits.float().softmax(dim=-1)

    def decode(self, logits: Tensor, mask: Tensor, *, structured: bool = True) -> Tensor:
        """(B, T, C) scores -> (B, T) labels: the CRF's best sequence where the net has one
        (and ``structured``), else each unit's argmax."""
        if self.crf is not None and structured:
            return self.crf.decode(logits, mask)
        return logits.argmax(dim=-1)


class SegmenterNet(LabelDecoding, nn.Module):
    def __init__(
        self,
        *,
        encoder: nn.Module,
        attention: Callable[[], Attention],
        dim: int,
        num_layers: int,
        ff_dim: int,
        num_classes: int,
        dropout: float = 0.1,
        cohesion: nn.Module | None = None,
        similarity: nn.Module | None = None,
        crf: Callable[..., nn.Module] | None = None,
        content: bool = True,
    ) -> None:
        """cohesion: similarity features of the encoder's fixed vectors, added to the
        input of the blocks (``CohesionProfile``); None: none. content: whether the blocks
        also see the unit vectors themselves. Words tell section types apart (verse and
        chorus), but on topic segmentation of unseen text (Choi's source-disjoint split)
        a network that sees them memorises training sentences: content=False keeps only
        positions and cohesion, what carries over. similarity: whole-document recurrence
        features (``SelfSimilarity``), added like the cohesion profile; None: none.
        crf: a factory ``crf(num_classes=...)`` of a structured decoder over the per-unit
        scores (``LinearChainCRF``: learned label transitions, Viterbi decoding); None:
        each unit takes its own argmax."""
        super().__init__()
        DIM.check("dim", dim)
        NUM_LAYERS.check("num_layers", num_layers)
        FF_DIM.check("ff_dim", ff_dim)
        NUM_CLASSES.check("num_classes", num_classes)
        DROPOUT.check("dropout", dropout)
        if cohesion is None and similarity is None and not content:
            raise ValueError(
                "content=False needs a cohesion or similarity module: the blocks would see nothing but positions"
            )
        if getattr(encoder, "dim", dim) != dim:
            raise ValueError(f"encoder width {encoder.dim} != model width dim={dim}")
        self.num_classes = num_classes
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.cohesion, self.similarity, self.content = cohesion, similarity, content
        self.blocks = nn.ModuleList(
            Block(dim=dim, attention=attention(), ff_dim=ff_dim, dropout=dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.crf = crf(num_classes=num_classes) if crf is not None else None

    def forward(self, feats: Features, *, start: Tensor | None = None) -> NetOutput:
        """``feats``: a batch from ``segmenter.features.Featurizer`` (``Featurizer.for_net``
        of this network), with its ``mask`` (B, T). ``start`` (B,): position of each input's
        first unit in its document (windows of a long document); None = every input starts
        its document."""
        mask = feats[MASK]  # (B, T)
        if self.cohesion is None and self.similarity is None:
            x = self.encoder(feats, mask)  # (B, T, D)
        else:
            # e (B, T, F): the encoder's frozen vectors, which training never moves
            if self.content:
                x, e = self.encoder.encode_with_frozen(feats, mask)  # (B, T, D), (B, T, F)
            else:
                e = self.encoder.frozen(feats, mask)
                x = e.new_zeros(*mask.shape, self.head.in_features)  # (B, T, D)
            if self.cohesion is not None:
                x = x + self.cohesion(e, mask)  # (B, T, D)
            if self.similarity is not None:
                x = x + self.similarity(feats, e, mask)  # (B, T, D)
        # Absolute positions in the inputs let the values (not only the scores) carry
        # where a unit sits, so a block can tell whether its neighbours on the left or
        # on the right are the similar ones: the cue for a boundary.
        x = self.drop(x + sinusoidal(x.shape[1], x.shape[2], x.device, x.dtype, start))
        boundary = []
        for block in self.blocks:
            x, b = block(x, mask)
            if b is not None:
                boundary.append(b)
        logits = self.head(self.norm(x))  # (B, T, C)
        return NetOutput(logits, mask, torch.stack(boundary) if boundary else None)

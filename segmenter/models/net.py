"""The segmentation network, top to bottom: encoder -> residual blocks -> per-unit head.

The attention inside each block is passed in (a factory, so every layer gets its
own parameters): the network never knows which kind it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmenter.models.attention import AttentionOutput


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


class NeighbourProducts(nn.Module):
    """x_i + U V [x_i * x_{i-1}, x_i * x_{i+1}]: adjacent similarity.

    Attention compares units only inside its softmax; its output cannot say how
    similar two units were. Each of the ``rank`` rows of V sums the channel products
    into one weighted dot product (a learned similarity of unit i to a neighbour),
    the lexical-cohesion signal boundaries are made of (as TextTiling's gap scores);
    U writes them into the residual stream. Low rank keeps it ~6K parameters.
    """

    def __init__(self, *, dim: int, rank: int = 16) -> None:
        super().__init__()
        self.similarity = nn.Linear(2 * dim, rank)  # V
        self.proj = nn.Linear(rank, dim)  # U

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x0 = x * mask[..., None]  # padding never leaks into the last real unit
        prev = F.pad(x0, (0, 0, 1, 0))[:, :-1]  # (B, T, D): x_{i-1}, zeros at i = 0
        nxt = F.pad(x0, (0, 0, 0, 1))[:, 1:]  # (B, T, D): x_{i+1}, zeros past the end
        return x + self.proj(self.similarity(torch.cat((x0 * prev, x0 * nxt), dim=-1)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, *, dim: int, attention: nn.Module, ff_dim: int, dropout: float) -> None:
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


class SegmenterNet(nn.Module):
    def __init__(
        self,
        *,
        encoder: nn.Module,
        attention: Callable[[], nn.Module],
        dim: int,
        num_layers: int,
        ff_dim: int,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        if getattr(encoder, "dim", dim) != dim:
            raise ValueError(f"encoder width {encoder.dim} != model width dim={dim}")
        self.num_classes = num_classes
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.neighbours = NeighbourProducts(dim=dim)
        self.blocks = nn.ModuleList(
            Block(dim=dim, attention=attention(), ff_dim=ff_dim, dropout=dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, docs: Sequence[Sequence[str]], *, start: Tensor | None = None) -> NetOutput:
        """``start`` (B,): position of each input's first unit in its document (windows
        of a long document); None = every input starts its document."""
        x, mask = self.encoder(docs)  # (B, T, D), (B, T)
        return self.forward_features(x, mask, start=start)

    def forward_features(self, x: Tensor, mask: Tensor, *, start: Tensor | None = None) -> NetOutput:
        # Absolute positions in the inputs let the values (not only the scores) carry
        # where a unit sits, so a block can tell whether its neighbours on the left or
        # on the right are the similar ones: the cue for a boundary.
        x = self.drop(x + sinusoidal(x.shape[1], x.shape[2], x.device, x.dtype, start))
        x = self.neighbours(x, mask)
        boundary = []
        for block in self.blocks:
            x, b = block(x, mask)
            if b is not None:
                boundary.append(b)
        logits = self.head(self.norm(x))  # (B, T, C)
        return NetOutput(logits, mask, torch.stack(boundary) if boundary else None)

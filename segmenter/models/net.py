"""The segmentation network, top to bottom: encoder -> residual blocks -> per-unit head.

The attention inside each block is passed in (a factory, so every layer gets its
own parameters): the network never knows which kind it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from segmenter.models.attention import AttentionOutput


class NetOutput(NamedTuple):
    logits: Tensor  # (B, T, C) per-unit class scores
    mask: Tensor  # (B, T) True at real units
    boundary_logits: Tensor | None  # (L, B, T) from boundary-predicting attention, else None


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
        self.blocks = nn.ModuleList(
            Block(dim=dim, attention=attention(), ff_dim=ff_dim, dropout=dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, docs: Sequence[Sequence[str]]) -> NetOutput:
        x, mask = self.encoder(docs)  # (B, T, D), (B, T)
        return self.forward_features(x, mask)

    def forward_features(self, x: Tensor, mask: Tensor) -> NetOutput:
        x = self.drop(x)
        boundary = []
        for block in self.blocks:
            x, b = block(x, mask)
            if b is not None:
                boundary.append(b)
        logits = self.head(self.norm(x))  # (B, T, C)
        return NetOutput(logits, mask, torch.stack(boundary) if boundary else None)

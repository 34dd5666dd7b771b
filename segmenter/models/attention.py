"""The three attention modules, one interface.

Every module maps units ``x`` of shape (B, T, D) and a padding mask (B, T)
(True = real unit) to ``AttentionOutput(y, boundary_logits)``: ``y`` is (B, T, D),
``boundary_logits`` is (B, T) for modules that predict boundaries, else None.
The backbone treats all three alike; which one it gets is decided by the Hydra
``attention`` group, never by a branch in the model.

- ``SelfAttention``: full multi-head attention through the fused
  ``scaled_dot_product_attention`` kernels, O(T^2) time, O(T) memory.
- ``LocalizedAttention``: exact sliding window (each unit sees ``window_size // 2``
  neighbours on each side), O(T * w) time and memory: keys and values are gathered
  into (T, w) bands with ``unfold``; no T x T tensor exists, forward or backward.
- ``BoundaryAwareAttention``: a small MLP scores each unit's boundary probability
  and those scores bias the attention logits, by broadcasting.

Positions enter through rotary embeddings on queries and keys (parameter free,
relative), applied identically in all three.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class AttentionOutput(NamedTuple):
    y: Tensor  # (B, T, D)
    boundary_logits: Tensor | None  # (B, T) or None


# ----------------------------------------------------------------------------- helpers


def rotary(x: Tensor, base: float = 10_000.0) -> Tensor:
    """Rotate pairs of channels by an angle proportional to the position (RoPE).

    x: (B, H, T, Dh) with Dh even. Positions are 0..T-1; since q.k then depends on
    i - j only, padding at the end of a sequence never moves the real units.
    """
    t, dh = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    angles = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (T, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]  # (B, H, T, Dh/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def band(t: Tensor, radius: int, value: float | bool = 0) -> Tensor:
    """Gather, for every position i, the 2r+1 neighbours i-r..i+r along dim 2.

    t: (B, H, T, ...) -> (B, H, T, ..., w). Positions past either end read ``value``.
    ``unfold`` returns a strided view, so this allocates only the padded copy.
    """
    pad = [0, 0] * (t.dim() - 3) + [radius, radius]  # F.pad counts dims from the last
    return F.pad(t, pad, value=value).unfold(2, 2 * radius + 1, 1)


def dense_weights(q: Tensor, k: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
    """Explicit softmax(q k^T / sqrt(Dh) + bias) with padded keys removed: (B, H, T, T).

    Only for ``attention_weights`` (plots, debugging); the forward passes never call it.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


# ----------------------------------------------------------------------------- modules


class MultiHeadAttention(nn.Module):
    """Projections shared by the three variants; subclasses decide who attends to whom."""

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if (dim // num_heads) % 2 != 0:
            raise ValueError(f"head size dim/num_heads={dim // num_heads} must be even for rotary positions")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, Dh)
        return rotary(q), rotary(k), v

    def _merge(self, y: Tensor) -> Tensor:
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh))  # (B, T, D)

    @property
    def _p(self) -> float:
        return self.dropout if self.training else 0.0


class SelfAttention(MultiHeadAttention):
    """Full multi-head self-attention; padded keys are masked out."""

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)
        # A boolean key mask keeps SDPA on its fused, O(T)-memory kernel.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self._p)
        return AttentionOutput(self._merge(y), None)

    @torch.no_grad()
    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, T) attention probabilities."""
        q, k, _ = self._heads(x)
        return dense_weights(q, k, mask)


class LocalizedAttention(MultiHeadAttention):
    """Exact sliding-window attention: unit i attends to units i-r..i+r, r = window_size // 2."""

    def __init__(self, *, dim: int, num_heads: int, window_size: int = 7, dropout: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"window_size={window_size} must be a positive odd number")
        self.window_size = window_size
        self.radius = window_size // 2

    def _band_probs(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        r = self.radius
        kb = band(k, r)  # (B, H, T, Dh, w)
        scores = torch.einsum("bhtd,bhtdw->bhtw", q, kb) / math.sqrt(q.shape[-1])  # (B, H, T, w)
        valid = band(mask[:, None, :, None], r, value=False)[..., 0, :]  # (B, 1, T, w)
        # A padded query may have no real neighbour; letting every query see itself
        # keeps its row finite (no NaN in the backward) and changes no real unit.
        valid = valid | (torch.arange(2 * r + 1, device=q.device) == r)
        return scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)
        probs = F.dropout(self._band_probs(q, k, mask), self._p)  # (B, H, T, w)
        y = torch.einsum("bhtw,bhtdw->bhtd", probs, band(v, self.radius))  # (B, H, T, Dh)
        return AttentionOutput(self._merge(y), None)

    @torch.no_grad()
    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, w) banded probabilities: column c is the neighbour at offset c - r."""
        q, k, _ = self._heads(x)
        return self._band_probs(q, k, mask)


class BoundaryAwareAttention(MultiHeadAttention):
    """Attention biased by predicted boundary probabilities p (B, T).

    ``bias="mean"``: bias[i, j] = (p_i + p_j) / (2 * temperature), the reference
    system's form. The p_i term is constant along a softmax row and cancels, so the
    bias is a per-key term; it rides in one extra head channel (q gets a 1, k gets
    the bias), which keeps SDPA on its fused kernel and never builds a T x T bias.

    ``bias="segment"``: bias[i, j] = -|c_i - c_j| / temperature with c = cumsum(p),
    minus the boundary mass between i and j, so attention fades across predicted
    boundaries. It is not separable, so it is built for ``query_block`` queries at a
    time, each block recomputed in the backward (activation checkpointing): peak
    memory O(query_block * T) instead of O(T^2).
    """

    BIASES = ("mean", "segment")

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: str = "mean",
        temperature: float = 1.0,
        predictor_hidden: int | None = None,
        query_block: int = 1024,
    ) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        if bias not in self.BIASES:
            raise ValueError(f"bias={bias!r} is not one of {self.BIASES}")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if query_block < 1:
            raise ValueError(f"query_block={query_block} must be >= 1")
        hidden = predictor_hidden or dim // 2
        self.bias, self.temperature, self.query_block = bias, temperature, query_block
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def boundary_probs(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.predictor(x).squeeze(-1)  # (B, T)
        return logits, torch.sigmoid(logits) * mask  # padding carries no boundary mass

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)
        logits, p = self.boundary_probs(x, mask)
        if self.bias == "mean":
            y = self._attend_mean(q, k, v, p, mask)
        else:
            y = self._attend_segment(q, k, v, p, mask)
        return AttentionOutput(self._merge(y), logits)

    def _attend_mean(self, q: Tensor, k: Tensor, v: Tensor, p: Tensor, mask: Tensor) -> Tensor:
        b, h, t, dh = q.shape
        scale = 1.0 / math.sqrt(dh)
        key_bias = (p / (2 * self.temperature))[:, None, :, None].expand(b, h, t, 1)  # (B, H, T, 1)
        # q' . k' * scale = q . k * scale + key_bias: append [1] to q, [bias/scale] to k,
        # and a zero channel to v so all three share a width (the fused kernel needs it).
        q = torch.cat((q, q.new_ones(b, h, t, 1)), dim=-1)  # (B, H, T, Dh+1)
        k = torch.cat((k, key_bias / scale), dim=-1)  # (B, H, T, Dh+1)
        v = torch.cat((v, v.new_zeros(b, h, t, 1)), dim=-1)  # (B, H, T, Dh+1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self._p, scale=scale
        )
        return y[..., :dh]  # (B, H, T, Dh)

    def _segment_bias(self, c_q: Tensor, c_k: Tensor, mask: Tensor) -> Tensor:
        # c_q (B, Tq), c_k (B, T) -> (B, 1, Tq, T) float mask with -inf on padded keys
        bias = -(c_q[:, :, None] - c_k[:, None, :]).abs() / self.temperature
        return bias.masked_fill(~mask[:, None, :], float("-inf"))[:, None]

    def _attend_segment(self, q: Tensor, k: Tensor, v: Tensor, p: Tensor, mask: Tensor) -> Tensor:
        c = p.cumsum(dim=-1)  # (B, T)
        p_drop = self._p

        def block(qb: Tensor, cb: Tensor, k: Tensor, v: Tensor, c: Tensor) -> Tensor:
            bias = self._segment_bias(cb, c, mask)  # (B, 1, Tb, T)
            return F.scaled_dot_product_attention(qb, k, v, attn_mask=bias, dropout_p=p_drop)

        t = q.shape[2]
        if t <= self.query_block:
            return block(q, c, k, v, c)
        outs = []
        for s in range(0, t, self.query_block):  # blocks of queries, not positions
            qb, cb = q[:, :, s : s + self.query_block], c[:, s : s + self.query_block]
            if torch.is_grad_enabled():
                outs.append(checkpoint(block, qb, cb, k, v, c, use_reentrant=False))
            else:
                outs.append(block(qb, cb, k, v, c))
        return torch.cat(outs, dim=2)  # (B, H, T, Dh)

    def full_bias(self, p: Tensor) -> Tensor:
        """The whole (B, 1, T, T) bias of the configured form, for plots and tests."""
        if self.bias == "mean":
            return ((p[:, :, None] + p[:, None, :]) / (2 * self.temperature))[:, None]
        c = p.cumsum(dim=-1)
        return (-(c[:, :, None] - c[:, None, :]).abs() / self.temperature)[:, None]

    @torch.no_grad()
    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, T) attention probabilities, boundary bias included."""
        q, k, _ = self._heads(x)
        _, p = self.boundary_probs(x, mask)
        return dense_weights(q, k, mask, self.full_bias(p))

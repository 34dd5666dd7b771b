"""The attention modules, one interface (``Attention``).

Every module maps units ``x`` of shape (B, T, D) and a padding mask (B, T)
(True = real unit) to ``AttentionOutput(y, boundary_logits)``: ``y`` is (B, T, D),
``boundary_logits`` is (B, T) for modules that predict boundaries, else None.
The backbone treats all alike; which one it gets is decided by the Hydra
``attention`` group, never by a branch in the model. A new kind is a class that
keeps this contract plus ``conf/attention/<name>.yaml`` naming it (``_partial_: true``:
the network builds one per layer); tests and tools find it there.

- ``SelfAttention``: full multi-head attention through the fused
  ``scaled_dot_product_attention`` kernels, O(T^2) time, O(T) memory. (On CPU the
  fused kernel has no dropout: with attention dropout > 0 in training, SDPA falls
  back to its O(T^2)-memory math path.)
- ``LocalizedAttention``: exact sliding window (each unit sees ``window_size // 2``
  neighbours on each side), O(T * w) time and memory: queries are cut into blocks
  of ``block_size``, each block attends to its keys plus ``r`` on either side, and
  a hand-written backward keeps every tensor at O(T * (block_size + 2r)); no T x T
  tensor exists, forward or backward. On CUDA the same window runs through
  FlexAttention (one fused, compiled kernel over the tiles the window reaches): the
  blocked kernel launches dozens of small kernels, which dominate on a GPU.
- ``BoundaryAwareAttention``: a small MLP scores each unit's boundary probability
  and those scores bias the attention logits, by broadcasting. On CUDA both forms keep
  a fused kernel: the mean form's head is padded to a multiple of 8, the segment form
  runs through FlexAttention with its bias as a ``score_mod``.

Which kernel runs is decided by ``use_flex`` from the device (``kernel="auto"``), never
by the network. Every path accepts float32, bf16 and fp16, with or without autocast.

Positions enter through rotary embeddings on queries and keys (parameter free,
relative), applied identically in all three.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from segmenter.core.bounds import Number


class AttentionOutput(NamedTuple):
    y: Tensor  # (B, T, D)
    boundary_logits: Tensor | None  # (B, T) or None


@runtime_checkable
class Attention(Protocol):
    """The contract of an attention module (an ``nn.Module``): ``forward(x, mask)`` with
    x (B, T, D) and mask (B, T), True at real units, returns ``AttentionOutput``: y (B, T, D),
    padded positions free to hold anything but never changing a real unit's output; and
    boundary_logits (B, T) when the module predicts boundaries (trained against the gold
    boundaries with weight ``model.aux_loss_weight``), else None."""

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput: ...


@runtime_checkable
class InspectableAttention(Attention, Protocol):
    """An attention that can also show whom each unit attends to (optional: the attention
    heatmap callback draws it where every layer's attention has it)."""

    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, T) attention probabilities: rows sum to 1, zero at padded keys."""
        ...


# ----------------------------------------------------------------------------- helpers


def _rotations(t: int, dh: int, base: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(T, Dh/2) unit complex numbers e^{i * pos * freq}; built per call (O(T * Dh), less
    than the attention that uses it), so nothing grows with the lengths seen."""
    with torch.no_grad():
        inv_freq = base ** (-torch.arange(0, dh, 2, device=device, dtype=torch.float32) / dh)  # (Dh/2,)
        angles = torch.arange(t, device=device, dtype=torch.float32)[:, None] * inv_freq  # (T, Dh/2)
        rot = torch.polar(torch.ones_like(angles), angles)  # (T, Dh/2) complex64
        return rot.to(torch.complex128 if dtype == torch.float64 else torch.complex64)


def rotary(x: Tensor, base: float = 10_000.0) -> Tensor:
    """Rotate pairs of channels by an angle proportional to the position (RoPE).

    x: (..., T, Dh) with Dh even, any strides with an innermost stride of 1.
    Positions are 0..T-1; since q.k then depends on i - j only, padding at the end
    of a sequence never moves the real units. Channels (2m, 2m+1) form a pair,
    rotated as one complex multiplication: one kernel forward and one backward,
    where the real-valued form takes about ten passes over q and k.
    """
    t, dh = x.shape[-2], x.shape[-1]
    if x.dtype not in (torch.float32, torch.float64):
        # complex half types are poorly supported: rotate in float32
        return rotary(x.float(), base).to(x.dtype)
    rot = _rotations(t, dh, float(base), x.device, x.dtype)  # (T, Dh/2)
    pairs = torch.view_as_complex(x.unflatten(-1, (dh // 2, 2)))  # (..., T, Dh/2) complex view
    return torch.view_as_real(pairs * rot).flatten(-2)  # (..., T, Dh)


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


def _windows(z: Tensor, radius: int) -> Tensor:
    """Blocks (B, H, N, S, Dh) -> (B, H, N, S + 2r, Dh): each block with the r units
    before and after it (zeros past either end). About (S + 2r) / S times z's size."""
    b, h, n, s, dh = z.shape
    r = radius
    out = z.new_empty(b, h, n, s + 2 * r, dh)
    out[:, :, :, r : r + s] = z
    if r:
        out[:, :, 1:, :r] = z[:, :, :-1, s - r :]  # tail of the previous block
        out[:, :, :-1, r + s :] = z[:, :, 1:, :r]  # head of the next block
        out[:, :, 0, :r] = 0
        out[:, :, -1, r + s :] = 0
    return out


def _fold(g: Tensor, radius: int) -> Tensor:
    """Adjoint of ``_windows``: (B, H, N, S + 2r, Dh) -> (B, H, N, S, Dh), overlaps summed."""
    r = radius
    s = g.shape[3] - 2 * r
    z = g[:, :, :, r : r + s].clone()
    if r:
        z[:, :, 1:, :r] += g[:, :, :-1, r + s :]
        z[:, :, :-1, s - r :] += g[:, :, 1:, :r]
    return z


def _autocast_off(device: torch.device):
    """A context with autocast disabled on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a hand-written kernel should run its matmuls in: autocast's where it is on
    for the tensors' device (as it would cast a matmul), else the inputs' common dtype."""
    device = tensors[0].device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


class _BlockBandAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(Dh), restricted by ``allowed``) v, one block of queries at a time.

    q, k, v: (B, H, N, S, Dh) blocks of S units, all of one dtype; allowed: (B, 1, N, S,
    S + 2r), True where query a of block n may see key j of the block's window. Every
    block is a batched (S x Dh) @ (Dh x (S + 2r)) matmul, so BLAS does the work. The
    backward is written out so that it only ever builds window-sized tensors: autograd
    through the window gather would zero-fill and scatter full-size buffers per slice.

    Dtypes are explicit, forward and backward, with autocast off inside: the matmuls run
    in the inputs' dtype (bf16/fp16 under mixed precision), softmax and its backward in
    at least float32, and an incoming gradient of another dtype is cast to the inputs'.
    (Left to autocast, a CUDA forward saves float32 probabilities from its softmax and
    the backward, which autocast does not cover, multiplies them with a bf16 gradient.)
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, radius: int, dropout_p: float) -> Tensor:
        scale = q.shape[-1] ** -0.5
        acc = torch.promote_types(q.dtype, torch.float32)  # softmax precision
        with _autocast_off(q.device):
            kw, vw = _windows(k, radius), _windows(v, radius)  # (B, H, N, S+2r, Dh)
            scores = torch.matmul(q, kw.transpose(-1, -2)).to(acc).mul_(scale)  # (B, H, N, S, S+2r)
            probs = scores.masked_fill_(~allowed, float("-inf")).softmax(dim=-1)
            keep = None
            if dropout_p > 0:
                keep = torch.empty_like(probs).bernoulli_(1 - dropout_p).div_(1 - dropout_p)
            dropped = probs if keep is None else probs * keep
            y = torch.matmul(dropped.to(q.dtype), vw)  # (B, H, N, S, Dh)
        ctx.save_for_backward(q, kw, vw, probs, keep)
        ctx.radius, ctx.scale = radius, scale
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        q, kw, vw, probs, keep = ctx.saved_tensors
        dtype = q.dtype
        with _autocast_off(q.device):
            dy = dy.to(dtype)
            dropped = probs if keep is None else probs * keep
            dvw = torch.matmul(dropped.to(dtype).transpose(-1, -2), dy)  # (B, H, N, S+2r, Dh)
            dp = torch.matmul(dy, vw.transpose(-1, -2)).to(probs.dtype)  # (B, H, N, S, S+2r)
            if keep is not None:
                dp.mul_(keep)
            # softmax backward; masked entries have probs == 0 and get no gradient
            ds = dp.sub_((dp * probs).sum(dim=-1, keepdim=True)).mul_(probs).mul_(ctx.scale).to(dtype)
            dq = torch.matmul(ds, kw)  # (B, H, N, S, Dh)
            dkw = torch.matmul(ds.transpose(-1, -2), q)  # (B, H, N, S+2r, Dh)
        return dq, _fold(dkw, ctx.radius), _fold(dvw, ctx.radius), None, None, None


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    *,
    radius: int,
    block_size: int,
    dropout_p: float = 0.0,
    kernel: str = "auto",
) -> Tensor:
    """Exact sliding-window attention: query i sees keys i-r..i+r that are real units.

    q, k, v: (B, H, T, Dh); mask: (B, T), True = real. Returns (B, H, T, Dh). A query
    with no real key in its window (a padded unit) sees itself, so no row is empty.
    Time and memory O(T * (block_size + 2r)). ``kernel``: see ``use_flex``.
    """
    if use_flex(q, kernel=kernel, dropout_p=dropout_p):
        return flex_banded_attention(q, k, v, mask, radius=radius)
    b, h, t, dh = q.shape
    r, s = radius, max(block_size, radius)  # s >= r: a window reaches only the adjacent blocks
    n = -(-t // s)  # blocks
    tp, w = n * s, s + 2 * r

    def blocks(z: Tensor) -> Tensor:
        if tp != t:
            z = F.pad(z, (0, 0, 0, tp - t))
        return z.unflatten(2, (n, s))  # (B, H, N, S, Dh), a view

    # One dtype for the three (what autocast would give a matmul); their grads come back
    # in the dtypes they arrived in.
    dtype = compute_dtype(q, k, v)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    a = torch.arange(s, device=q.device)[:, None]  # query offset in its block
    j = torch.arange(w, device=q.device)[None, :]  # key offset in the block's window
    in_band = (j - a >= 0) & (j - a <= 2 * r)  # (S, S+2r): |query - key| <= r
    key_real = F.pad(mask, (r, tp - t + r), value=False).unfold(1, w, s)  # (B, N, S+2r)
    allowed = (in_band & key_real[:, :, None, :]) | (j - a == r)  # (B, N, S, S+2r), itself always
    y = _BlockBandAttention.apply(blocks(q), blocks(k), blocks(v), allowed[:, None], r, dropout_p)
    return y.flatten(2, 3)[:, :, :t]  # (B, H, T, Dh)


# ----------------------------------------------------------------------------- fused kernels

KERNELS = ("auto", "blocked", "flex")
# The settings' bounds (segmenter.core.bounds): checked here, by the command line
# (attention.*) and by the checkpoint loader (segmenter.models.registry), whose guard against
# a stranger's file the upper ends are. The width (dim) is the network's: segmenter.models.net.DIM.
NUM_HEADS = Number(lo=1, hi=1_024)
DROPOUT = Number(lo=0, hi=1, whole=False)
WINDOW_SIZE = Number(lo=1, hi=1 << 20)  # and odd: a unit sees as many neighbours on each side
BLOCK_SIZE = Number(lo=1, hi=1 << 16)
QUERY_BLOCK = Number(lo=1, hi=1 << 20)
PREDICTOR_HIDDEN = Number(lo=1, hi=65_536, none=True)
TEMPERATURE = Number(lo=0, lo_open=True, whole=False)
# FlexAttention's tile along both sequence axes; lengths are padded up to a multiple of it
# (which also keeps the number of shapes torch.compile sees small).
FLEX_BLOCK = 128
# Head sizes the fused CUDA SDPA kernels (flash, memory-efficient) accept are multiples
# of 8; any other size sends SDPA to its math path and its T x T matrices.
FUSED_HEAD_MULTIPLE = 8


def flex_available() -> bool:
    """FlexAttention as used here: BlockMask.from_kv_blocks with seq_lengths, and gradients
    for tensors a score_mod reads (the segment form's prefix sums) need torch >= 2.6."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 6)


def _triton_runs_on(device: torch.device) -> bool:
    """Compiled FlexAttention is a Triton kernel: Triton must be installed, and the GPU
    at least Ampere (compute capability 8.0, which bf16 needs). Older GPUs keep the
    blocked kernel."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.get_device_capability(device) >= (8, 0)


def use_flex(x: Tensor, *, kernel: str, dropout_p: float) -> bool:
    """Which kernel runs a banded or segment-biased attention.

    ``"blocked"``: the portable blocked kernels (CPU, any device). ``"flex"``: FlexAttention,
    compiled on CUDA (eager elsewhere: O(T^2), for tests only). ``"auto"``: FlexAttention on
    a CUDA GPU that Triton serves (Ampere or newer) with torch >= 2.6, when no attention
    dropout is asked for (it has none); else blocked. The choice lives here, so the
    network never branches on attention type.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
    if kernel == "auto":
        return x.is_cuda and dropout_p == 0 and flex_available() and _triton_runs_on(x.device)
    if kernel == "flex" and dropout_p > 0:
        raise ValueError(f"kernel='flex' has no attention dropout, got dropout_p={dropout_p}")
    return kernel == "flex"


# Entries torch.compile may keep per compiled function (dtype x grad mode x static or
# dynamic shapes, e.g. bf16 training plus no-grad validation plus fp32 tests). Past the
# limit dynamo would silently run flex_attention uncompiled, which builds the whole
# T x T score matrix: out of memory on a long document instead of a recompile.
RECOMPILE_LIMIT = 64


def _flex_banded(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask)


def _flex_scored(q: Tensor, k: Tensor, v: Tensor, score_mod, block_mask) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


@functools.lru_cache(maxsize=8)  # two kernels today; a wrapper must be kept to keep its compile cache
def _compiled(fn):
    """fn through torch.compile, once per function: one wrapper per kernel, so the banded and
    the segment kernels each have their own compile cache (dynamo keys it on the code)."""
    # Private: torch.compile takes no public recompile-limit setting; dynamo's config is the documented knob.
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn)


def _run_flex(fn, *args) -> Tensor:
    """Compiled (fused) on CUDA. Elsewhere eager: plain PyTorch ops over the whole score
    matrix, O(T^2), correct, and only for tests (``use_flex`` never picks it off CUDA)."""
    with _autocast_off(args[0].device):
        return (_compiled(fn) if args[0].is_cuda else fn)(*args)


def _flex_pad(z: Tensor, tp: int, value: float | bool = 0) -> Tensor:
    """Pad dim 2 of (B, H, T, Dh), or dim 1 of (B, T), up to tp."""
    dim = 2 if z.dim() == 4 else 1
    pad = [0, 0] * (z.dim() - dim - 1) + [0, tp - z.shape[dim]]
    return F.pad(z, pad, value=value) if tp != z.shape[dim] else z


def _runs_block_mask(mask_mod, first: Tensor, count: Tensor, *, tp: int):
    """BlockMask in which query block i visits ``count[b, i]`` kv blocks from ``first[b, i]``
    ((B, N) each). It holds O(N^2) block indices, N = Tp / FLEX_BLOCK (16 MB at 262,144
    units), where ``create_block_mask`` would evaluate ``mask_mod`` over all T x T pairs
    (68 G of them at 262,144 units)."""
    from torch.nn.attention.flex_attention import BlockMask

    n = tp // FLEX_BLOCK
    # BlockMask wants a full row of N indices per query block; entries past count are never
    # read (the clamp only keeps them in range). H = 1: all heads alike.
    idx = (first[..., None] + torch.arange(n, device=first.device)).clamp_(max=n - 1)  # (B, N, N)
    kv_num, kv_idx = count[:, None].int().contiguous(), idx[:, None].int().contiguous()  # (B, 1, N), (B, 1, N, N)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(tp, tp))


def band_block_mask(real: Tensor, *, radius: int):
    """Sliding-window BlockMask over ``real`` (B, Tp), Tp a multiple of FLEX_BLOCK: query i
    sees key j when |i - j| <= radius and j is real, and always itself (as in
    ``banded_attention``). Query block i visits kv blocks i - reach .. i + reach only."""
    b, tp = real.shape
    n, r = tp // FLEX_BLOCK, radius

    def in_window(b, h, q_idx, kv_idx):
        near = (q_idx - kv_idx <= r) & (kv_idx - q_idx <= r)
        return near & (real[b, kv_idx] | (q_idx == kv_idx))

    reach = -(-r // FLEX_BLOCK)  # kv blocks on each side
    blocks = torch.arange(n, device=real.device)
    first = (blocks - reach).clamp(min=0)  # (N,)
    count = (blocks + reach).clamp(max=n - 1) - first + 1  # (N,)
    return _runs_block_mask(in_window, first.expand(b, n), count.expand(b, n), tp=tp)


def key_block_mask(real: Tensor):
    """BlockMask over ``real`` (B, Tp): every query sees every real key; kv blocks past a
    sequence's last real unit are skipped."""
    b, tp = real.shape
    n = tp // FLEX_BLOCK

    def real_key(b, h, q_idx, kv_idx):
        return real[b, kv_idx]

    last = (real * torch.arange(1, tp + 1, device=real.device)).amax(dim=1)  # (B,) units up to the last real one
    count = (-(-last // FLEX_BLOCK)).clamp(min=1)[:, None].expand(b, n)  # (B, N)
    return _runs_block_mask(real_key, torch.zeros_like(count), count, tp=tp)


def _flex_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k, v in one dtype (autocast's, if on) and the mask, padded to a multiple of FLEX_BLOCK."""
    t = q.shape[2]
    tp = -(-t // FLEX_BLOCK) * FLEX_BLOCK
    dtype = compute_dtype(q, k, v)
    q, k, v = (_flex_pad(z.to(dtype), tp) for z in (q, k, v))  # (B, H, Tp, Dh)
    return q, k, v, _flex_pad(mask, tp, value=False)  # mask: (B, Tp)


def flex_banded_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, *, radius: int) -> Tensor:
    """``banded_attention`` through FlexAttention: on CUDA one fused kernel forward and one
    backward, visiting only the kv tiles the window reaches. Same contract: q, k, v
    (B, H, T, Dh), mask (B, T) -> (B, H, T, Dh)."""
    t = q.shape[2]
    q, k, v, real = _flex_inputs(q, k, v, mask)
    block_mask = band_block_mask(real, radius=radius)
    y = _run_flex(_flex_banded, q, k, v, block_mask)  # (B, H, Tp, Dh)
    return y[:, :, :t]


def flex_segment_attention(q: Tensor, k: Tensor, v: Tensor, c: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
    """softmax(q k^T / sqrt(Dh) - |c_i - c_j| / temperature) v over real keys, fused.

    q, k, v (B, H, T, Dh); c (B, T) the prefix sums of the boundary probabilities. The
    bias is a ``score_mod`` that reads c at i and j, so no T x T bias exists, forward or
    backward: the fused backward accumulates c's gradient itself (captured tensors with
    gradients need torch >= 2.6).
    """
    t = q.shape[2]
    q, k, v, real = _flex_inputs(q, k, v, mask)
    # at least float32 (a bf16 prefix sum loses the small steps); padded keys are masked
    # and padded queries sliced off, so the padding's value does not matter
    c = _flex_pad(c.to(torch.promote_types(c.dtype, torch.float32)), q.shape[2])  # (B, Tp)
    inv_temp = 1.0 / temperature

    def segment_bias(score, b, h, q_idx, kv_idx):
        return score - (c[b, q_idx] - c[b, kv_idx]).abs() * inv_temp

    block_mask = key_block_mask(real)
    y = _run_flex(_flex_scored, q, k, v, segment_bias, block_mask)  # (B, H, Tp, Dh)
    return y[:, :, :t]


# ----------------------------------------------------------------------------- modules


class MultiHeadAttention(nn.Module):
    """Projections shared by the three variants; subclasses decide who attends to whom."""

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        NUM_HEADS.check("num_heads", num_heads)
        DROPOUT.check("dropout", dropout)
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
        # unbind (not slicing): its backward stacks the three grads instead of
        # zero-filling a (B, T, 3D) buffer per slice.
        q, k, v = (z.transpose(1, 2) for z in qkv.unbind(2))  # 3 x (B, H, T, Dh), strided views
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
    """Exact sliding-window attention: unit i attends to units i-r..i+r, r = window_size // 2.

    ``kernel``: ``"auto"`` (FlexAttention on CUDA, the blocked kernel elsewhere), ``"blocked"``
    or ``"flex"``; see ``use_flex``. ``block_size``: queries per block of the blocked kernel.
    Each block is one small matmul against block_size + 2r keys: smaller blocks waste fewer
    products on keys outside the band, larger ones keep BLAS busy. 16 is tuned for w = 7 on
    CPU; scripts/benchmark.py measures the result. Outputs do not depend on it.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        dropout: float = 0.0,
        kernel: str = "auto",
        block_size: int = 16,
    ) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        WINDOW_SIZE.check("window_size", window_size)
        if window_size % 2 == 0:
            raise ValueError(f"window_size={window_size} must be a positive odd number")
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
        BLOCK_SIZE.check("block_size", block_size)
        self.window_size = window_size
        self.radius = window_size // 2
        self.kernel, self.block_size = kernel, block_size

    def _band_probs(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, w) banded probabilities, gathered per query: simple, for inspection and
        export only."""
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
        if torch.onnx.is_in_onnx_export():
            # The blocked kernel's (B, H, N, S, .) blocks tie torch.export to one number of
            # blocks N: an exported graph (ONNX) gathers each query's band instead.
            return AttentionOutput(self._merge(self.gathered_attention(q, k, v, mask)), None)
        y = banded_attention(
            q, k, v, mask, radius=self.radius, block_size=self.block_size, dropout_p=self._p, kernel=self.kernel
        )
        return AttentionOutput(self._merge(y), None)  # y: (B, H, T, Dh)

    def gathered_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """The same attention as ``banded_attention`` (the same keys, itself always), each
        query's band of keys and values gathered in place: (B, H, T, Dh), O(T * w * Dh)
        memory, and a graph torch.export traces for any length (what the ONNX export runs)."""
        return torch.einsum("bhtw,bhtdw->bhtd", self._band_probs(q, k, mask), band(v, self.radius))

    @torch.no_grad()
    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, T) attention probabilities, zero outside the band (every attention
        type answers in the same shape, so plots need not know which one they show)."""
        q, k, _ = self._heads(x)
        probs = self._band_probs(q, k, mask)  # (B, H, T, w): column c is offset c - r
        b, h, t, w = probs.shape
        cols = torch.arange(t, device=x.device)[:, None] + torch.arange(w, device=x.device)  # (T, w), shifted by r
        dense = probs.new_zeros(b, h, t, t + w - 1)  # (B, H, T, T + 2r): room for the band at both ends
        dense.scatter_(-1, cols.expand(b, h, t, w), probs)
        return dense[..., self.radius : self.radius + t]  # (B, H, T, T)


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
    memory O(query_block * T) instead of O(T^2). On CUDA (``kernel="auto"``) it runs
    through FlexAttention instead, the bias a ``score_mod`` reading c at i and j: O(T)
    memory and one fused kernel.
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
        kernel: str = "auto",
    ) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        if bias not in self.BIASES:
            raise ValueError(f"bias={bias!r} is not one of {self.BIASES}")
        TEMPERATURE.check("temperature", temperature)
        QUERY_BLOCK.check("query_block", query_block)
        PREDICTOR_HIDDEN.check("predictor_hidden", predictor_hidden)
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
        hidden = predictor_hidden or dim // 2
        self.bias, self.temperature, self.query_block, self.kernel = bias, temperature, query_block, kernel
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def boundary_probs(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.predictor(x).squeeze(-1)  # (B, T)
        return logits, torch.sigmoid(logits) * mask  # padding carries no boundary mass

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)
        logits, p = self.boundary_probs(x, mask)
        if self.bias == "mean":
            # head Dh + 1: on CUDA, padded to a size the fused kernels take (O(T) memory)
            y = self._attend_mean(q, k, v, p, mask, multiple=FUSED_HEAD_MULTIPLE if q.is_cuda else 1)
        elif use_flex(q, kernel=self.kernel, dropout_p=self._p):
            c = p.to(torch.promote_types(p.dtype, torch.float32)).cumsum(dim=-1)  # (B, T)
            y = flex_segment_attention(q, k, v, c, mask, temperature=self.temperature)
        else:
            y = self._attend_segment(q, k, v, p, mask)
        return AttentionOutput(self._merge(y), logits)

    def _attend_mean(self, q: Tensor, k: Tensor, v: Tensor, p: Tensor, mask: Tensor, *, multiple: int = 1) -> Tensor:
        """``multiple``: pad the head to a multiple of it (``FUSED_HEAD_MULTIPLE`` on CUDA)."""
        b, h, t, dh = q.shape
        scale = 1.0 / math.sqrt(dh)  # of the real head: the extra channels must not change it
        key_bias = (p / (2 * self.temperature))[:, None, :, None].expand(b, h, t, 1)  # (B, H, T, 1)
        # q' . k' * scale = q . k * scale + key_bias: append [1] to q, [bias/scale] to k,
        # and a zero channel to v so all three share a width (the fused kernel needs it).
        # Zero channels up to the multiple change nothing: they add 0 to every q'.k' and
        # give zero output channels, sliced off below.
        extra = -(dh + 1) % multiple
        q = torch.cat((q, q.new_ones(b, h, t, 1), q.new_zeros(b, h, t, extra)), dim=-1)  # (B, H, T, Dh+1+extra)
        k = torch.cat((k, (key_bias / scale).to(k.dtype), k.new_zeros(b, h, t, extra)), dim=-1)  # (B, H, T, Dh+1+extra)
        v = torch.cat((v, v.new_zeros(b, h, t, 1 + extra)), dim=-1)  # (B, H, T, Dh+1+extra)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self._p, scale=scale)
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
        if torch.onnx.is_in_onnx_export() or t <= self.query_block:
            # Exported (ONNX): all queries as one block, the same rows of the same softmax; a
            # loop over T // query_block blocks would tie the graph to one length.
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
        """The whole (B, 1, T, T) bias of the configured form, for plots and tests. The mean
        form is written out in full here (the forward keeps only its per-key half)."""
        if self.bias == "mean":
            return ((p[:, :, None] + p[:, None, :]) / (2 * self.temperature))[:, None]
        c = p.cumsum(dim=-1)
        return self._segment_bias(c, c, torch.ones_like(p, dtype=torch.bool))

    @torch.no_grad()
    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, T, T) attention probabilities, boundary bias included."""
        q, k, _ = self._heads(x)
        _, p = self.boundary_probs(x, mask)
        return dense_weights(q, k, mask, self.full_bias(p))

"""The attention modules against slow references, plus the interface contract that every
type found in conf/attention/*.yaml must keep. Modules are built from those configs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from segmenter.models.attention import (
    Attention,
    AttentionOutput,
    BoundaryAwareAttention,
    InspectableAttention,
    LocalizedAttention,
    band,
    banded_attention,
    dense_weights,
    rotary,
)
from tests.helpers import ATTENTIONS, build_attention

DIM, HEADS = 32, 4


def make(kind: str, **kw):
    """conf/attention/<kind>.yaml at width DIM with HEADS heads, ``kw`` overriding its settings."""
    torch.manual_seed(0)
    return build_attention(kind, dim=DIM, num_heads=HEADS, **kw).eval()


def inputs(b: int, t: int, lengths: list[int] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, DIM, generator=g, dtype=torch.float64)
    lengths = lengths or [t] * b
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


# ----------------------------------------------------------------------------- slow references


def reference_attention(mod, x, mask, allowed=None, bias=None):
    """softmax(q k^T / sqrt(Dh) + bias) v over a full T x T matrix, masked by `allowed` (T, T)."""
    q, k, v = mod._heads(x)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias
    keep = mask[:, None, None, :]
    if allowed is not None:
        keep = keep & allowed
    # a query with no allowed key (padded, window all padding) attends to itself, as in the module
    t = x.shape[1]
    keep = keep | (~keep.any(-1, keepdim=True) & torch.eye(t, dtype=torch.bool))
    y = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
    return mod._merge(y)


def window_mask(t: int, w: int) -> torch.Tensor:
    i = torch.arange(t)
    return (i[:, None] - i[None, :]).abs() <= w // 2  # (T, T)


def loop_bias(p: torch.Tensor, form: str, temperature: float) -> torch.Tensor:
    """Bias built entry by entry, as the forms are defined."""
    b, t = p.shape
    out = torch.zeros(b, 1, t, t, dtype=p.dtype)
    for n in range(b):
        for i in range(t):
            for j in range(t):
                if form == "mean":
                    out[n, 0, i, j] = (p[n, i] + p[n, j]) / 2 / temperature
                else:
                    lo, hi = min(i, j), max(i, j)
                    # boundary mass between i and j: the probabilities of units lo+1..hi
                    out[n, 0, i, j] = -p[n, lo + 1 : hi + 1].sum() / temperature
    return out


def assert_close_with_grads(mod, fast, slow, x, mask):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = fast(x1, mask), slow(x2, mask)
    m = mask[..., None]
    torch.testing.assert_close(y1 * m, y2 * m, atol=1e-5, rtol=0)
    g = torch.randn_like(y1) * m
    mod.zero_grad()
    (y1 * g).sum().backward()
    fast_grads = [p.grad.clone() for p in mod.parameters()]
    mod.zero_grad()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=0)
    for a, b in zip(fast_grads, (p.grad for p in mod.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


LENGTHS = [1, 2, 6, 7, 8, 13, 31]


# ----------------------------------------------------------------------------- localized


@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("w", [1, 3, 7])
def test_localized_equals_masked_full_matrix(t, w):
    mod = make("localized", window_size=w).double()
    x, mask = inputs(3, t, lengths=[t, max(1, t - 2), max(1, t // 2)])
    assert_close_with_grads(
        mod,
        lambda x, m: mod(x, m).y,
        lambda x, m: reference_attention(mod, x, m, allowed=window_mask(t, w)),
        x,
        mask,
    )


@pytest.mark.parametrize("t", [1, 5, 12])
def test_localized_with_window_covering_sequence_equals_self(t):
    loc = make("localized", window_size=2 * t + 1).double()
    full = make("self").double()
    full.load_state_dict(loc.state_dict())
    x, mask = inputs(2, t, lengths=[t, max(1, t - 3)])
    m = mask[..., None]
    torch.testing.assert_close(loc(x, mask).y * m, full(x, mask).y * m, atol=1e-10, rtol=0)


def test_localized_never_builds_a_t_by_t_tensor():
    """Every tensor the forward and backward save or produce stays O(T * w)."""
    t, w = 2048, 7
    mod = make("localized", window_size=w)
    x = torch.randn(1, t, DIM, requires_grad=True)
    mask = torch.ones(1, t, dtype=torch.bool)
    biggest = 0

    def pack(tensor):
        nonlocal biggest
        biggest = max(biggest, tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mod(x, mask).y
    y.sum().backward()
    per_unit = biggest / t
    assert per_unit <= 3 * DIM * w, f"a saved tensor holds {per_unit:.0f} values per unit (T={t})"
    assert biggest < t * t / 8


@pytest.mark.parametrize(("t", "w"), [(50, 7), (60, 41), (33, 33)])
def test_localized_across_several_blocks_and_wide_windows(t, w):
    """Several query blocks, and windows wider than a block (the block grows to r)."""
    mod = make("localized", window_size=w).double()
    x, mask = inputs(2, t, lengths=[t, t - 9])
    assert_close_with_grads(
        mod,
        lambda x, m: mod(x, m).y,
        lambda x, m: reference_attention(mod, x, m, allowed=window_mask(t, w)),
        x,
        mask,
    )


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_block_band_backward_matches_numerical_gradients(dropout_p):
    """The hand-written backward against finite differences (dropout mask fixed by the seed)."""
    b, h, t, dh = 1, 1, 11, 2  # three blocks of 4, the last one padded
    q, k, v = (torch.randn(b, h, t, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.arange(t)[None, :] < 9

    def f(q, k, v):
        torch.manual_seed(0)  # the same dropout mask at every evaluation
        return banded_attention(q, k, v, mask, radius=2, block_size=4, dropout_p=dropout_p)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_localized_dropout_only_in_training():
    mod = make("localized", dropout=0.5).double()
    x, mask = inputs(1, 40)
    eval_y = mod(x, mask).y
    mod.train()
    y1, y2 = mod(x, mask).y, mod(x, mask).y
    assert not torch.allclose(y1, eval_y) and not torch.allclose(y1, y2)
    mod.eval()
    torch.testing.assert_close(mod(x, mask).y, eval_y)


PEAK_SCRIPT = """
import json, sys, torch
from segmenter.evaluation.benchmark import resident_bytes
from segmenter.models.attention import LocalizedAttention
torch.set_num_threads(1)
t = int(sys.argv[1])
mod = LocalizedAttention(dim=32, num_heads=4, window_size=7)
x = torch.randn(1, t, 32, requires_grad=True)
mask = torch.ones(1, t, dtype=torch.bool)
before, _ = resident_bytes()
mod(x, mask).y.sum().backward()
_, peak = resident_bytes()
print(json.dumps({"grown_bytes": peak - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_localized_peak_memory_far_below_t_squared():
    """A forward+backward at T = 16384 in a fresh process: its peak resident memory grows
    by far less than one T x T float matrix (1 GiB), let alone one per head (4 GiB).
    Measured growth is ~60-75 MiB depending on the allocator; the bound leaves it room."""
    t = 16384
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(t)], capture_output=True, text=True, check=True)
    grown = json.loads(out.stdout)["grown_bytes"]
    # the measurement sees allocations: q, k, v alone are 3 x T x 32 floats
    assert 3 * t * 32 * 4 < grown < t * t * 4 / 4, f"peak grew by {grown / 2**20:.0f} MiB at T={t}"


def test_localized_rejects_even_window():
    with pytest.raises(ValueError, match="window_size=4"):
        LocalizedAttention(dim=DIM, num_heads=HEADS, window_size=4)


def test_band_pads_with_value():
    t = torch.arange(5.0).view(1, 1, 5, 1)  # (B, H, T, 1)
    b = band(t, 1, value=-1.0)[0, 0, :, 0]  # (T, w)
    assert b.tolist() == [[-1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, -1]]


# ----------------------------------------------------------------------------- self


@pytest.mark.parametrize("t", LENGTHS)
def test_self_equals_reference(t):
    mod = make("self").double()
    x, mask = inputs(2, t, lengths=[t, max(1, t - 3)])
    assert_close_with_grads(mod, lambda x, m: mod(x, m).y, lambda x, m: reference_attention(mod, x, m), x, mask)


# ----------------------------------------------------------------------------- boundary-aware


@pytest.mark.parametrize("form", ["mean", "segment"])
@pytest.mark.parametrize("t", [1, 7, 13])
def test_boundary_bias_forms_equal_loops(form, t):
    mod = make("boundary_aware", bias=form, temperature=0.7).double()
    p = torch.rand(2, t, dtype=torch.float64)
    torch.testing.assert_close(mod.full_bias(p), loop_bias(p, form, 0.7), atol=1e-12, rtol=0)


@pytest.mark.parametrize("form", ["mean", "segment"])
@pytest.mark.parametrize("t", [1, 6, 7, 8, 19])
@pytest.mark.parametrize("query_block", [4, 1024])
def test_boundary_aware_equals_reference(form, t, query_block):
    mod = make("boundary_aware", bias=form, temperature=0.5, query_block=query_block).double()
    x, mask = inputs(3, t, lengths=[t, max(1, t - 2), max(1, t // 2)])

    def slow(x, m):
        _, p = mod.boundary_probs(x, m)
        return reference_attention(mod, x, m, bias=loop_bias(p, form, 0.5))

    assert_close_with_grads(mod, lambda x, m: mod(x, m).y, slow, x, mask)


def test_boundary_aware_returns_logits_and_others_none():
    x, mask = inputs(2, 9)
    assert make("boundary_aware").double()(x, mask).boundary_logits.shape == (2, 9)
    assert make("self").double()(x, mask).boundary_logits is None
    assert make("localized").double()(x, mask).boundary_logits is None


def test_boundary_aware_parameter_overhead():
    base = sum(p.numel() for p in make("self").parameters())
    ba = sum(p.numel() for p in make("boundary_aware").parameters())
    assert ba - base == DIM * (DIM // 2) + DIM // 2 + DIM // 2 + 1  # d -> d/2 -> 1 MLP


def test_boundary_aware_rejects_unknown_form():
    with pytest.raises(ValueError, match="'cosine'"):
        BoundaryAwareAttention(dim=DIM, num_heads=HEADS, bias="cosine")


# ----------------------------------------------------------------------------- every type


def test_options_build_the_classes_they_name():
    assert {"self", "localized", "boundary_aware"} <= set(ATTENTIONS)
    assert type(make("localized")) is LocalizedAttention and type(make("boundary_aware")) is BoundaryAwareAttention
    assert make("localized", window_size=3).radius == 1  # settings reach the module


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_every_type_keeps_the_contract(kind):
    """The Attention protocol: forward(x, mask) -> AttentionOutput, y (B, T, D) in x's dtype,
    boundary_logits None or (B, T); an nn.Module with its settings' width."""
    mod = make(kind).double()
    assert isinstance(mod, torch.nn.Module) and isinstance(mod, Attention)
    x, mask = inputs(2, 7, lengths=[7, 4])
    out = mod(x, mask)
    assert isinstance(out, AttentionOutput)
    assert out.y.shape == x.shape and out.y.dtype == x.dtype and torch.isfinite(out.y).all()
    assert out.boundary_logits is None or out.boundary_logits.shape == (2, 7)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_shape_padding_invariance_and_gradients(kind):
    mod = make(kind).double()
    x, mask = inputs(2, 11, lengths=[11, 6])
    y = mod(x, mask).y
    assert y.shape == x.shape
    # Changing padded positions changes nothing at real ones.
    x2 = x.clone()
    x2[1, 6:] = torch.randn(5, DIM, dtype=torch.float64) * 100
    torch.testing.assert_close(mod(x2, mask).y[1, :6], y[1, :6], atol=1e-10, rtol=0)
    # Same document alone, without padding, gives the same outputs.
    torch.testing.assert_close(mod(x[1:, :6], mask[1:, :6]).y[0], y[1, :6], atol=1e-10, rtol=0)
    # Gradients reach the input and every parameter.
    xg = x.clone().requires_grad_(True)
    mod.train()
    mod(xg, mask).y.sum().backward()
    assert xg.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_weights_are_distributions_over_real_units(kind):
    mod = make(kind).double()
    if not isinstance(mod, InspectableAttention):
        pytest.skip(f"attention={kind} has no attention_weights (optional)")
    x, mask = inputs(2, 9, lengths=[9, 5])
    w = mod.attention_weights(x, mask)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype))
    assert w.shape == (2, HEADS, 9, 9)
    assert w[1, :, :5, 5:].abs().max() == 0  # real units never attend to padding
    if kind == "localized":  # nothing outside the band i-3..i+3
        far = (torch.arange(9)[:, None] - torch.arange(9)[None, :]).abs() > 3  # (T, T)
        assert w[:, :, far].abs().max() == 0 and w[:, :, ~far].gt(0).any()


def test_rotary_preserves_norm_and_is_relative():
    x = torch.randn(1, 1, 6, 8, dtype=torch.float64)
    r = rotary(x)
    torch.testing.assert_close(r.norm(dim=-1), x.norm(dim=-1))
    # q.k after rotation depends on i - j only: shifting both by one position changes nothing.
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    seq = torch.stack([q, k, q, k]).view(1, 1, 4, 8)
    r = rotary(seq)[0, 0]
    torch.testing.assert_close(r[0] @ r[1], r[2] @ r[3])


def test_dense_weights_mask():
    q = torch.randn(1, 1, 3, 4)
    w = dense_weights(q, q, torch.tensor([[True, True, False]]))
    assert w[..., 2].abs().max() == 0


@pytest.mark.parametrize("t", [1, 5, 16, 37])
def test_gathered_band_equals_the_blocked_kernel(t):
    """What an ONNX export of localized attention runs (each query's band gathered in place)
    is the blocked kernel's attention: the same keys, padded queries seeing themselves."""
    att = make("localized", window_size=5, block_size=4).double()
    x, mask = inputs(2, t, [t, max(1, t // 2)])
    q, k, v = att._heads(x)
    blocked = banded_attention(q, k, v, mask, radius=att.radius, block_size=att.block_size)
    torch.testing.assert_close(att.gathered_attention(q, k, v, mask), blocked)

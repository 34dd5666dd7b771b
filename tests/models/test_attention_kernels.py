"""The fused-kernel paths, checked on CPU against the portable ones.

CUDA runs localized attention and the segment-biased form through FlexAttention, and the
mean-biased form with its head padded to a size the fused SDPA kernels take. The padding
runs on CPU exactly as on CUDA. FlexAttention has no CPU backward, but its eager forward
runs here: same masks, same block structure as the compiled CUDA kernel, so what these
tests pin down is the masking and tiling logic the GPU uses. The CUDA forward+backward
against the portable kernels is in tests/test_gpu.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from segmenter.models.attention import (
    FLEX_BLOCK,
    FUSED_HEAD_MULTIPLE,
    BoundaryAwareAttention,
    LocalizedAttention,
    band_block_mask,
    banded_attention,
    flex_available,
    key_block_mask,
    use_flex,
)

DIM, HEADS = 32, 4

needs_flex = pytest.mark.skipif(not flex_available(), reason="torch.nn.attention.flex_attention needs torch >= 2.5")


@pytest.fixture(autouse=True)
def _quiet_eager_flex():
    # eager (uncompiled) flex_attention warns that it is unfused: it is meant to be, here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*", category=UserWarning)
        yield


def lengths_mask(t: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


# ----------------------------------------------------------------------------- boundary-aware, mean form


@pytest.mark.parametrize("dim", [32, 16])  # heads 8 (+1 -> 16) and 4 (+1 -> 8)
@pytest.mark.parametrize("t", [1, 9, 40])
def test_mean_form_padded_head_equals_unpadded(dim, t):
    """Zero channels up to a multiple of 8 change neither outputs nor gradients."""
    torch.manual_seed(0)
    mod = BoundaryAwareAttention(dim=dim, num_heads=HEADS, bias="mean", temperature=0.5).double()
    x = torch.randn(3, t, dim, dtype=torch.float64)
    mask = lengths_mask(t, [t, max(1, t - 4), max(1, t // 2)])
    g = torch.randn_like(x)
    results = []
    for multiple in (1, FUSED_HEAD_MULTIPLE):
        xg = x.clone().requires_grad_(True)
        mod.zero_grad()
        q, k, v = mod._heads(xg)
        _, p = mod.boundary_probs(xg, mask)
        y = mod._attend_mean(q, k, v, p, mask, multiple=multiple)  # (B, H, T, Dh)
        (mod._merge(y) * g * mask[..., None]).sum().backward()
        results.append((y, xg.grad, [w.grad.clone() for w in mod.parameters()]))
    (y1, dx1, g1), (y8, dx8, g8) = results
    m = mask[:, None, :, None]
    torch.testing.assert_close(y8 * m, y1 * m, atol=1e-12, rtol=0)
    torch.testing.assert_close(dx8, dx1, atol=1e-12, rtol=0)
    for a, b in zip(g8, g1):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_mean_form_pads_only_on_cuda(monkeypatch):
    """On CPU the head stays Dh + 1 (no wasted products); the CUDA width is a multiple of 8."""
    seen = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.shape[-1])
        return real_sdpa(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    mod = BoundaryAwareAttention(dim=DIM, num_heads=HEADS, bias="mean")
    mod(torch.randn(1, 5, DIM), torch.ones(1, 5, dtype=torch.bool))
    assert seen == [DIM // HEADS + 1]
    assert (DIM // HEADS + 1 + (-(DIM // HEADS + 1) % FUSED_HEAD_MULTIPLE)) % 8 == 0


# ----------------------------------------------------------------------------- kernel choice


def test_auto_kernel_is_the_blocked_one_on_cpu():
    x = torch.zeros(1, 1, 4, 2)
    assert not use_flex(x, kernel="auto", dropout_p=0.0)
    assert not use_flex(x, kernel="blocked", dropout_p=0.0)
    assert use_flex(x, kernel="flex", dropout_p=0.0)


def test_kernel_choice_rejects_bad_values():
    x = torch.zeros(1, 1, 4, 2)
    with pytest.raises(ValueError, match="'triton'"):
        use_flex(x, kernel="triton", dropout_p=0.0)
    with pytest.raises(ValueError, match="dropout_p=0.1"):
        use_flex(x, kernel="flex", dropout_p=0.1)
    with pytest.raises(ValueError, match="'fast'"):
        LocalizedAttention(dim=DIM, num_heads=HEADS, kernel="fast")
    with pytest.raises(ValueError, match="'fast'"):
        BoundaryAwareAttention(dim=DIM, num_heads=HEADS, kernel="fast")


# ----------------------------------------------------------------------------- FlexAttention, forward on CPU


@needs_flex
@pytest.mark.parametrize(
    ("t", "radius", "lengths"),
    [
        (1, 3, [1, 1]),
        (20, 3, [20, 1]),  # one tile; a document of one unit
        (300, 3, [300, 250]),  # three tiles, the last partly padding
        (300, 0, [300, 17]),  # radius 0: each unit sees itself
        (257, 130, [257, 100]),  # a window wider than a tile: two tiles reached per side
    ],
)
def test_flex_banded_equals_blocked(t, radius, lengths):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, t, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = lengths_mask(t, lengths)
    blocked = banded_attention(q, k, v, mask, radius=radius, block_size=16, kernel="blocked")
    flex = banded_attention(q, k, v, mask, radius=radius, block_size=16, kernel="flex")
    torch.testing.assert_close(flex, blocked, atol=1e-12, rtol=0)  # padded queries included


@needs_flex
@pytest.mark.parametrize(("t", "lengths"), [(7, [7, 3]), (300, [300, 129])])
def test_flex_segment_form_equals_blocked(t, lengths):
    torch.manual_seed(0)
    mod = BoundaryAwareAttention(dim=DIM, num_heads=HEADS, bias="segment", temperature=0.5, query_block=64)
    mod = mod.double().eval()
    x = torch.randn(2, t, DIM, dtype=torch.float64)
    mask = lengths_mask(t, lengths)
    with torch.no_grad():  # FlexAttention has no CPU backward
        blocked = mod(x, mask).y
        mod.kernel = "flex"
        flex = mod(x, mask).y
    m = mask[..., None]
    torch.testing.assert_close(flex * m, blocked * m, atol=1e-12, rtol=0)


@needs_flex
def test_flex_localized_module_in_bf16_close_to_blocked():
    torch.manual_seed(0)
    mod = LocalizedAttention(dim=DIM, num_heads=HEADS, kernel="blocked").eval()
    x = torch.randn(2, 150, DIM)
    mask = lengths_mask(150, [150, 90])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        blocked = mod(x, mask).y.float()
        mod.kernel = "flex"
        flex = mod(x, mask).y.float()
    m = mask[..., None]
    torch.testing.assert_close(flex * m, blocked * m, atol=2e-2, rtol=2e-2)


# ----------------------------------------------------------------------------- block structure


@needs_flex
@pytest.mark.parametrize("radius", [3, 127, 128, 129, 300])
def test_band_block_mask_covers_the_window_and_stays_linear(radius):
    """Our BlockMask, built from kv-block runs, visits every tile the dense
    create_block_mask finds non-empty, and no more than 2 * ceil(r / tile) + 1 per row."""
    from torch.nn.attention.flex_attention import create_block_mask

    tp = 8 * FLEX_BLOCK
    real = lengths_mask(tp, [tp, 5 * FLEX_BLOCK + 7])
    ours = band_block_mask(real, radius=radius)

    def in_window(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= radius) & (real[b, kv_idx] | (q_idx == kv_idx))

    dense = create_block_mask(in_window, 2, 1, tp, tp, device="cpu", BLOCK_SIZE=FLEX_BLOCK)
    visited, needed = ours.to_dense().bool(), dense.to_dense().bool()  # (B, 1, N, N) tiles
    assert (visited | ~needed).all(), "a tile with allowed pairs is not visited"
    assert visited.sum(-1).max() <= 2 * -(-radius // FLEX_BLOCK) + 1


@needs_flex
def test_key_block_mask_skips_tiles_past_the_last_real_unit():
    tp = 4 * FLEX_BLOCK
    real = lengths_mask(tp, [tp, FLEX_BLOCK + 1, 1])
    visited = key_block_mask(real).to_dense().bool()[:, 0]  # (B, N, N)
    assert visited.sum(-1).tolist() == [[4] * 4, [2] * 4, [1] * 4]


@needs_flex
@pytest.mark.slow
def test_compiled_flex_forward_on_cpu_equals_blocked(monkeypatch):
    """The compiled path (torch.compile, here inductor's CPU backend, on CUDA Triton) traces
    our block masks and closures and gives the blocked kernels' outputs. One shape per
    kernel: inductor's CPU code for the dynamic-shape recompile does not build in torch 2.13."""
    import segmenter.models.attention as attention

    torch._dynamo.reset()
    compiled = {}

    def run_compiled(fn, *args):
        return compiled.setdefault(fn, torch.compile(fn))(*args)

    monkeypatch.setattr(attention, "_run_flex", run_compiled)
    torch.manual_seed(0)
    t = 1000
    mask = lengths_mask(t, [t, 613])
    q, k, v = (torch.randn(2, HEADS, t, DIM) for _ in range(3))
    seg = BoundaryAwareAttention(dim=4 * DIM, num_heads=HEADS, bias="segment", kernel="blocked").eval()
    x = torch.randn(2, t, 4 * DIM)
    try:
        with torch.no_grad():
            blocked = banded_attention(q, k, v, mask, radius=3, block_size=16, kernel="blocked")
            flex = banded_attention(q, k, v, mask, radius=3, block_size=16, kernel="flex")
            torch.testing.assert_close(flex, blocked, atol=1e-5, rtol=1e-5)
            blocked = seg(x, mask).y
            seg.kernel = "flex"
            m = mask[..., None]
            torch.testing.assert_close(seg(x, mask).y * m, blocked * m, atol=1e-5, rtol=1e-5)
    finally:
        torch._dynamo.reset()


@needs_flex
@pytest.mark.parametrize("kind", ["localized", "segment"])
def test_flex_gradients_equal_blocked_through_eager_backward(monkeypatch, kind):
    """FlexAttention's own eager backward (the reference semantics its compiled CUDA backward
    implements) gives the blocked kernels' gradients: q, k, v through the block masks, and the
    segment form's prefix sums c, read by the score_mod, back into the boundary predictor.
    flex_attention refuses a backward on CPU by a device check alone; it is lifted here."""
    import torch.nn.attention.flex_attention as flex_module

    if not hasattr(flex_module, "_validate_device"):
        pytest.skip("this torch has no flex_attention._validate_device to lift")
    monkeypatch.setattr(flex_module, "_validate_device", lambda *args, **kwargs: None)

    def make(kernel):
        torch.manual_seed(0)
        if kind == "localized":
            return LocalizedAttention(dim=DIM, num_heads=HEADS, kernel=kernel).double()
        return BoundaryAwareAttention(
            dim=DIM, num_heads=HEADS, bias="segment", temperature=0.5, query_block=64, kernel=kernel
        ).double()

    t = 300
    x = torch.randn(2, t, DIM, dtype=torch.float64)
    mask = lengths_mask(t, [t, 171])
    g = torch.randn(2, t, DIM, dtype=torch.float64) * mask[..., None]
    results = []
    for mod in (make("blocked"), make("flex")):
        xg = x.clone().requires_grad_(True)
        y = mod(xg, mask).y
        (y * g).sum().backward()
        results.append((y * mask[..., None], xg.grad, dict(mod.named_parameters())))
    (y_ref, dx_ref, p_ref), (y, dx, p) = results
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(dx, dx_ref, atol=1e-12, rtol=0)
    for name in p_ref:
        torch.testing.assert_close(p[name].grad, p_ref[name].grad, atol=1e-10, rtol=0, msg=name)

"""On a GPU: every attention type trains in bf16 and keeps its complexity.

Marked ``gpu``; every test here is skipped, with the reason, where CUDA is absent (CI).
scripts/gpu_check.sh runs them together with the CUDA benchmark. Speed is measured by
the benchmark, never here; memory is (peaks are deterministic, times are not).
"""

from __future__ import annotations

import pytest
import torch

from segmenter.evaluation.benchmark import measure_cuda_peak_memory
from segmenter.models import attention as attn
from segmenter.models.attention import BoundaryAwareAttention, LocalizedAttention, SelfAttention, banded_attention
from tests.helpers import ATTENTIONS, TINY_MODEL, one_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

CUDA = "cuda"
DIM, HEADS = 128, 4  # the configs' width and heads (conf/model, conf/attention)


def lengths_mask(t: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(t, device=CUDA)[None, :] < torch.tensor(lengths, device=CUDA)[:, None]  # (B, T)


# ----------------------------------------------------------------------------- training steps


@pytest.mark.parametrize(
    ("attention", "extra"),
    [(a, []) for a in ATTENTIONS] + [("boundary_aware", ["attention.bias=segment"])],
    ids=[*ATTENTIONS, "boundary_aware_segment"],
)
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_step_on_cuda(tiny_cfg, attention, extra, precision):
    cfg = tiny_cfg(f"attention={attention}", *extra, "trainer=gpu", f"trainer.precision={precision}", *TINY_MODEL)
    before, after, loss = one_step(cfg, accelerator="gpu")
    assert loss == loss and abs(loss) < float("inf")
    assert all(torch.isfinite(p).all() for p in after.values())
    if precision == "bf16-mixed":  # fp16's gradient scaler may skip its first step (overflow at scale 2^16)
        attn_weights = [n for n in after if ".attention.qkv." in n]
        assert attn_weights and all(not torch.equal(before[n], after[n]) for n in attn_weights)


@pytest.mark.parametrize("kind", ["self", "localized", "mean", "segment"])
def test_long_document_inference_in_bf16(kind):
    """Prediction's case: one long document under inference_mode and bf16 autocast."""
    mod = make(kind).eval()
    x = torch.randn(1, 20_000, DIM, device=CUDA)
    mask = torch.ones(1, 20_000, dtype=torch.bool, device=CUDA)
    with torch.inference_mode(), torch.autocast(CUDA, dtype=torch.bfloat16):
        y = mod(x, mask).y
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


# ----------------------------------------------------------------------------- fused kernels against the portable ones


def make(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "self":
        return SelfAttention(dim=DIM, num_heads=HEADS).to(CUDA)
    if kind == "localized":
        return LocalizedAttention(dim=DIM, num_heads=HEADS, window_size=7, **kw).to(CUDA)
    return BoundaryAwareAttention(dim=DIM, num_heads=HEADS, bias=kind, **kw).to(CUDA)


def test_auto_kernel_is_flex_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(attn, "flex_banded_attention", lambda *a, **k: calls.append(1) or a[0])
    x = torch.zeros(1, 1, 8, 4, device=CUDA)
    banded_attention(x, x, x, torch.ones(1, 8, dtype=torch.bool, device=CUDA), radius=1, block_size=4)
    assert calls == [1]
    assert not attn.use_flex(x, kernel="auto", dropout_p=0.1)  # FlexAttention has no dropout


def forward_backward(mod, x, mask, dtype):
    x = x.clone().requires_grad_(True)
    mod.zero_grad(set_to_none=True)
    with torch.autocast(CUDA, dtype=dtype, enabled=dtype != torch.float32):
        y = mod(x, mask).y
    g = torch.randn(y.shape, device=CUDA, generator=torch.Generator(CUDA).manual_seed(1)) * mask[..., None]
    (y.float() * g).sum().backward()
    return y.float() * mask[..., None], x.grad, {n: p.grad.clone() for n, p in mod.named_parameters()}


@pytest.mark.parametrize("kind", ["localized", "segment"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_fused_equals_blocked_on_cuda(kind, dtype, tol):
    """FlexAttention (kernel=flex) against the portable kernel (kernel=blocked) on CUDA,
    outputs and every gradient, lengths off the 128 tile, one padded document."""
    t = 1000
    x = torch.randn(2, t, DIM, device=CUDA)
    mask = lengths_mask(t, [t, 613])
    fused, blocked = make(kind, kernel="flex"), make(kind, kernel="blocked")
    blocked.load_state_dict(fused.state_dict())
    ref = forward_backward(blocked, x, mask, torch.float32)  # float32 reference
    got = forward_backward(fused, x, mask, dtype)
    torch.testing.assert_close(got[0], ref[0], atol=tol, rtol=tol)
    torch.testing.assert_close(got[1], ref[1], atol=tol, rtol=tol)
    scale = max(g.abs().max() for g in ref[2].values())
    for name, g in got[2].items():
        torch.testing.assert_close(g, ref[2][name], atol=tol * scale, rtol=tol, msg=name)


@pytest.mark.parametrize("kind", ["self", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sdpa_paths_run_on_fused_kernels(kind, dtype):
    """With the math backend switched off, SDPA raises rather than fall back: the mean form's
    padded head (Dh + 1 -> multiple of 8) keeps it on a fused kernel, like self's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mod = make(kind)
    x = torch.randn(2, 300, DIM, device=CUDA)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        forward_backward(mod, x, lengths_mask(300, [300, 200]), dtype)


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize("form", ["mean", "segment"])
def test_boundary_aware_peak_memory_within_1_5x_self_at_65536_units(form):
    t = 65_536
    peaks = {}
    for kind in ("self", form):
        mod = make(kind)
        mem = measure_cuda_peak_memory(mod, length=t, batch_size=1, dim=DIM, dtype="bf16")
        assert "error" not in mem, f"{kind}: {mem}"
        peaks[kind] = mem["peak_bytes"] - mem["baseline_bytes"]
        del mod
    assert peaks[form] <= 1.5 * peaks["self"], {k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()}


def test_localized_peak_memory_grows_linearly():
    """4x the units, about 4x the memory above baseline (quadratic would be 16x)."""
    grown = []
    for t in (65_536, 262_144):
        mem = measure_cuda_peak_memory(make("localized"), length=t, batch_size=1, dim=DIM, dtype="bf16")
        assert "error" not in mem, mem
        grown.append(mem["peak_bytes"] - mem["baseline_bytes"])
    assert grown[1] / grown[0] < 6, [f"{g / 2**20:.0f} MiB" for g in grown]

"""Low precision: every attention type runs forward and backward under bf16 autocast and
with bf16 parameters, close to float32; the hand-written localized backward takes
inputs and gradients of any floating dtype."""

from __future__ import annotations

import pytest
import torch

from segmenter.models.attention import banded_attention
from tests.helpers import ATTENTIONS, build_attention

DIM, HEADS = 32, 4
# Every attention type as configured (conf/attention/*.yaml; boundary_aware's mean form),
# plus the other kernel path of boundary_aware.
KINDS = {
    **{name: (name, {}) for name in ATTENTIONS},
    "boundary_aware_segment": ("boundary_aware", {"bias": "segment", "query_block": 8}),  # 3 blocks
}
# bf16 keeps 8 bits of mantissa: a relative error of 2^-8 per rounding, a few roundings deep
BF16 = {"atol": 5e-2, "rtol": 5e-2}


def make(kind: str):
    name, kw = KINDS[kind]
    torch.manual_seed(0)
    return build_attention(name, dim=DIM, num_heads=HEADS, **kw)


def inputs(t: int = 20):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, t, DIM, generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor([[t], [t - 6]])  # one padded document
    return x, mask


def run(mod, x, mask, g):
    """Output and input gradient of (y * g).sum(), with the parameters' gradients."""
    x = x.clone().requires_grad_(True)
    mod.zero_grad()
    y = mod(x, mask).y
    (y.float() * g).sum().backward()
    return y.float(), x.grad.float(), {n: p.grad.float() for n, p in mod.named_parameters()}


def assert_bf16_close(low, ref, mask):
    y, dx, grads = low
    y_ref, dx_ref, grads_ref = ref
    m = mask[..., None]
    torch.testing.assert_close(y * m, y_ref * m, **BF16)
    torch.testing.assert_close(dx * m, dx_ref * m, **BF16)
    # A parameter's grad sums over every unit and can cancel to almost nothing (the
    # predictor's output bias under the mean form, whose p_i term cancels in softmax):
    # its rounding error follows the module's gradient scale, not its own.
    scale = max(g.abs().max() for g in grads_ref.values())
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, grads_ref[name], atol=BF16["atol"] * scale, rtol=BF16["rtol"], msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_autocast_forward_backward_close_to_fp32(kind):
    mod = make(kind).train()
    x, mask = inputs()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * mask[..., None]
    ref = run(mod, x, mask, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = run(mod, x, mask, g)
    assert_bf16_close(low, ref, mask)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_parameters_and_inputs_close_to_fp32(kind):
    mod = make(kind).train()
    x, mask = inputs()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * mask[..., None]
    ref = run(mod, x, mask, g)
    low_mod = make(kind).train().to(torch.bfloat16)
    low_mod.load_state_dict(mod.state_dict())  # the same weights, rounded
    y, dx, grads = run(low_mod, x.to(torch.bfloat16), mask, g)
    assert y.dtype == torch.float32 and low_mod(x.to(torch.bfloat16), mask).y.dtype == torch.bfloat16
    # bf16 weights and activations round at every layer: a looser tolerance than autocast
    m = mask[..., None]
    torch.testing.assert_close(y * m, ref[0] * m, atol=1e-1, rtol=1e-1)
    torch.testing.assert_close(dx * m, ref[1] * m, atol=1e-1, rtol=1e-1)
    assert all(torch.isfinite(v).all() for v in grads.values())


def test_banded_attention_float32_inputs_under_autocast():
    """A crash found on CUDA, reproduced on CPU: float32 q, k, v under bf16
    autocast, backward outside it. The matmuls used to save probabilities in one dtype
    and meet the gradient in another ("expected scalar type Float but found BFloat16")."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.arange(40)[None, :] < 33
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = banded_attention(q, k, v, mask, radius=3, block_size=16)
    assert y.dtype == torch.bfloat16  # as autocast runs a matmul
    y.float().sum().backward()
    ref = [z.detach().clone().requires_grad_(True) for z in (q, k, v)]
    banded_attention(*ref, mask, radius=3, block_size=16).sum().backward()
    for low, high in zip((q, k, v), ref):
        assert low.grad.dtype == torch.float32  # grads come back in the inputs' dtype
        torch.testing.assert_close(low.grad, high.grad, **BF16)


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_banded_attention_accepts_a_gradient_of_another_dtype(grad_dtype):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 21, 8, generator=gen, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 21, dtype=torch.bool)
    y = banded_attention(q, k, v, mask, radius=2, block_size=8, dropout_p=0.1)
    y.backward(torch.ones(y.shape, dtype=grad_dtype))
    assert all(z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad).all() for z in (q, k, v))


@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_inference_close_to_fp32(kind):
    """Prediction's case: inference_mode under bf16 autocast."""
    mod = make(kind).eval()
    x, mask = inputs(40)
    with torch.inference_mode():
        ref = mod(x, mask).y
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = mod(x, mask).y
    assert low.dtype == torch.bfloat16
    m = mask[..., None]
    torch.testing.assert_close(low.float() * m, ref * m, **BF16)

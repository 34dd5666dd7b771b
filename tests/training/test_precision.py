"""Mixed precision end to end: one optimizer step of the real model, composed from the
real configs (trainer=gpu's precision), under Lightning on CPU for every attention type.
The same step on CUDA is in tests/test_gpu.py."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import ATTENTIONS, TINY_MODEL, one_step


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_bf16_mixed_training_step_on_cpu(tiny_cfg, attention):
    cfg = tiny_cfg(f"attention={attention}", "trainer=gpu", "trainer.accelerator=cpu", *TINY_MODEL)
    assert cfg.trainer.precision == "bf16-mixed"  # what trainer=gpu trains in
    before, after, loss = one_step(cfg, accelerator="cpu")
    assert loss == loss and abs(loss) < float("inf")
    assert all(after[n].dtype == torch.float32 and torch.isfinite(after[n]).all() for n in after)  # fp32 master weights
    attn = [n for n in after if ".attention.qkv." in n]
    assert attn and all(not torch.equal(before[n], after[n]) for n in attn), "the attention weights did not move"

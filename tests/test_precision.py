"""Mixed precision end to end: one optimizer step of the real model, composed from the
real configs (trainer=gpu's precision), under Lightning on CPU for every attention type.
The same step on CUDA is in tests/test_gpu.py."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from segmenter.train import build
from tests.helpers import ATTENTIONS

TINY_MODEL = ["model.net.dim=32", "model.net.num_layers=2", "model.net.ff_dim=32", "model.net.cohesion.radius=2"]


def one_step(cfg, *, accelerator: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Parameters before and after one training step, and the step's loss."""
    datamodule, model = build(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    after = {n: p.detach().cpu() for n, p in model.named_parameters()}
    return before, after, float(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_bf16_mixed_training_step_on_cpu(tiny_cfg, attention):
    cfg = tiny_cfg(f"attention={attention}", "trainer=gpu", "trainer.accelerator=cpu", *TINY_MODEL)
    assert cfg.trainer.precision == "bf16-mixed"  # what trainer=gpu trains in
    before, after, loss = one_step(cfg, accelerator="cpu")
    assert loss == loss and abs(loss) < float("inf")
    assert all(after[n].dtype == torch.float32 and torch.isfinite(after[n]).all() for n in after)  # fp32 master weights
    attn = [n for n in after if ".attention.qkv." in n]
    assert attn and all(not torch.equal(before[n], after[n]) for n in attn), "the attention weights did not move"

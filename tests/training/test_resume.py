"""Resume and determinism: an interrupted run resumed from its last checkpoint ends
exactly where an uninterrupted run with the same seed ends; same seed, same metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segmenter.training.train import train
from tests.helpers import TINY_DATA, compose_train

# Three training batches per epoch (debug=limit), a small net: seconds per run.
FAST = [
    *TINY_DATA,
    "debug=limit",
    "attention=localized",
    "model.net.dim=32",
    "model.net.num_layers=2",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.log_every_n_steps=1",
    "test=false",
]
TIMING = ("time/fit_s", "train/units_per_sec")


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[dict[str, float], Path]:
    cfg = compose_train(tmp_path / name, [*FAST, *overrides])
    return train(cfg), Path(cfg.paths.output_dir)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """All points of one scalar over every event file of the run's TensorBoard folder."""
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return sorted((e.step, e.value) for e in acc.Scalars(tag))


def test_resume_equals_uninterrupted_run(tmp_path):
    _, resumed_dir = run(tmp_path, "resumed", "trainer.max_epochs=1")
    first = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 3
    resumed, _ = run(tmp_path, "resumed", "trainer.max_epochs=2", "ckpt_path=last")
    straight, straight_dir = run(tmp_path, "straight", "trainer.max_epochs=2")

    a = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # Optimizer moments and step counts, and the warm-up scheduler, continued too.
    for pa, pb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in pa:
            assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), k
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {
        k: v for k, v in straight.items() if k not in TIMING
    }

    # The resumed run wrote into the same TensorBoard run: together, its two sessions
    # hold the uninterrupted run's curves, step for step.
    assert list(resumed_dir.glob("tensorboard/version_*")) == []
    for tag in ("train/loss", "val/f1", "val/loss"):
        assert scalars(resumed_dir, tag) == scalars(straight_dir, tag), tag


def test_resume_from_a_missing_last_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no last"):
        run(tmp_path, "fresh", "ckpt_path=last")


def test_same_seed_same_metrics(tmp_path):
    m1, _ = run(tmp_path, "one", "trainer.max_epochs=1")
    m2, _ = run(tmp_path, "two", "trainer.max_epochs=1")
    m3, _ = run(tmp_path, "three", "trainer.max_epochs=1", "seed=7")
    same = {k: v for k, v in m1.items() if k not in TIMING}
    assert same == {k: v for k, v in m2.items() if k not in TIMING}
    assert "val/f1" in same and "train/loss" in same
    assert m3["train/loss"] != m1["train/loss"]  # the seed does reach the run


def test_resume_mid_epoch_continues_that_epoch(tmp_path):
    """A run stopped after 2 of its epoch's 3 training batches and resumed from that
    checkpoint ends exactly where an uninterrupted run ends: the checkpoint holds the
    training loader's position, so the resumed run trains on the third batch of the same
    epoch, not on a fresh epoch's first."""
    # last.ckpt after every step; no early stopping (no val/f1 when stopped mid-epoch)
    every_step = ["+callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.early_stopping=null"]
    _, resumed_dir = run(tmp_path, "resumed", "trainer.max_epochs=1", "+trainer.max_steps=2", *every_step)
    mid = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert mid["global_step"] == 2
    assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["_num_yielded"] == 2  # the loader's position
    run(tmp_path, "resumed", "trainer.max_epochs=2", "ckpt_path=last", *every_step)
    _, straight_dir = run(tmp_path, "straight", "trainer.max_epochs=2", *every_step)

    a = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k

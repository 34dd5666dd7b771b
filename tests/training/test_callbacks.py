"""Callbacks: heatmap images, the non-finite loss guard, TensorBoard's HPARAMS entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from segmenter.training.callbacks import NonFiniteLossError, heatmap_image
from segmenter.training.module import SegmenterModule
from segmenter.training.train import train
from tests.helpers import TINY_DATA, compose_train

FAST = [
    *TINY_DATA,
    "debug=limit",
    "model.net.dim=32",
    "model.net.num_layers=2",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.log_every_n_steps=1",
]


def test_heatmap_marks_gold_boundaries_and_the_band():
    attn = torch.zeros(4, 4)  # a band of width 1: every other key unseen
    attn[range(4), range(4)] = 1.0
    img = heatmap_image(attn, [0, 1, 0, 0], scale=3)  # a boundary after unit 1
    assert img.shape == (3, 12, 12) and 0 <= img.min() and img.max() <= 1
    red = torch.tensor([1.0, 0.0, 0.0])
    assert torch.equal(img[:, 5, 0], red) and torch.equal(img[:, 0, 5], red)  # last pixel of unit 1
    assert not torch.equal(img[:, 4, 0], red)
    assert torch.allclose(img[:, 9, 0], torch.tensor([0.35, 0.35, 0.35]))  # outside the band: grey
    with pytest.raises(ValueError, match="3 boundary labels for a 4-unit"):
        heatmap_image(attn, [0, 1, 0], scale=1)


def test_tensorboard_gets_heatmaps_and_hparams_with_final_metrics(tmp_path):
    cfg = compose_train(tmp_path, [*FAST, "attention=localized"])
    metrics = train(cfg)
    acc = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    # One heatmap card per run, all layers side by side, sorted after the val/ curves
    assert tags["images"] == ["val_attention/layers"] and sorted(["val/f1", "val_attention/layers"])[0] == "val/f1"
    images = acc.Images("val_attention/layers")
    assert [im.step for im in images] == [3, 6]  # each validation epoch, not the sanity check
    assert images[0].width > 2 * images[0].height  # two layers left to right
    assert {"train/loss", "val/f1", "lr-AdamW", "train/units_per_sec"} <= set(tags["scalars"])

    hp = acc.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["attention"].string_value == "localized"
    assert session.hparams["attn/window_size"].number_value == 7
    assert session.hparams["final/val_f1_best"].number_value == pytest.approx(metrics["val/f1_best"])
    experiment = HParamsPluginData.FromString(hp["_hparams_/experiment"]).experiment
    names = {m.name.tag for m in experiment.metric_infos}
    assert {"val/f1", "test/f1", "test/pk", "test/windowdiff"} <= names
    # The HPARAMS plugin only: no one-point hparam charts among the curves.
    assert not [t for t in tags["scalars"] if t.startswith("hparam")]
    assert [e.value for e in acc.Scalars("test/f1")] == [pytest.approx(metrics["test/f1"])]  # no extra point


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    step = SegmenterModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 4 else loss

    monkeypatch.setattr(SegmenterModule, "training_step", poisoned)
    cfg = compose_train(tmp_path, [*FAST, "attention=self", "logger=none", "callbacks.lr_monitor=null"])
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite training loss \(nan\) at global step 4 \(epoch 1, batch 1\)"
    ):
        train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # the end of the first epoch: the last good state
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert all(torch.load(p, weights_only=True)["global_step"] <= 3 for p in ckpts.glob("*.ckpt"))

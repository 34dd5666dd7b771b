"""Every Lightning callback of segmenter: what each checkpoint carries (CheckpointMetadata,
RandomStateCheckpoint), watching runs (AttentionHeatmap, UnitThroughput, LogProgress,
SummaryTable),
protecting them (FiniteLossGuard), and encoding every unit once before training
(WarmEncoderCache), and calibrating the best checkpoint after fit (CalibrateOnValidation).
conf/callbacks/*.yaml select them; train.py adds CheckpointMetadata to every run."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from torch import Tensor

from segmenter.core.document import IGNORE, boundary_labels
from segmenter.inference import calibration
from segmenter.inference.checkpoint import DIGEST_KEY, KEY, load, metadata, net_state, weights_digest
from segmenter.models.attention import InspectableAttention

log = logging.getLogger(__name__)

# Heatmap colours: low -> high attention through three anchors (dark blue, orange,
# pale yellow); cells outside a localized band are grey, gold boundaries red.
_ANCHORS = torch.tensor([[0.05, 0.03, 0.20], [0.90, 0.40, 0.10], [1.00, 0.98, 0.75]])  # (3, RGB)
_OUTSIDE = torch.tensor([0.35, 0.35, 0.35])
_BOUNDARY = torch.tensor([1.0, 0.0, 0.0])


def heatmap_image(attn: Tensor, boundaries: list[int], *, scale: int) -> Tensor:
    """(T, T) attention -> (3, T*scale, T*scale) RGB in [0, 1], with a red line after every
    unit that ends a gold segment, on both axes. Exact zeros (keys a unit cannot see:
    outside a localized band; a softmax gives no other zeros) are grey."""
    if attn.ndim != 2 or attn.shape[0] != attn.shape[1]:
        raise ValueError(f"attention map must be square (T, T), got {tuple(attn.shape)}")
    if len(boundaries) != attn.shape[0]:
        raise ValueError(f"{len(boundaries)} boundary labels for a {attn.shape[0]}-unit attention map")
    outside = attn == 0
    a = attn / attn.max().clamp(min=1e-12)  # (T, T) in [0, 1]: per-image scale, rows sum to 1
    pos = a * (len(_ANCHORS) - 1)
    lo = pos.floor().long().clamp(max=len(_ANCHORS) - 2)  # (T, T) index of the lower anchor
    frac = (pos - lo)[..., None]  # (T, T, 1)
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac  # (T, T, 3)
    rgb[outside] = _OUTSIDE
    rgb = rgb.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)  # (T*s, T*s, 3)
    for i, end in enumerate(boundaries):
        if end:  # the last pixel row/column of unit i: the gap before unit i + 1
            p = (i + 1) * scale - 1
            rgb[p, :] = _BOUNDARY
            rgb[:, p] = _BOUNDARY
    return rgb.permute(2, 0, 1).contiguous()  # (3, T*s, T*s)


def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class AttentionHeatmap(Callback):
    """After every validation epoch, draw each layer's attention (head mean) over one
    fixed validation document, gold boundaries in red, into TensorBoard's Images tab: one
    image per validation, layers left to right, under the tag ``val_attention/layers`` (one
    card per run, sorted after the train/val curves; the step slider walks through training)."""

    TAG = "val_attention/layers"

    def __init__(self, *, doc_index: int = 0, max_units: int = 96, image_size: int = 288) -> None:
        if doc_index < 0 or max_units < 2 or image_size < 1:
            raise ValueError(
                f"doc_index={doc_index} must be >= 0, max_units={max_units} >= 2, image_size={image_size} >= 1"
            )
        self.doc_index, self.max_units, self.image_size = doc_index, max_units, image_size

    @torch.no_grad()
    def attention_maps(self, pl_module: LightningModule, feats: dict[str, Tensor]) -> list[Tensor]:
        """(T, T) head-mean attention per layer for one document (``feats``: its batch of one)."""
        blocks = pl_module.net.blocks
        inputs: dict[int, tuple[Tensor, Tensor]] = {}
        hooks = [
            # The attention's own input (after the block's norm) is what attention_weights needs.
            block.attention.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[:2]))
            for i, block in enumerate(blocks)
        ]
        try:
            pl_module.net({k: v.to(pl_module.device) for k, v in feats.items()})
        finally:
            for h in hooks:
                h.remove()
        maps = []
        for i, block in enumerate(blocks):
            attn = block.attention
            x, mask = inputs[i]
            maps.append(attn.attention_weights(x, mask)[0].float().mean(dim=0).cpu())  # (T, T): head mean
        return maps

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = tensorboard_loggers(trainer)
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        if not all(isinstance(b.attention, InspectableAttention) for b in pl_module.net.blocks):
            return  # an attention type without attention_weights (optional): nothing to draw
        loader = trainer.val_dataloaders
        dataset = (loader[0] if isinstance(loader, list) else loader).dataset
        if self.doc_index >= len(dataset):
            raise ValueError(
                f"AttentionHeatmap doc_index={self.doc_index} but the validation set has {len(dataset)} documents"
            )
        doc = dataset[self.doc_index]
        t = min(len(doc), self.max_units)
        gold = boundary_labels(doc.labels, pl_module.hparams.task)[:t]
        scale = max(1, self.image_size // t)
        feats = trainer.datamodule.featurizer.batch([doc.units[:t]])
        images = [heatmap_image(attn, gold, scale=scale) for attn in self.attention_maps(pl_module, feats)]
        gap = torch.ones(3, images[0].shape[1], max(2, scale))  # white column between layers
        img = torch.cat([x for im in images for x in (im, gap)][:-1], dim=2)  # (3, H, L * W + gaps)
        for lg in loggers:
            lg.experiment.add_image(self.TAG, img, trainer.global_step, dataformats="CHW")


class NonFiniteLossError(FloatingPointError):
    """Raised by FiniteLossGuard; the message names the step."""


class FiniteLossGuard(Callback):
    """Stop at the first NaN/inf training loss, before its backward pass and optimizer
    step: the weights stay as they were, and no checkpoint is written after the fault
    (ModelCheckpoint saves at epoch/validation ends, which an exception never reaches),
    so the last checkpoint on disk is the last good one."""

    def __init__(self) -> None:
        self._batch_idx = -1

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        written = [
            Path(p) for cb in trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path) if p
        ]
        written = [p for p in written if p.is_file()]
        ckpt = str(max(written, key=lambda p: p.stat().st_mtime)) if written else ""  # the newest
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.detach().float().item()}) at global step {trainer.global_step}"
            f" (epoch {trainer.current_epoch}, batch {self._batch_idx}); stopped before its optimizer step."
            f" Last good checkpoint: {ckpt or 'none written yet'}"
        )


class UnitThroughput(Callback):
    """Training units (sentences) per second, counted over the time spent in training
    batches (forward, backward, optimizer step; not validation or data loading).
    Logs ``train/units_per_sec`` each epoch: the average over the whole run so far,
    summed over processes under DDP. Its totals go into checkpoints, so a resumed run
    keeps averaging over all of its training."""

    def __init__(self) -> None:
        self.units, self.seconds, self._t0 = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.units += int(batch["features"]["mask"].sum())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.seconds > 0:
            rate = self.units / self.seconds
            pl_module.log("train/units_per_sec", rate, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="sum")

    def state_dict(self) -> dict[str, Any]:
        return {"units": self.units, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.units, self.seconds = state_dict["units"], state_dict["seconds"]


class RandomStateCheckpoint(Callback):
    """Saves the global random state (torch, numpy, Python) in every checkpoint and
    puts it back on resume, so the shuffling and dropout of a resumed run match those
    of an uninterrupted run with the same seed (Lightning checkpoints carry no random
    state). Checkpoints are written after the epoch's validation and the next random
    draw is the next epoch's shuffle; a resume skips the sanity-check validation and
    makes that same draw first, so restoring with the other callback states (before
    the training loop starts) lines the two runs up."""

    def state_dict(self) -> dict[str, Any]:
        # Tensors and plain Python values only: checkpoints load with weights_only=True.
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, mt, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(mt), py_gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, mt, py_gauss = state_dict["python"]
        random.setstate((version, tuple(mt), py_gauss))


# -- console ---------------------------------------------------------------------------
class LogProgress(ProgressBar):
    """Progress as one log line per epoch, for output that is not a terminal (CI, ``| tee``),
    where a live progress bar leaves wrapped and cut frames: epoch, step and the epoch's
    metrics. Used in place of the Rich bar when standard output is not a TTY (train.py)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = time.monotonic()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.monotonic()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._enabled or not trainer.is_global_zero:
            return
        shown = ("train/loss", "val/loss", "val/f1", "val/pk")
        values = " ".join(
            f"{k}={float(trainer.callback_metrics[k]):.4f}" for k in shown if k in trainer.callback_metrics
        )
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info(
            "epoch %d%s step %d: %s (%.1f s)",
            trainer.current_epoch + 1,
            epochs,
            trainer.global_step,
            values,
            time.monotonic() - self._start,
        )


class SummaryTable(ModelSummary):
    """Lightning's model summary (layers, parameters, size) as one log record, so it reaches
    train.log as well as the console. The FLOPs column and total are left out when they are
    0: Lightning counts FLOPs only for a module with an ``example_input_array``, which
    segmenter's network (a dict of feature tensors in) does not have, so they would read 0."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        log.info(
            "model:\n%s",
            summary_text(
                summary_data,
                total_parameters=total_parameters,
                trainable_parameters=trainable_parameters,
                model_size=model_size,
                total_training_modes=total_training_modes,
                total_flops=total_flops,
            ),
        )


def summary_text(
    columns: list[tuple[str, list[str]]],
    *,
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: Mapping[str, int],
    total_flops: int,
) -> str:
    """The summary table of ``columns`` ((name, cells) each, as Lightning's ModelSummary gives
    them) and its totals; no FLOPs where ``total_flops`` is 0 (none were counted)."""
    columns = [(name, cells) for name, cells in columns if total_flops or name != "FLOPs"]
    widths = [max(len(name), *(len(c) for c in cells)) for name, cells in columns]
    rows = [[name for name, _ in columns], *zip(*(cells for _, cells in columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))

    def count(n: int) -> str:
        return get_human_readable_count(int(n)).strip()

    lines += [
        f"{count(trainable_parameters)} trainable params, {count(total_parameters - trainable_parameters)} "
        f"non-trainable, {count(total_parameters)} total ({get_formatted_model_size(model_size)} MB); "
        f"modules: {total_training_modes.get('train', 0)} in train mode, {total_training_modes.get('eval', 0)} in eval mode"
        + (f"; {count(total_flops)} FLOPs" if total_flops else "")
    ]
    return "\n".join(lines)


# -- checkpoints and encoders ------------------------------------------------------------
def monitored_checkpoint(trainer: Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best checkpoint: the first ModelCheckpoint with
    a ``monitor`` (Lightning's ``trainer.checkpoint_callback`` is merely the first one listed,
    which would be last_checkpoint if conf/callbacks listed it first). None: none monitors."""
    return next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)


class CheckpointMetadata(Callback):
    """Writes the "segmenter" entry (segmenter/inference/checkpoint.py: how to rebuild the model, and
    the weights' digest) into every checkpoint the trainer saves (ModelCheckpoint's
    epoch_XXX.ckpt and last.ckpt alike)."""

    def __init__(
        self,
        *,
        net: Mapping[str, Any],
        task: str,
        label_names: Sequence[str],
        featurizer: Sequence[Mapping[str, Any]] | None = None,
        units: str | None = None,
    ) -> None:
        self.meta = metadata(net=net, task=task, label_names=label_names, featurizer=featurizer, units=units)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = {**copy.deepcopy(self.meta), DIGEST_KEY: weights_digest(checkpoint["state_dict"])}


class WarmEncoderCache(Callback):
    """Before fitting, testing or predicting, encode every unit of the datamodule's splits,
    streamed from the store in bounded chunks (progress logged, then cached on disk), so no
    training step waits on the sentence encoder. Does nothing for featurizers without frozen vectors (e.g. hashed).

    Rank 0 encodes and writes the cache; the other ranks then read it from disk.
    """

    def _warm(self, trainer: Trainer, pl_module: LightningModule) -> None:
        featurizer = getattr(trainer.datamodule, "featurizer", None)
        all_units = getattr(trainer.datamodule, "all_units", None)
        if featurizer is None or all_units is None or not any(hasattr(f, "warm") for f in featurizer.features):
            return
        # all_units() streams the store: each pass reads it afresh, a chunk at a time.
        if trainer.is_global_zero:
            featurizer.warm(all_units())
        trainer.strategy.barrier("warm_encoder_cache")
        if not trainer.is_global_zero:
            featurizer.warm(all_units())  # reads rank 0's shards; encodes nothing new

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._warm(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._warm(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._warm(trainer, pl_module)


class CalibrateOnValidation(Callback):
    """At the end of fit: load the best checkpoint's weights, fit a calibrator
    (``segmenter.inference.calibration``) on the validation split, store it in that checkpoint (which
    ``test``, ``evaluate`` and ``predict`` then read) and log ``calibration/ece_before``,
    ``calibration/ece_after`` and ``calibration/ece_heldout`` to the loggers (TensorBoard)."""

    def __init__(self, *, method: str = "auto", bias: bool = True, bins: int = calibration.BINS) -> None:
        if method not in calibration.METHODS:
            raise ValueError(f"method={method!r} is not one of {calibration.METHODS}")
        if bins < 1:
            raise ValueError(f"bins={bins} must be >= 1")
        self.method, self.bias, self.bins = method, bias, bins

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.interrupted or trainer.sanity_checking or not trainer.is_global_zero:
            return
        best = getattr(monitored_checkpoint(trainer), "best_model_path", "") or ""
        if not best or not Path(best).is_file():
            log.warning("calibration skipped: no best checkpoint to calibrate")
            return
        net = pl_module.net
        net.load_state_dict(net_state(load(best)))  # the best epoch's weights, not the last one's
        cal = calibration.calibrate_checkpoint(
            best,
            net,
            trainer.datamodule.val_dataloader(),
            ignore_index=IGNORE,
            method=self.method,
            bias=self.bias,
            bins=self.bins,
        )
        report = {f"calibration/{k}": getattr(cal, k) for k in ("ece_before", "ece_after", "ece_heldout")}
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in report.items() if v is not None}, step=trainer.global_step)
        log.info(
            "calibrated %s (%s) on %d validation units; ECE (%d bins) %.4f before, %.4f after, %s cross-fitted",
            best,
            cal.method,
            cal.units,
            cal.bins,
            cal.ece_before,
            cal.ece_after,
            "n/a" if cal.ece_heldout is None else f"{cal.ece_heldout:.4f}",
        )

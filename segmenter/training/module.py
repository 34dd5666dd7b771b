"""LightningModule: the network is passed in; one shared step serves train, val and test."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from omegaconf import Container, OmegaConf
from torch import Tensor, nn

from segmenter.core.bounds import Number
from segmenter.core.document import BOUNDARY, check_label_names, check_task
from segmenter.models.net import NetOutput
from segmenter.training.metrics import build_metrics

STAGES = ("train", "val", "test")
WEIGHTINGS = {"none": 0.0, "sqrt": 0.5, "balanced": 1.0}


def class_weights(counts: Sequence[int] | None, weighting: str, num_classes: int) -> Tensor | None:
    """Loss weights against class imbalance (boundaries are rare): (n / (C * count_c)) ** power,
    power 1 for "balanced", 1/2 for "sqrt"; None for "none"."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"class_weighting={weighting!r} is not one of {tuple(WEIGHTINGS)}")
    if weighting == "none" or counts is None:
        return None
    if len(counts) != num_classes:
        raise ValueError(f"class_counts={list(counts)} for num_classes={num_classes}")
    c = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    return (c.sum() / (num_classes * c)) ** WEIGHTINGS[weighting]


# The settings' bounds (segmenter.core.bounds; the command line checks model.* with them too).
AUX_LOSS_WEIGHT = Number(lo=0, whole=False)


class SegmenterModule(LightningModule):
    def __init__(
        self,
        *,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        task: str = BOUNDARY,
        label_names: Sequence[str] = ("inside", "boundary"),
        class_counts: Sequence[int] | None = None,
        class_weighting: str = "balanced",
        aux_loss_weight: float = 0.0,
        subsets: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``subsets``: {"val": [...], "test": [...]}, the subsets of each evaluation split
        (the corpora of a mixture, Choi's folders; SegmentationDataModule.subsets) whose metrics
        are logged apart as well, e.g. ``val/wiki/pk``."""
        super().__init__()
        check_task(task)
        check_label_names(label_names, net.num_classes)
        AUX_LOSS_WEIGHT.check("aux_loss_weight", aux_loss_weight)
        # Checkpoints hold plain data only (they load with torch.load(weights_only=True)):
        # the optimizer and scheduler factories are functools.partial objects, kept as
        # attributes rather than hyperparameters; the net is rebuilt from the checkpoint's
        # "segmenter" entry (segmenter/inference/checkpoint.py).
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = net
        self.register_buffer("class_weights", class_weights(class_counts, class_weighting, net.num_classes))
        metrics = build_metrics(task, net.num_classes, label_names)
        # One collection per stage: torchmetrics keeps (and syncs) their states apart.
        self.metrics = nn.ModuleDict({f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES})
        # ... and one per subset of an evaluation split (module names cannot hold "/" or ".").
        self.subsets = {stage: list(names) for stage, names in (subsets or {}).items()}
        for stage, names in self.subsets.items():
            if stage not in STAGES[1:]:
                raise ValueError(f"subsets={dict(subsets)}: the keys are evaluation splits, {STAGES[1:]}")
            for i, name in enumerate(names):
                self.metrics[f"{stage}_subset{i}_metrics"] = metrics.clone(prefix=f"{stage}/{name}/")

    def forward(self, feats: Mapping[str, Tensor], *, start: Tensor | None = None) -> NetOutput:
        """The network on a featurized batch of B documents (or windows starting at
        ``start`` (B,) in theirs)."""
        return self.net(feats, start=start)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        out = self(batch["features"], start=batch["start"])
        mask = out.mask  # (B, T)
        labels = batch["labels"]  # (B, T), IGNORE at padding
        loss = F.cross_entropy(out.logits[mask], labels[mask], weight=self.class_weights)
        bs = labels.shape[0]
        if self.net.crf is not None:  # the sequence log-likelihood trains the label transitions
            crf = self.net.crf.nll(out.logits, labels, mask)
            loss = loss + crf
            self.log(f"{stage}/crf_loss", crf, batch_size=bs, on_step=stage == "train", on_epoch=stage != "train")
        if out.boundary_logits is not None and self.hparams.aux_loss_weight > 0:
            # Train the boundary predictors against the gold segment ends, every layer alike.
            target = batch["boundaries"][mask].expand(out.boundary_logits.shape[0], -1)  # (L, N)
            aux = F.binary_cross_entropy_with_logits(out.boundary_logits[:, mask], target)
            loss = loss + self.hparams.aux_loss_weight * aux
            self.log(f"{stage}/aux_loss", aux, batch_size=bs, on_step=stage == "train", on_epoch=stage != "train")
        metrics = self.metrics[f"{stage}_metrics"]
        preds = self.net.decode(out.logits.detach(), mask)  # (B, T): Viterbi with a CRF, else argmax
        metrics.update(preds, labels)  # whole documents (B, T), IGNORE at padding: per-document metrics need them
        # Loss per step in training, per epoch otherwise; metrics per epoch. Logging the
        # metric objects (not their values) lets Lightning compute them over the whole
        # epoch and sync their states across processes.
        # sync_dist: under DDP the epoch loss is averaged over processes, not rank 0's alone.
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            batch_size=bs,
            on_step=stage == "train",
            on_epoch=stage != "train",
            sync_dist=stage != "train",
        )
        self.log_dict(metrics, prog_bar=stage != "train", batch_size=bs, on_step=False, on_epoch=True)
        for i, name in enumerate(self.subsets.get(stage, ())):
            sub = self.metrics[f"{stage}_subset{i}_metrics"]
            rows = [b for b, s in enumerate(batch["subsets"]) if s == name]
            if rows:
                sub.update(preds[rows], labels[rows])  # (b, T) this subset's documents
            # Logged once updated (a subset that limit_val_batches left out is not reported as
            # 0); under DDP on every step, so that every process computes (and syncs) it at the
            # epoch's end, whichever documents it was given.
            if rows or self.trainer.world_size > 1:
                self.log_dict(sub, batch_size=bs, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Hydra hands lists over as ListConfig; stored as plain lists (and dicts) the
        # checkpoint stays loadable with torch.load(weights_only=True).
        hp = checkpoint.get("hyper_parameters")
        if hp:
            checkpoint["hyper_parameters"] = {
                k: OmegaConf.to_container(v, resolve=True) if isinstance(v, Container) else v for k, v in hp.items()
            }

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

"""LightningModule: the network is passed in; one shared step serves train, val and test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassF1Score

from segmenter.data.document import BOUNDARY, TASKS

STAGES = ("train", "val", "test")


class SegmenterModule(LightningModule):
    def __init__(
        self,
        *,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        task: str = BOUNDARY,
        label_names: Sequence[str] = ("inside", "boundary"),
        class_weights: Sequence[float] | None = None,
        aux_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {TASKS}")
        if len(label_names) != net.num_classes:
            raise ValueError(f"{len(label_names)} label_names {list(label_names)} for num_classes={net.num_classes}")
        if class_weights is not None and len(class_weights) != net.num_classes:
            raise ValueError(f"class_weights={list(class_weights)} for num_classes={net.num_classes}")
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float))
        if task == BOUNDARY:
            f1 = BinaryF1Score()  # F1 of the boundary class
        else:
            f1 = MulticlassF1Score(num_classes=net.num_classes, average="macro")
        metrics = MetricCollection({"f1": f1})
        # One collection per stage: torchmetrics keeps (and syncs) their states apart.
        self.metrics = nn.ModuleDict({f"{stage}_metrics": metrics.clone(prefix=f"{stage}/") for stage in STAGES})

    def forward(self, docs: Sequence[Sequence[str]]):
        return self.net(docs)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        out = self.net(batch["units"])
        mask = out.mask  # (B, T)
        logits, labels = out.logits[mask], batch["labels"][mask]  # (N, C), (N,)
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        bs = len(batch["units"])
        if out.boundary_logits is not None and self.hparams.aux_loss_weight > 0:
            # Train the boundary predictors against the gold segment ends, every layer alike.
            target = batch["boundaries"][mask].expand(out.boundary_logits.shape[0], -1)  # (L, N)
            aux = F.binary_cross_entropy_with_logits(out.boundary_logits[:, mask], target)
            loss = loss + self.hparams.aux_loss_weight * aux
            self.log(f"{stage}/aux_loss", aux, batch_size=bs, on_step=stage == "train", on_epoch=stage != "train")
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.argmax(dim=-1), labels)
        # Loss per step in training, per epoch otherwise; metrics per epoch. Logging the
        # metric objects (not their values) lets Lightning compute them over the whole
        # epoch and sync their states across processes.
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, on_step=stage == "train", on_epoch=stage != "train")
        self.log_dict(metrics, prog_bar=stage != "train", batch_size=bs, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

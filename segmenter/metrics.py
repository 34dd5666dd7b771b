"""Metrics, all fed whole documents: preds and target (B, T) with IGNORE (-100) at padding."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassF1Score

from segmenter.data.datamodule import IGNORE
from segmenter.data.document import BOUNDARY


def build_metrics(task: str, num_classes: int) -> MetricCollection:
    """``f1``: F1 of the boundary class (boundary task) or macro F1 over section types."""
    if task == BOUNDARY:
        f1 = BinaryF1Score(ignore_index=IGNORE)
    else:
        f1 = MulticlassF1Score(num_classes=num_classes, average="macro", ignore_index=IGNORE)
    return MetricCollection({"f1": f1})

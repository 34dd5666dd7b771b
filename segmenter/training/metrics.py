"""Metrics, all fed whole documents: preds and target (B, T) with IGNORE (-100) at padding.

Segmentation metrics follow the literature's conventions (and the ``segeval`` package):

- a document of N units has N - 1 boundary slots; slot i is 1 when unit i ends a segment
  (the end of the document is not a slot);
- Pk (Beeferman et al. 1999) and WindowDiff (Pevzner & Hearst 2002) slide a window of
  k units, k from the *reference*: k = max(2, round-half-even(N / (2 * #segments))),
  i.e. half the mean reference segment length (segeval's default);
- the reported number is the mean over documents; a document too short for one window
  (N <= k) scores 0, as segeval returns for it;
- argument order is (hypothesis, reference): k comes from the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassF1Score

from segmenter.core.document import BOUNDARY, IGNORE, boundary_slots, check_label_names, check_task


def window_size(reference: Tensor) -> int:
    """k for a reference of N - 1 boundary slots: max(2, round-half-even(N / (2 * #segments)))."""
    n = reference.numel() + 1
    segments = int(reference.sum()) + 1
    return max(2, round(n / (2 * segments)))  # Python's round is round-half-even


def _positions(slots: Tensor) -> Tensor:
    """N - 1 boundary slots -> (N,) segment index of every unit."""
    return torch.cat((slots.new_zeros(1), slots.long().cumsum(0)))


def _aligned(hypothesis: Tensor, reference: Tensor, k: int | None) -> tuple[Tensor, Tensor, int] | None:
    """The segment index of every unit of both, and k; None when the document has N <= k units."""
    if hypothesis.shape != reference.shape:
        raise ValueError(f"hypothesis {tuple(hypothesis.shape)} and reference {tuple(reference.shape)} differ")
    k = window_size(reference) if k is None else k
    ref, hyp = _positions(reference), _positions(hypothesis)
    return None if ref.numel() <= k else (hyp, ref, k)


def pk(hypothesis: Tensor, reference: Tensor, k: int | None = None) -> float:
    """Pk of one document; both are 0/1 boundary slots of length N - 1."""
    if (aligned := _aligned(hypothesis, reference, k)) is None:
        return 0.0
    hyp, ref, k = aligned
    same_ref = ref[:-k] == ref[k:]  # (N - k,) units i and i + k in one reference segment
    same_hyp = hyp[:-k] == hyp[k:]
    return (same_ref != same_hyp).float().mean().item()


def window_diff(hypothesis: Tensor, reference: Tensor, k: int | None = None) -> float:
    """WindowDiff of one document; both are 0/1 boundary slots of length N - 1."""
    if (aligned := _aligned(hypothesis, reference, k)) is None:
        return 0.0
    hyp, ref, k = aligned
    # Boundaries between units i and i + k = difference of their segment indices.
    return ((ref[k:] - ref[:-k]) != (hyp[k:] - hyp[:-k])).float().mean().item()


def _documents(preds: Tensor, target: Tensor, task: str):
    """(B, T) preds/target with IGNORE at padding -> (hyp, ref) boundary slots per document."""
    if preds.shape != target.shape or preds.dim() != 2:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be (B, T)")
    for p, t in zip(preds, target):
        valid = t != IGNORE  # (T,)
        yield boundary_slots(p[valid], task), boundary_slots(t[valid], task)


class _PerDocument(Metric):
    """Mean over documents of a per-document score; sums sync across processes."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, task: str = BOUNDARY, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task = check_task(task)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("docs", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, hyp: Tensor, ref: Tensor) -> float:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        for hyp, ref in _documents(preds, target, self.task):
            self.total += self.score(hyp, ref)
            self.docs += 1

    def compute(self) -> Tensor:
        return (self.total / self.docs.clamp(min=1)).float()


class Pk(_PerDocument):
    """Mean Pk over documents (lower is better)."""

    def score(self, hyp: Tensor, ref: Tensor) -> float:
        return pk(hyp, ref)


class WindowDiff(_PerDocument):
    """Mean WindowDiff over documents (lower is better)."""

    def score(self, hyp: Tensor, ref: Tensor) -> float:
        return window_diff(hyp, ref)


class BoundaryF1(Metric):
    """Exact-slot boundary precision/recall/F1, counts summed over all documents."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, task: str = BOUNDARY, output: str = "f1", **kwargs) -> None:
        super().__init__(**kwargs)
        check_task(task)
        if output not in ("precision", "recall", "f1"):
            raise ValueError(f"output={output!r} is not one of ('precision', 'recall', 'f1')")
        self.task, self.output = task, output
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        for hyp, ref in _documents(preds, target, self.task):
            self.tp += int((hyp & ref).sum())
            self.fp += int((hyp & (1 - ref)).sum())
            self.fn += int(((1 - hyp) & ref).sum())

    def compute(self) -> Tensor:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        precision = tp / (tp + fp) if tp + fp > 0 else tp.new_tensor(0.0)
        recall = tp / (tp + fn) if tp + fn > 0 else tp.new_tensor(0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else tp.new_tensor(0.0)
        return {"precision": precision, "recall": recall, "f1": f1}[self.output].float()


class ClassF1(MulticlassF1Score):
    """F1 of one class: torchmetrics' per-class F1 (``average=None``), one entry of it.

    A metric whose ``compute`` returns a tensor, so Lightning can log the object itself
    (``ClasswiseWrapper`` returns a dict, which ``log_dict`` refuses). Its states are those
    of the macro F1, so a collection computes them all in one compute group."""

    def __init__(self, *, num_classes: int, class_index: int, **kwargs) -> None:
        if not 0 <= class_index < num_classes:
            raise ValueError(f"class_index={class_index} is not in [0, num_classes={num_classes})")
        super().__init__(num_classes=num_classes, average=None, **kwargs)
        self.class_index = class_index

    def compute(self) -> Tensor:
        return super().compute()[self.class_index]


def build_metrics(task: str, num_classes: int, label_names: Sequence[str] | None = None) -> MetricCollection:
    """``f1``: F1 of the boundary class (boundary task) or macro F1 over section types, with
    per-class F1 (``f1_<label>``) for sections; ``pk``, ``windowdiff`` and
    ``boundary_precision/recall/f1`` on the boundaries (where a section label changes)."""
    metrics = {}
    if check_task(task) == BOUNDARY:
        metrics["f1"] = BinaryF1Score(ignore_index=IGNORE)
    else:
        metrics["f1"] = MulticlassF1Score(num_classes=num_classes, average="macro", ignore_index=IGNORE)
        names = list(label_names) if label_names is not None else [str(i) for i in range(num_classes)]
        check_label_names(names, num_classes)
        for c, name in enumerate(names):
            metrics[f"f1_{name}"] = ClassF1(num_classes=num_classes, class_index=c, ignore_index=IGNORE)
    metrics["pk"] = Pk(task=task)
    metrics["windowdiff"] = WindowDiff(task=task)
    for output in ("precision", "recall", "f1"):
        metrics[f"boundary_{output}"] = BoundaryF1(task=task, output=output)
    # Explicit compute groups: torchmetrics' automatic grouping merges metrics whose states
    # are equal after the first update, and Pk and WindowDiff have the same state names, so
    # a first batch where they agree would make WindowDiff report Pk from then on.
    # (The F1 scores share one state: macro and per-class F1 are views of the same counts.)
    f1 = [name for name in metrics if name == "f1" or isinstance(metrics[name], ClassF1)]
    groups = [f1, ["pk"], ["windowdiff"], [f"boundary_{output}" for output in ("precision", "recall", "f1")]]
    return MetricCollection(metrics, compute_groups=groups)

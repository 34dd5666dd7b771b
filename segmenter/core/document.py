"""The document model: a document is a sequence of units with one label per unit.

Two tasks say what the labels mean, and this module is the one place that turns labels
(or label probabilities) into boundaries:

- ``boundary``: labels are 1 where a unit ends a segment (never the last unit), else 0;
- ``section``: labels are a section type per unit (verse, chorus...); a boundary wherever
  the label changes.

A document of N units has N - 1 boundary slots (slot i: between unit i and i + 1); the
document end is not one. ``IGNORE`` is the label of padded positions in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

BOUNDARY = "boundary"  # labels: 1 where a unit ends a segment (never the last unit), else 0
SECTION = "section"  # labels: a section type per unit; a boundary wherever the label changes
TASKS = (BOUNDARY, SECTION)
IGNORE = -100  # label at padded positions: ignored by the loss and the metrics
# How plain text becomes units: pysbd's sentences, or every non-blank line. A model is used with
# the kind it was trained on (a checkpoint's "units"); checkpoints without one: sentences.
UNITS = ("sentences", "lines")
DEFAULT_UNITS = "sentences"


def check_units(units: str, *, name: str = "units") -> str:
    """``units`` when it is one of UNITS (``name``: the setting's name in the message)."""
    if units not in UNITS:
        raise ValueError(f"{name}={units!r} is not one of {UNITS}")
    return units


def check_task(task: str, *, name: str = "task") -> str:
    """``task`` when it is one of TASKS (``name``: the setting's name in the message)."""
    if task not in TASKS:
        raise ValueError(f"{name}={task!r} is not one of {TASKS}")
    return task


def check_label_names(label_names: Sequence[str], num_classes: int) -> None:
    """One name per class."""
    if len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label_names {list(label_names)} for num_classes={num_classes}")


@dataclass
class Document:
    id: str
    units: list[str]
    labels: list[int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.units) != len(self.labels):
            raise ValueError(f"document {self.id!r}: {len(self.units)} units but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.units)

    @property
    def subset(self) -> str:
        """The group evaluation reports the document in (``meta["subset"]``: a mixture's
        corpus, Choi's folder), "" for none."""
        return str(self.meta.get("subset", ""))


def boundary_slots(labels: Tensor, task: str) -> Tensor:
    """Per-unit labels of one document (N,) -> its N - 1 boundary slots (N - 1,), 0/1 long."""
    if check_task(task) == BOUNDARY:
        return (labels[:-1] == 1).long()
    return (labels[:-1] != labels[1:]).long()


def boundary_labels(labels: Sequence[int], task: str) -> list[int]:
    """Per-unit 0/1: 1 where unit i ends a segment and i is not the last unit (the slots,
    plus a 0 for the last unit)."""
    slots = boundary_slots(torch.as_tensor(labels, dtype=torch.long), task).tolist()
    return slots + [0] * bool(len(labels))


def boundary_probs(probs: Tensor, task: str) -> Tensor:
    """Per-unit class probabilities (N, C) -> (N,) P(unit i ends a segment), 0 for the last
    unit. Boundary task: P(class 1). Section task: P(the label changes) =
    1 - sum_c p_i(c) p_{i+1}(c), units taken as independent."""
    if check_task(task) == BOUNDARY:
        p_end = probs[:-1, 1]
    else:
        p_end = 1 - (probs[:-1] * probs[1:]).sum(-1)
    return torch.cat((p_end, probs.new_zeros(min(1, len(probs)))))


def segments_to_document(doc_id: str, segments: list[list[str]], meta: dict | None = None) -> Document:
    """Boundary-task document from a list of segments (each a list of units)."""
    units, labels = [], []
    for seg in segments:
        units += seg
        labels += [0] * (len(seg) - 1) + [1]
    if labels:
        labels[-1] = 0  # the document end is not a boundary slot
    return Document(doc_id, units, labels, meta or {})


def group_segments(units: list[str], ends: list[int]) -> list[list[str]]:
    """Units grouped into segments; ``ends[i]`` is 1 where unit i ends a segment."""
    segs, cur = [], []
    for unit, end in zip(units, ends):
        cur.append(unit)
        if end:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return segs


def document_segments(doc: Document, task: str = BOUNDARY) -> list[list[str]]:
    """Inverse of ``segments_to_document``: the units grouped into segments."""
    return group_segments(doc.units, boundary_labels(doc.labels, task))


def normalize_unit(text: str) -> str:
    """A unit as the model sees it: runs of whitespace (line breaks included) as one space,
    none at the ends, so a unit is one line of the text form and the same unit given as
    text or as a line of JSON is the same string."""
    return " ".join(text.split())

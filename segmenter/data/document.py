"""A document is a sequence of units with one label per unit."""

from __future__ import annotations

from dataclasses import dataclass, field

BOUNDARY = "boundary"  # labels: 1 where a unit ends a segment (never the last unit), else 0
SECTION = "section"  # labels: a section type per unit; a boundary wherever the label changes
TASKS = (BOUNDARY, SECTION)


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


def boundary_labels(labels: list[int], task: str) -> list[int]:
    """Per-unit 0/1: 1 where unit i ends a segment and i is not the last unit."""
    if task == BOUNDARY:
        return [int(x == 1) for x in labels[:-1]] + [0] * bool(labels)
    if task == SECTION:
        return [int(a != b) for a, b in zip(labels, labels[1:])] + [0] * bool(labels)
    raise ValueError(f"task={task!r} is not one of {TASKS}")


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

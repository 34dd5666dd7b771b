"""Long documents as overlapping windows, and the stitching back.

One implementation serves training (long documents cut into windows) and inference
(windows predicted, then stitched so that every unit is predicted exactly once, from
the window where it sits most centrally: farthest from a window edge).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from segmenter.core.bounds import Number
from segmenter.core.document import Document

WINDOW = Number(lo=1)  # units of a window (inference's max_units)
OVERLAP = Number(lo=0)  # units neighbouring windows share; below the window size as well (check_window)


def check_window(size: int, overlap: int, *, size_name: str = "size") -> None:
    """Windows of ``size`` units sharing ``overlap``: size >= 1 and 0 <= overlap < size
    (``size_name``: the setting's name in the message, e.g. max_units)."""
    WINDOW.check(size_name, size)
    OVERLAP.check("overlap", overlap)
    if overlap >= size:
        raise ValueError(
            f"need {size_name} >= 1 and 0 <= overlap < {size_name}, got {size_name}={size}, overlap={overlap}"
        )


def window_spans(n: int, *, size: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open spans [start, end) covering 0..n, each at most ``size`` long, consecutive
    ones sharing ``overlap`` units (the last one is aligned to the end of the document)."""
    check_window(size, overlap)
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if n <= size:
        return [(0, n)]
    stride = size - overlap
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in starts]


def owned_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each window, the units it is responsible for: consecutive windows split their
    overlap in the middle, so each unit goes to the window where it is most central."""
    cuts = [spans[0][0]]
    for (_, end), (start, _) in zip(spans, spans[1:]):
        cuts.append((start + end) // 2)  # middle of the overlap [start, end)
    cuts.append(spans[-1][1])
    return list(zip(cuts, cuts[1:]))


def stitch(outputs: Sequence[Tensor], spans: Sequence[tuple[int, int]]) -> Tensor:
    """Per-window outputs (each (end - start, ...)) -> (n, ...), every unit taken once."""
    if len(outputs) != len(spans):
        raise ValueError(f"{len(outputs)} outputs for {len(spans)} windows")
    parts = []
    for out, (start, end), (own_start, own_end) in zip(outputs, spans, owned_spans(spans)):
        if out.shape[0] != end - start:
            raise ValueError(f"window [{start}, {end}) has {out.shape[0]} outputs")
        parts.append(out[own_start - start : own_end - start])
    return torch.cat(parts, dim=0)


def window_document(doc: Document, *, size: int, overlap: int) -> list[Document]:
    """A training document cut into overlapping windows (itself when it fits)."""
    spans = window_spans(len(doc), size=size, overlap=overlap)
    if len(spans) == 1:
        return [doc]
    return [window_of(doc, s, e) for s, e in spans]


def window_of(doc: Document, start: int, end: int) -> Document:
    """Units [start, end) of a document as a training window: id ``<id>@<start>``,
    ``meta["window"] = (start, end)``."""
    return Document(
        f"{doc.id}@{start}", doc.units[start:end], doc.labels[start:end], {**doc.meta, "window": (start, end)}
    )

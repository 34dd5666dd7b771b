"""Character offsets of units in the text they came from.

A unit is a piece of the text with its whitespace collapsed (``normalize_unit``) or, for
``units=lines``, a line without its ends' whitespace. Its span ``(start, end)`` points at
the text it came from: ``text[start:end]`` starts at the unit's first character and ends
after its last, and normalizes to the unit. A segment's span runs from its first unit's
start to its last unit's end, so it holds its units in order with the text between them;
whitespace between two segments belongs to neither.

Units given as a list (no text) take the spans they have in their text form: the units
joined by line breaks (``joined``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Span = tuple[int, int]


def line_spans(text: str) -> list[Span]:
    """The span of every non-blank line of ``text`` without its ends' whitespace: the units
    of ``units=lines`` (``str.splitlines``' line breaks, so CRLF, form feeds and U+2028 too)."""
    spans, pos = [], 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped:
            start = pos + len(line) - len(line.lstrip())
            spans.append((start, start + len(stripped)))
        pos += len(line)
    return spans


def align(text: str, units: Sequence[str]) -> list[Span]:
    """The spans of ``units`` (in order, whitespace collapsed) in ``text``: each unit's words,
    with any whitespace between them, found first after where the previous unit ended (the
    sentence splitter may drop text, e.g. pysbd a lone "!!", which then lies between two
    units). ValueError naming the unit when one is not there (a splitter that changed more
    than whitespace)."""
    spans, pos = [], 0
    for i, unit in enumerate(units):
        words = unit.split()
        if not words:
            raise ValueError(f"unit {i} is empty: it has no span in the text")
        found = re.compile(r"\s+".join(map(re.escape, words))).search(text, pos)
        if found is None:
            raise ValueError(
                f"unit {i} {unit[:60]!r} is not in the text after character {pos} (from {text[pos : pos + 60]!r}): "
                "the sentence splitter changed more than whitespace"
            )
        spans.append(found.span())
        pos = found.end()
    return spans


def joined(units: Sequence[str]) -> tuple[str, list[Span]]:
    """The text form of a list of units (joined by line breaks) and their spans in it."""
    spans, pos = [], 0
    for unit in units:
        spans.append((pos, pos + len(unit)))
        pos += len(unit) + 1
    return "\n".join(units), spans


def segment_spans(unit_spans: Sequence[Span], ends: Sequence[int]) -> list[Span]:
    """One span per segment: from its first unit's start to its last unit's end; ``ends[i]``
    is 1 where unit i ends a segment (as ``group_segments``)."""
    out, first = [], 0
    for i, end in enumerate(ends):
        if end or i == len(ends) - 1:
            out.append((unit_spans[first][0], unit_spans[i][1]))
            first = i + 1
    return out

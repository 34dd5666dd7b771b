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


_SPACE = re.compile(r"\s*")


def _match_at(text: str, pos: int, words: Sequence[str]) -> int | None:
    r"""The end of ``words``, whitespace between them, starting at ``pos`` in ``text``; None
    if they are not there (what the pattern ``w1\s+w2...`` matched at ``pos`` gives)."""
    for k, word in enumerate(words):
        if k:
            after = _SPACE.match(text, pos).end()
            if after == pos:  # words need whitespace between them
                return None
            pos = after
        if not text.startswith(word, pos):
            return None
        pos += len(word)
    return pos


def align(text: str, units: Sequence[str]) -> list[Span]:
    """The spans of ``units`` (in order, whitespace collapsed) in ``text``: each unit's words,
    with any whitespace between them, found first after where the previous unit ended (the
    sentence splitter may drop text, e.g. pysbd a lone "!!", which then lies between two
    units). ValueError naming the unit when one is not there (a splitter that changed more
    than whitespace).

    A unit nearly always starts at the next non-whitespace character: that is checked with
    string comparisons; only a unit that does not (text dropped before it, or a unit that
    starts inside a word) is searched for with a pattern, which costs a compilation each."""
    spans, pos = [], 0
    for i, unit in enumerate(units):
        words = unit.split()
        if not words:
            raise ValueError(f"unit {i} is empty: it has no span in the text")
        start = _SPACE.match(text, pos).end()
        end = _match_at(text, start, words)
        if end is None:
            found = re.compile(r"\s+".join(map(re.escape, words))).search(text, pos)
            if found is None:
                raise ValueError(
                    f"unit {i} {unit[:60]!r} is not in the text after character {pos} (from {text[pos : pos + 60]!r}): "
                    "the sentence splitter changed more than whitespace"
                )
            start, end = found.span()
        spans.append((start, end))
        pos = end
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

"""Finding units back in their text: the fast path of ``align`` gives exactly what a pattern
search per unit (the slow reference) gives, including where the splitter dropped text or cut
inside a word."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmenter.core.spans import align


def reference(text: str, units: list[str]) -> list[tuple[int, int]]:
    """One pattern search per unit, each after the previous unit's end."""
    spans, pos = [], 0
    for unit in units:
        found = re.compile(r"\s+".join(map(re.escape, unit.split()))).search(text, pos)
        spans.append(found.span())
        pos = found.end()
    return spans


WORD = st.text(alphabet="ab.!é\u00e9", min_size=1, max_size=4)
SPACE = st.sampled_from([" ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u2028", "\f"])


@st.composite
def text_and_units(draw):
    """A text of words and odd whitespace, and units cut from it: runs of its words, with
    some words dropped between units and some units cut inside a word."""
    words = draw(st.lists(WORD, min_size=1, max_size=30))
    gaps = [draw(SPACE) for _ in words]
    text = draw(SPACE) + "".join(w + g for w, g in zip(words, gaps))
    units, i = [], 0
    while i < len(words):
        n = draw(st.integers(1, 4))
        run = words[i : i + n]
        if draw(st.booleans()) and len(run[0]) > 1:  # starts inside its first word
            run = [run[0][1:], *run[1:]]
        units.append(" ".join(run))
        i += n + draw(st.sampled_from([0, 0, 0, 1]))  # now and then a word is dropped
    return text, units


@given(text_and_units())
def test_fast_alignment_equals_a_pattern_search_per_unit(case):
    text, units = case
    assert align(text, units) == reference(text, units)


def test_a_unit_that_is_not_there_is_named():
    with pytest.raises(ValueError, match=r"unit 1 'zebra' is not in the text"):
        align("one two three", ["one", "zebra"])

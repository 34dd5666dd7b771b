"""segmenter.core.bounds: a setting's bound, what it allows, how it says what it expects,
and the pydantic constraints the server takes from it."""

from __future__ import annotations

import math
import re
from typing import Annotated

import pytest

from segmenter.core.bounds import Number


@pytest.mark.parametrize(
    "bound, allowed, refused",
    [
        (Number(lo=1), [1, 2, 10**9], [0, -1, 1.5, 2.0, "2", True, None, math.inf]),
        (Number(lo=0, lo_open=True, hi=1, whole=False), [1e-9, 0.5, 1, 1.0], [0, 0.0, 1.0001, -0.1, math.nan, "abc"]),
        (Number(lo=0, hi=0.5, hi_open=True, whole=False), [0, 0.25, 0.4999], [0.5, 0.51, -1e-9]),
        (Number(lo=1, none=True), [None, 3], [0]),
        (Number(lo=0, flag=True), [True, False, 0, 5], [-1, None]),
        (Number(lo=0, whole=False, words=("auto",)), ["auto", 0.5], ["manual"]),
        (Number(lo=1, many=True), [2, [1, 2], (3,)], [[1, 0], [1, "x"]]),
    ],
)
def test_a_bound_allows_what_it_says_and_nothing_else(bound, allowed, refused):
    for v in allowed:
        assert bound.allows(v), v
        assert bound.check("k", v) is v
    for v in refused:
        assert not bound.allows(v), v
        with pytest.raises(ValueError, match=rf"^k(\[\d\])?=.*: expected {re.escape(bound.describe())}$"):
            bound.check("k", v)


@pytest.mark.parametrize(
    "bound, words",
    [
        (Number(lo=1), "a whole number >= 1"),
        (Number(lo=0, hi=1, whole=False), "a number from 0 to 1"),
        (Number(lo=0, lo_open=True, hi=1, whole=False, none=True), "a number in (0, 1] (or null)"),
        (Number(lo=0, hi=0.5, hi_open=True, whole=False), "a number in [0, 0.5)"),
        (Number(lo=1, hi=1 << 22), "a whole number from 1 to 4,194,304"),
        (Number(lo=0, lo_open=True, whole=False), "a number > 0"),
        (Number(lo=0, flag=True), "a whole number >= 0 (or true/false)"),
    ],
)
def test_a_bound_says_what_it_expects(bound, words):
    assert bound.describe() == words


def test_constraints_are_pydantics_and_agree_with_the_bound():
    pydantic = pytest.importorskip("pydantic")
    bound = Number(lo=0, lo_open=True, hi=1, whole=False, none=True)
    assert bound.constraints() == {"gt": 0, "le": 1}
    assert Number(lo=1).constraints() == {"ge": 1}
    assert Number(lo=0, hi=0.5, hi_open=True, whole=False).constraints() == {"ge": 0, "lt": 0.5}
    annotated = pydantic.TypeAdapter(Annotated[float, pydantic.Field(**bound.constraints())])
    for v in (-1.0, 0.0, 1e-9, 0.5, 1.0, 1.5):
        try:
            annotated.validate_python(v)
            accepted = True
        except pydantic.ValidationError:
            accepted = False
        assert accepted == bound.allows(v), v

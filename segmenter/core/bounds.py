"""The bounds of number settings, each declared once beside the code that takes the setting.

A bound is a ``Number``: whole or not, its range (ends open or closed), and whether null,
true/false, a few words or a list of such values are allowed too. The code that takes the
setting calls ``BOUND.check(name, value)`` (a ValueError naming the setting, the value and
what is expected); every other way in reuses the same object instead of restating it:

- the command line: ``segmenter.cli.config.RULES`` maps config keys to these objects, so a
  bad value is one line before the script starts;
- the HTTP server: its request models take ``BOUND.constraints()`` (pydantic's ``ge``/``gt``/
  ``le``/``lt``), so a request is refused with the same verdict;
- the checkpoint loader: a registered part's ``limits`` are the bounds of its arguments.

Plain Python only (no torch, Hydra or pydantic): every layer can import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Number:
    """A number (``whole``: an integer) from ``lo`` to ``hi`` (``lo_open``/``hi_open``: that
    end excluded); ``none``: null allowed (the caller's default); ``words``: these strings
    allowed too; ``flag``: true/false allowed too; ``many``: a list of such values allowed too."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    whole: bool = True
    none: bool = False
    words: tuple[str, ...] = ()
    flag: bool = False
    many: bool = False

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is within the bound."""
        if value is None:
            return self.none
        if isinstance(value, bool):
            return self.flag
        if isinstance(value, str):
            return value in self.words
        if self.many and isinstance(value, Sequence):
            return all(self.allows(v) for v in value)
        if not isinstance(value, numbers.Integral if self.whole else numbers.Real):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def check(self, name: str, value: Any) -> Any:
        """``value`` itself when allowed, else ValueError: ``<name>=<value>: expected <what>``."""
        if self.many and isinstance(value, Sequence) and not isinstance(value, str):
            for i, v in enumerate(value):
                self.check(f"{name}[{i}]", v)
            return value
        if not self.allows(value):
            raise ValueError(f"{name}={value!r}: expected {self.describe()}")
        return value

    def describe(self) -> str:
        """What the bound allows, in words: ``a whole number >= 1 (or null)``."""
        kind = "a whole number" if self.whole else "a number"
        lo, hi = self.lo > -math.inf, self.hi < math.inf
        a, b = _number(self.lo), _number(self.hi)
        if lo and hi and not (self.lo_open or self.hi_open):
            kind += f" from {a} to {b}"
        elif lo and hi:
            kind += f" in {'(' if self.lo_open else '['}{a}, {b}{')' if self.hi_open else ']'}"
        elif lo:
            kind += f" {'>' if self.lo_open else '>='} {a}"
        elif hi:
            kind += f" {'<' if self.hi_open else '<='} {b}"
        extras = [
            *(repr(w) for w in self.words),
            *(["true/false"] if self.flag else []),
            *(["null"] if self.none else []),
        ]
        return kind + (f" (or {', '.join(extras)})" if extras else "")

    def constraints(self) -> dict[str, float]:
        """The range as pydantic's ``Field`` (and annotated-types') keyword arguments:
        ``ge``/``gt`` and ``le``/``lt``. Whole-ness and null are the field's type."""
        out: dict[str, float] = {}
        if self.lo > -math.inf:
            out["gt" if self.lo_open else "ge"] = self.lo
        if self.hi < math.inf:
            out["lt" if self.hi_open else "le"] = self.hi
        return out


def _number(x: float) -> str:
    """1,048,576 for a whole number, 0.5 otherwise."""
    return f"{int(x):,}" if math.isfinite(x) and float(x).is_integer() else f"{x:g}"

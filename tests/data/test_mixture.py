"""MixedCorpus: splits are unions, documents keep their corpus apart, tasks must agree."""

from __future__ import annotations

import pytest

from segmenter.core.document import Document
from segmenter.data.mixture import MixedCorpus


class Fake:
    def __init__(self, prefix: str, task: str = "boundary", label_names=("inside", "boundary"), subset=None) -> None:
        self.prefix, self.task, self.label_names, self.subset, self.prepared = prefix, task, label_names, subset, False

    def prepare(self) -> None:
        self.prepared = True

    def load(self):
        meta = {"subset": self.subset} if self.subset else {}
        return {
            s: [Document(f"{self.prefix}{s}{i}", ["a", "b"], [1, 0], dict(meta)) for i in range(n)]
            for s, n in (("train", 2), ("val", 1), ("test", 1))
        }


def test_union_with_names_subsets_and_repeat():
    a, b = Fake("a", subset="3-5"), Fake("b")
    mixed = MixedCorpus(corpora={"choi": a, "wiki": b}, repeat={"wiki": 3})
    mixed.prepare()
    assert a.prepared and b.prepared
    splits = mixed.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2 + 6, 2, 2]
    assert {d.meta["subset"] for d in splits["test"]} == {"choi/3-5", "wiki"}
    assert splits["val"][0].id == "choi:aval0" and a.load()["val"][0].id == "aval0"  # the source is untouched


def test_mixing_tasks_or_bad_repeat_is_refused():
    with pytest.raises(ValueError, match="different tasks"):
        MixedCorpus(corpora={"x": Fake("x"), "y": Fake("y", task="section", label_names=("verse", "chorus"))})
    with pytest.raises(ValueError, match="repeat"):
        MixedCorpus(corpora={"x": Fake("x")}, repeat={"z": 2})

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


class Sections(Fake):
    """One training document of four segments s0..s3 (two units each)."""

    def load(self):
        units = [f"s{i}u{j}" for i in range(4) for j in range(2)]
        labels = [0, 1] * 4
        labels[-1] = 0
        return {"train": [Document("d", units, labels)], "val": [], "test": []}


def test_reorder_shuffles_repeated_copies_keeping_the_lead_and_every_unit():
    mixed = MixedCorpus(corpora={"wiki": Sections("w")}, repeat={"wiki": 6}, reorder=["wiki"], seed=1)
    train = mixed.load()["train"]
    original, copies = train[0], train[1:]
    assert len(copies) == 5 and original.units[:2] == ["s0u0", "s0u1"]
    assert [d.id for d in copies] == [f"wiki:d~{k}" for k in range(1, 6)]
    orders = set()
    for d in copies:
        assert d.units[:2] == ["s0u0", "s0u1"]  # the lead stays first
        assert sorted(d.units) == sorted(original.units) and d.labels == original.labels  # nothing lost, same cuts
        assert all(d.units[i][:2] == d.units[i + 1][:2] for i in range(0, 8, 2))  # sections stay whole
        orders.add(tuple(d.units[2::2]))
    assert len(orders) > 1  # the copies differ
    assert [d.units for d in mixed.load()["train"]] == [d.units for d in train]  # seeded: the same every load
    plain = MixedCorpus(corpora={"wiki": Sections("w")}, repeat={"wiki": 6}).load()["train"]
    assert all(d.units == original.units for d in plain)


def test_reorder_needs_a_known_boundary_corpus():
    with pytest.raises(ValueError, match=r"reorder=\['z'\]"):
        MixedCorpus(corpora={"x": Fake("x")}, reorder=["z"])
    with pytest.raises(ValueError, match="boundary"):
        MixedCorpus(corpora={"x": Fake("x", task="section", label_names=("verse", "chorus"))}, reorder=["x"])


def test_topic_mix_reorders_wiki_from_the_command_line(tmp_path, shared_data):
    """conf/data/topic_mix.yaml names reorder (no '+'): the shipped recipe's Wikipedia copies
    reordered, the first copy and the evaluation splits as without it."""
    import hydra

    from tests.helpers import compose_train

    def load(*overrides):
        cfg = compose_train(
            tmp_path,
            [
                "experiment=pretrained_topic",
                f"paths.shared_data_dir={shared_data}",
                "~data.corpus.corpora.choi",
                "~data.corpus.corpora.builtin",
                *overrides,
            ],
        )
        return hydra.utils.instantiate(cfg.data.corpus).load()

    plain, mixed = load(), load("data.corpus.reorder=[wiki]")
    for split in ("val", "test"):
        assert [(d.id, d.units) for d in mixed[split]] == [(d.id, d.units) for d in plain[split]]
    n = len(plain["train"]) // 3  # wiki counted 3 times
    assert [d.units for d in mixed["train"][:n]] == [d.units for d in plain["train"][:n]]
    copies = mixed["train"][n:]
    assert [d.id for d in copies] == [f"{d.id}~{k}" for k in (1, 2) for d in plain["train"][:n]]
    for copy, source in zip(copies, plain["train"][n:]):
        assert sorted(copy.units) == sorted(source.units) and sum(copy.labels) == sum(source.labels)
    assert sum(c.units != s.units for c, s in zip(copies, plain["train"][n:])) > n  # most copies reordered

"""Corpora stored as memory-mapped Arrow shards (segmenter.data.store) behind the DataModule:
the same documents, splits, windows, statistics and split file as reading the corpus whole;
built once, rebuilt when the corpus changes, never left half-built."""

from __future__ import annotations

import json
import logging
import os
import types
from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from segmenter.core.document import Document, boundary_labels
from segmenter.core.windows import window_document
from segmenter.data import store
from segmenter.data.corpora import JsonlCorpus, SeparatorCorpus
from segmenter.data.datamodule import SegmentationDataModule
from segmenter.data.formats import ReaderError
from segmenter.data.splits import fingerprint, split_manifest
from segmenter.evaluation.evaluate import check_split


def wiki_folder(root: Path, n: int = 30) -> Path:
    """``n`` Wiki-727K-format articles of 3 to 12 sections in a two-level folder tree."""
    for i in range(n):
        lines = []
        for s in range(3 + i % 10):
            lines.append(f"========,{1 + s % 2},Section {s}.")
            lines += [f"Sentence {k} of section {s} of article {i}." for k in range(1 + (i + s) % 4)]
        f = root / f"{i % 3:02d}" / f"{i:05d}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def datamodule(corpus, cache: Path | None, **kw) -> SegmentationDataModule:
    dm = SegmentationDataModule(corpus=corpus, cache_dir=cache, max_units=8, overlap=2, **kw)
    dm.setup()
    return dm


def same(a: Document, b: Document) -> bool:
    """The same document (meta compared as JSON: a window's (start, end) may be a list)."""
    return (a.id, a.units, a.labels, json.dumps(a.meta)) == (b.id, b.units, b.labels, json.dumps(b.meta))


def test_the_store_serves_the_corpus_documents_splits_windows_and_statistics(tmp_path):
    corpus = SeparatorCorpus(path=str(wiki_folder(tmp_path / "wiki")), fractions=(0.6, 0.2, 0.2), seed=3)
    dm = datamodule(corpus, tmp_path / "cache", split_file=str(tmp_path / "run" / "splits.json"))
    whole = corpus.load()
    for split, docs in whole.items():
        assert len(dm.splits[split]) == len(docs)
        assert all(same(a, b) for a, b in zip(dm.splits[split], docs)), split
    windows = [w for d in whole["train"] for w in window_document(d, size=8, overlap=2)]
    assert len(dm.train_windows) == len(windows) > len(whole["train"])  # long articles were cut
    assert all(same(a, b) for a, b in zip(dm.train_windows, windows))
    counts = Counter(label for d in whole["train"] for label in d.labels)
    assert dm.class_counts() == [counts[0], counts[1]]
    assert list(dm.all_units()) == [u for docs in whole.values() for d in docs for u in d.units]
    for rows in dm.store.rows.values():  # each split on its own stretch of the shards
        assert sorted(rows.tolist()) == list(range(min(rows), max(rows) + 1))
    stats = dm.store.stats["val"]
    assert stats["units"] == sum(len(d) for d in whole["val"])
    assert stats["segments"] == sum(sum(boundary_labels(d.labels, "boundary")) + 1 for d in whole["val"])
    # The run's split file: the ids and fingerprints an evaluation checks the test documents against.
    written = json.loads((tmp_path / "run" / "splits.json").read_text())
    expected = split_manifest(whole, corpus="SeparatorCorpus")
    assert written["splits"] == expected["splits"] and written["fingerprints"] == expected["fingerprints"]
    check_split(whole["test"], "test", tmp_path / "run" / "splits.json", corpus="wiki")


def test_a_split_file_of_an_earlier_version_is_still_checked(tmp_path):
    docs = [Document(f"d{i}", ["a", "b"], [1, 0]) for i in range(3)]
    old = {"splits": {"test": ["d0", "d1", "d2"]}, "fingerprints": {"test": fingerprint(docs, version=1)}}
    (tmp_path / "splits.json").write_text(json.dumps(old))
    check_split(docs, "test", tmp_path / "splits.json", corpus="x")
    with pytest.raises(ValueError, match="differ"):
        check_split(docs[:2], "test", tmp_path / "splits.json", corpus="x")


def test_preparation_streams_documents_and_later_runs_read_none(tmp_path, monkeypatch):
    corpus = SeparatorCorpus(path=str(wiki_folder(tmp_path / "wiki")))
    assert isinstance(corpus.read(corpus.path), types.GeneratorType)  # one document at a time
    monkeypatch.setattr(SeparatorCorpus, "load", lambda self: pytest.fail("the corpus was read whole"))
    first = datamodule(corpus, tmp_path / "cache")
    monkeypatch.setattr(SeparatorCorpus, "stream", lambda self: pytest.fail("the stored corpus was read again"))
    again = datamodule(SeparatorCorpus(path=str(tmp_path / "wiki")), tmp_path / "cache")
    assert again.store.dir == first.store.dir and [d.id for d in again.splits["test"]] == [
        d.id for d in first.splits["test"]
    ]


def test_a_changed_corpus_or_setting_gets_a_new_store(tmp_path):
    folder = wiki_folder(tmp_path / "wiki")
    first = datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "cache").store.dir
    assert datamodule(SeparatorCorpus(path=str(folder), seed=1), tmp_path / "cache").store.dir != first
    article = folder / "00" / "00000"
    article.write_text(article.read_text() + "One more sentence.\n")
    os.utime(article, ns=(1, 1))
    changed = datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "cache")
    assert changed.store.dir != first
    assert any(d.units[-1] == "One more sentence." for s in changed.splits.values() for d in s)


class Interrupted(Exception):
    pass


def interrupted_stream(monkeypatch, *, after: int):
    """SeparatorCorpus.stream that raises after ``after`` documents of its second pass (the
    first lists the ids for the split), as a Ctrl-C or a bad document found late would."""
    stream = SeparatorCorpus.stream
    passes = []

    def dies_midway(self):
        passes.append(1)
        for i, record in enumerate(stream(self)):
            if len(passes) == 2 and i == after:
                raise Interrupted
            yield record

    monkeypatch.setattr(SeparatorCorpus, "stream", dies_midway)
    return stream


def store_contents(dm: SegmentationDataModule) -> dict:
    """Everything a run reads of a store: its documents by split and row, units per row,
    statistics and the split file."""
    return {
        "splits": {s: [(d.id, d.units, d.labels, json.dumps(d.meta)) for d in docs] for s, docs in dm.splits.items()},
        "rows": {s: r.tolist() for s, r in dm.store.rows.items()},
        "lengths": dm.store.lengths.tolist(),
        "stats": dm.store.stats,
        "manifest": json.loads((dm.store.dir / "splits.json").read_text()),
    }


@pytest.mark.parametrize("resumed_part", [4, 7])  # parts of another size after the resume: a later version's
def test_an_interrupted_preparation_resumes_after_its_whole_parts(tmp_path, monkeypatch, caplog, resumed_part):
    from datasets.arrow_writer import ArrowWriter

    monkeypatch.setattr(store, "PART_DOCS", 4)
    corpus = SeparatorCorpus(path=str(wiki_folder(tmp_path / "wiki")), fractions=(0.6, 0.2, 0.2), seed=3)
    whole = store_contents(datamodule(corpus, tmp_path / "uninterrupted"))

    stream = interrupted_stream(monkeypatch, after=10)  # parts 0 and 1 whole, part 2 half written
    with pytest.raises(Interrupted):
        datamodule(corpus, tmp_path / "cache")
    assert not any(p.is_dir() and not p.name.startswith(".") for p in (tmp_path / "cache" / "corpora").iterdir())
    monkeypatch.setattr(SeparatorCorpus, "stream", stream)
    written, write = [], ArrowWriter.write
    monkeypatch.setattr(
        ArrowWriter, "write", lambda self, row, *a, **k: written.append(row["id"]) or write(self, row, *a, **k)
    )
    monkeypatch.setattr(store, "PART_DOCS", resumed_part)
    with caplog.at_level(logging.INFO, logger="segmenter.data.store"):
        resumed = datamodule(corpus, tmp_path / "cache")
    assert "8 documents (2 parts) were written whole before" in caplog.text
    assert len(written) == 30 - 8  # the whole parts were not written again
    assert store_contents(resumed) == whole  # the same documents, order, split and split file
    assert not [p.name for p in resumed.store.dir.iterdir() if p.name.startswith((".", "part-", "plan"))]


def test_a_changed_file_invalidates_an_interrupted_preparation(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(store, "PART_DOCS", 4)
    folder = wiki_folder(tmp_path / "wiki")
    stream = interrupted_stream(monkeypatch, after=10)
    with pytest.raises(Interrupted):
        datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "cache")
    monkeypatch.setattr(SeparatorCorpus, "stream", stream)
    article = folder / "00" / "00000"
    article.write_text(article.read_text() + "One more sentence.\n")
    os.utime(article, ns=(1, 1))
    with caplog.at_level(logging.INFO, logger="segmenter.data.store"):
        changed = datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "cache")
    assert "resuming" not in caplog.text
    assert any(d.units[-1] == "One more sentence." for s in changed.splits.values() for d in s)
    assert store_contents(changed) == store_contents(datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "fresh"))


def test_a_bad_document_names_its_file_and_line(tmp_path):
    folder = wiki_folder(tmp_path / "wiki", n=5)
    (folder / "01" / "00001").write_text("A sentence.\n========broken\n", encoding="utf-8")
    with pytest.raises(ReaderError, match=r"00001:2: malformed separator line"):
        datamodule(SeparatorCorpus(path=str(folder)), tmp_path / "cache")
    rows = [{"id": "a", "lines": ["x", "y"], "labels": ["verse", "chorus"]}, {"id": "b", "lines": ["x"]}]
    jsonl = tmp_path / "songs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ReaderError, match=r"songs.jsonl:2: expected an object"):
        datamodule(JsonlCorpus(path=str(jsonl), label_names=["verse", "chorus"]), tmp_path / "cache")


class InMemory:
    """A corpus with load() alone (no stream, no cache_key): stored per run, in a temporary folder."""

    task, label_names = "boundary", ("inside", "boundary")

    def load(self):
        doc = lambda i: Document(f"m{i}", [f"u{i}", "v", "w"], [1, 0, 0], {"subset": "ab"[i % 2]})  # noqa: E731
        return {"train": [doc(0), doc(1)], "val": [doc(2), doc(3)], "test": [doc(4)]}


def test_a_corpus_with_load_alone_is_served_from_a_temporary_store(tmp_path):
    dm = datamodule(InMemory(), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert [d.id for d in dm.splits["val"]] == ["m2", "m3"] and dm.subsets() == {"val": ["a", "b"]}
    assert dm.class_counts() == [4, 2]


def test_loader_workers_read_the_store_themselves(tmp_path):
    dm = datamodule(SeparatorCorpus(path=str(wiki_folder(tmp_path / "wiki"))), tmp_path / "cache")
    loader = DataLoader(dm.train_windows, batch_size=4, num_workers=2, collate_fn=list)
    assert [d.id for batch in loader for d in batch] == [d.id for d in dm.train_windows]

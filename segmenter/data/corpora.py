"""Corpora: where documents come from and how they are split (``data.corpus`` in
conf/data/*.yaml). A corpus is any object with ``task``, ``label_names`` and
``load() -> {"train": [...], "val": [...], "test": [...]}`` of Documents (``Corpus``); the
DataModule asks nothing else of it, and may call an optional ``prepare()`` once before
(where a corpus builds and caches its data: the built-in one).

The DataModule keeps a corpus on disk as memory-mapped Arrow shards (segmenter/data/store.py),
so a corpus of any size trains in flat memory. Two optional methods make that work at scale:
``stream()`` yields (split, document) one at a time (split None: placed by
``split_rows(ids)`` once every id is known), so preparing never holds the corpus; and
``cache_key()`` says what the corpus is (settings and source files), so its store is built
once and rebuilt when it changes. A corpus with ``load()`` alone is read whole once per run.

- ``SeparatorCorpus`` (data=wiki): separator-format files, split by document;
- ``JsonlCorpus`` (data=jsonl): JSONL documents with section or boundary labels;
- ``ChoiCorpus`` (data=choi): Choi (2000) with a test split no training text overlaps;
- the built-in corpus (data=builtin) is segmenter/data/builtin.py.

File formats are read by segmenter/data/formats.py.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from segmenter.core.document import (
    BOUNDARY,
    SECTION,
    Document,
    check_task,
    check_units,
    document_segments,
    segments_to_document,
)
from segmenter.data.formats import (
    check_on_error,
    iter_files,
    iter_jsonl,
    iter_separator_files,
    list_files,
    read_separator_files,
)
from segmenter.data.splits import SPLITS, check_fractions, random_split, split_rows
from segmenter.data.store import file_signature
from segmenter.data.synthetic import draw_segments

log = logging.getLogger(__name__)


class Corpus(Protocol):
    """What the DataModule needs of a corpus."""

    task: str  # "boundary" or "section" (segmenter.core.document)
    label_names: tuple[str, ...]  # one name per class
    # Optional: what its units are, "sentences" (when absent) or "lines"; stored in checkpoints,
    # where it is the model's default for splitting plain text (segmenter.core.document.UNITS).
    units: str

    def load(self) -> dict[str, list[Document]]: ...


def settings_key(obj: object) -> dict:
    """An object's settings (its attributes) as a JSON-able dict, for a cache key."""
    return json.loads(json.dumps(vars(obj), sort_keys=True, default=str))


class FileCorpus:
    """Documents read from files: ``path`` split by a seeded document-level split into
    ``fractions``, or ``files`` = {"train": ..., "val": ..., "test": ...} read as given.
    A subclass sets ``task`` and ``label_names`` and says how to read (``read``): the
    recipe for a corpus in a format of your own."""

    task: str
    label_names: tuple[str, ...]

    def __init__(
        self,
        *,
        path: str | Sequence[str] | None = None,
        files: dict[str, str | Sequence[str]] | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> None:
        if (path is None) == (files is None):
            raise ValueError(f"give exactly one of path={path!r} or files={files!r}")
        if files is not None and set(files) != set(SPLITS):
            raise ValueError(f"files={dict(files)} needs keys train, val, test")
        self.path, self.files = path, files
        self.fractions, self.seed = check_fractions(fractions), seed

    def read(self, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterable[Document]:
        """The documents of ``paths`` (``path``, or one split's ``files`` entry): a list, or
        better a generator (one document at a time: a corpus of any size is never held)."""
        raise NotImplementedError

    def load(self) -> dict[str, list[Document]]:
        if self.files is not None:
            return {split: list(self.read(p)) for split, p in self.files.items()}
        return random_split(list(self.read(self.path)), fractions=self.fractions, seed=self.seed)

    def stream(self) -> Iterator[tuple[str | None, Document]]:
        """(split, document), one at a time; split None under ``path`` (``split_rows`` places them)."""
        if self.files is not None:
            for split, p in self.files.items():
                for doc in self.read(p):
                    yield split, doc
        else:
            for doc in self.read(self.path):
                yield None, doc

    def split_rows(self, ids: Sequence[str]) -> dict[str, list[int]]:
        """The seeded split of ``load()``, from the ids alone."""
        return split_rows(ids, fractions=self.fractions, seed=self.seed)

    def cache_key(self) -> dict:
        """Settings and source files (path, size, modification time of each)."""
        paths = self.files.values() if self.files is not None else [self.path]
        pattern = getattr(self, "pattern", "*")
        files = (f for p in paths for f in iter_files(p, pattern=pattern))  # one at a time
        return {"settings": settings_key(self), "files": file_signature(files)}


class SeparatorCorpus(FileCorpus):
    """Separator-format files (Wiki-727K, Choi, or your own), split by document.

    ``path``: a folder (read recursively), a file, or a list; split with a seeded
    document-level split by ``fractions``. Or ``files`` = {"train": ..., "val": ..., "test": ...}.
    """

    task = BOUNDARY
    label_names = ("inside", "boundary")

    def __init__(
        self,
        *,
        path: str | Sequence[str] | None = None,
        files: dict[str, str | Sequence[str]] | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        max_level: int | None = None,
        join_sections: int = 1,
        pattern: str = "*",
        on_error: str = "raise",
        subset_by_folder: bool = False,
    ) -> None:
        super().__init__(path=path, files=files, fractions=fractions, seed=seed)
        check_on_error(on_error)
        if join_sections < 1:
            raise ValueError(f"join_sections={join_sections} must be >= 1")
        self.subset_by_folder = subset_by_folder
        self.max_level, self.join_sections = max_level, join_sections
        self.pattern, self.on_error = pattern, on_error

    def read(self, paths) -> Iterator[Document]:
        single = paths if isinstance(paths, (str, os.PathLike)) else None
        root = Path(single) if single is not None and Path(single).is_dir() else None
        return iter_separator_files(
            paths,
            root=root,
            max_level=self.max_level,
            join_sections=self.join_sections,
            pattern=self.pattern,
            on_error=self.on_error,
            subset_by_folder=self.subset_by_folder,
        )


class JsonlCorpus(FileCorpus):
    """JSONL documents; ``label_mode="section"`` trains a multi-class head over ``label_names``,
    ``label_mode="boundary"`` a boundary head. ``path`` split by seed, or ``files`` per split.
    ``units``: what a document's "lines" are (lines of a song; ``sentences`` of prose), the
    trained model's default for plain text."""

    def __init__(
        self,
        *,
        label_names: Sequence[str],
        label_mode: str = SECTION,
        path: str | None = None,
        files: dict[str, str] | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        on_error: str = "raise",
        units: str = "lines",
    ) -> None:
        super().__init__(path=path, files=files, fractions=fractions, seed=seed)
        check_task(label_mode, name="label_mode")
        self.units = check_units(units)  # a document's "lines" are its units; sentences if they are
        if label_mode == BOUNDARY and len(label_names) != 2:
            raise ValueError(f"label_mode=boundary needs 2 label_names, got {list(label_names)}")
        if len(label_names) < 2:
            raise ValueError(f"label_names={list(label_names)} needs at least 2 classes")
        check_on_error(on_error)
        self.task = label_mode
        self.label_names = tuple(label_names)
        self.on_error = on_error

    def read(self, path) -> Iterator[Document]:
        return iter_jsonl(path, label_names=self.label_names, label_mode=self.task, on_error=self.on_error)


class ChoiCorpus:
    """Choi (2000) documents with a split that keeps test text out of training.

    Choi's segments are the first sentences of a pool of Brown-corpus texts, and every text
    recurs in many documents, so a random document split lets a model memorise test
    segments. ``split="source_disjoint"`` (default): the test split is the original
    documents under ``test_folders``; every source text that occurs in them is held out;
    train and val documents are drawn Choi-style (``segments_per_doc`` segments, each a
    random run of ``segment_length`` consecutive sentences of a different text) from the
    remaining texts, split between train and val by ``val_fraction``. ``split="random"``:
    a seeded document-level split of all documents by ``fractions`` (leaks; for comparison).
    """

    task = BOUNDARY
    label_names = ("inside", "boundary")

    def __init__(
        self,
        *,
        root: str,
        split: str = "source_disjoint",
        test_folders: Sequence[str] = ("1", "2", "3"),
        num_docs: dict[str, int] | None = None,
        segments_per_doc: int = 10,
        segment_length: Sequence[int] = (3, 11),
        val_fraction: float = 0.15,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> None:
        if split not in ("source_disjoint", "random"):
            raise ValueError(f"split={split!r} is not one of ('source_disjoint', 'random')")
        lo, hi = segment_length
        if not 1 <= lo <= hi:
            raise ValueError(f"segment_length={list(segment_length)} must satisfy 1 <= min <= max")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
        self.root, self.split, self.test_folders = Path(root), split, [str(f) for f in test_folders]
        self.num_docs = dict(num_docs or {"train": 2000, "val": 100})
        self.segments_per_doc, self.segment_length = segments_per_doc, (int(lo), int(hi))
        self.val_fraction, self.fractions, self.seed = val_fraction, check_fractions(fractions), seed

    def documents(self) -> list[Document]:
        return read_separator_files(self.root, root=self.root, pattern="*.ref", subset_by_folder=True)

    def cache_key(self) -> dict:
        """Settings and the original documents (path, size, modification time of each)."""
        return {"settings": settings_key(self), "files": file_signature(list_files(self.root, pattern="*.ref"))}

    def load(self) -> dict[str, list[Document]]:
        docs = self.documents()
        if self.split == "random":
            return random_split(docs, fractions=self.fractions, seed=self.seed)
        is_test = {d.id: d.id.split("/")[0] in self.test_folders for d in docs}
        test = [d for d in docs if is_test[d.id]]
        if not test:
            raise ValueError(f"no Choi documents under test_folders={self.test_folders} in {self.root}")
        # A source text is known by its first sentence; Choi's segments are its prefixes,
        # so the longest segment seen is the most of the text we have.
        texts: dict[str, list[str]] = {}
        held_out: set[str] = set()
        for d in docs:
            for seg in document_segments(d):
                if len(seg) > len(texts.get(seg[0], ())):
                    texts[seg[0]] = seg
                if is_test[d.id]:
                    held_out.add(seg[0])
        free = sorted(k for k in texts if k not in held_out)
        rng = random.Random(self.seed)
        rng.shuffle(free)
        n_val = max(1, round(len(free) * self.val_fraction))
        pools = {"val": sorted(free[:n_val]), "train": sorted(free[n_val:])}
        if min(len(p) for p in pools.values()) < self.segments_per_doc:
            raise ValueError(f"too few held-in source texts { ({k: len(v) for k, v in pools.items()}) }")
        key = {k: f"t{i:03d}" for i, k in enumerate(sorted(texts))}  # short stable names of the texts
        out = {"test": test}
        for split in ("train", "val"):
            out[split] = []
            for i in range(self.num_docs[split]):
                names, segments, spans = draw_segments(
                    rng, pools[split], texts, segments_per_doc=self.segments_per_doc, segment_length=self.segment_length
                )
                composition = [[key[k], start, length] for k, (start, length) in zip(names, spans)]
                doc_id = f"synthetic-{split}-{i:05d}"
                doc = segments_to_document(doc_id, segments, {"composition": composition, "subset": "synthetic"})
                out[split].append(doc)
        log.info(
            "Choi source-disjoint split: %d test documents (%s) with %d source texts held out; "
            "train/val drawn from %d/%d other texts",
            len(test),
            ",".join(self.test_folders),
            len(held_out),
            len(pools["train"]),
            len(pools["val"]),
        )
        return {s: out[s] for s in ("train", "val", "test")}

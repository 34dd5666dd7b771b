"""Readers for corpora in the field's standard formats.

- Separator format (Choi 2000, Wiki-727K): one unit per line; a separator line starts a
  new segment. Choi uses ``==========``; Wiki-727K uses ``========,<level>,<title>.``.
- JSONL: one document per line, ``{"id": ..., "lines": [...], "labels": [...]}``.

Bad input raises :class:`ReaderError` naming the file, the line and the problem; with
``on_error="skip"`` the offending document is skipped and a warning counts the skips.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from segmenter.data.document import BOUNDARY, SECTION, Document, segments_to_document

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
CHOI_SEPARATOR = re.compile(r"^={10}\s*$")
WIKI_HEADER = re.compile(r"^========,(\d+),(.*)$")
WIKI_LIST = "***LIST***."


class ReaderError(ValueError):
    """Bad input: names the file, the line (1-based, 0 = the file as a whole) and the problem."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR}")


def decode_utf8(data: bytes, name: str | os.PathLike) -> str:
    """UTF-8 text of a file's bytes (a byte-order mark is dropped); a binary file (NUL
    byte) or a decoding error raises ReaderError naming the line where it happens."""
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ReaderError(name, line, "binary file (NUL byte); expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ReaderError(name, line, f"not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file (see ``decode_utf8``)."""
    return decode_utf8(path.read_bytes(), path)


def list_files(paths: str | os.PathLike | Sequence[str | os.PathLike], *, pattern: str = "*") -> list[Path]:
    """Files of a folder tree (recursive, sorted), a single file, or a list of either."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob(pattern) if f.is_file() and not f.name.startswith("."))
            if not found:
                raise ReaderError(p, 0, f"folder has no files matching {pattern!r}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ReaderError(p, 0, "no such file or folder")
    return files


def parse_separator(
    path: Path, text: str, *, max_level: int | None = None, drop_lines: Iterable[str] = (WIKI_LIST,)
) -> list[list[str]]:
    """Segments (lists of units) of one separator-format file.

    A Choi separator or a Wiki-727K header of level <= ``max_level`` (all levels when None)
    starts a new segment; deeper headers are dropped without a boundary. Empty segments
    (a header right after a header) are skipped; ``drop_lines`` (``***LIST***.``) are dropped.
    """
    drop = set(drop_lines)
    segments: list[list[str]] = [[]]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if CHOI_SEPARATOR.match(line):
            segments.append([])
            continue
        header = WIKI_HEADER.match(line)
        if header:
            if max_level is None or int(header.group(1)) <= max_level:
                segments.append([])
            continue
        if line.startswith("========"):
            raise ReaderError(path, lineno, f"malformed separator line {line[:60]!r}")
        if not line or line in drop:
            continue
        segments[-1].append(line)
    return [s for s in segments if s]


def read_separator_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    root: str | os.PathLike | None = None,
    max_level: int | None = None,
    pattern: str = "*",
    on_error: str = "raise",
    subset_by_folder: bool = False,
) -> list[Document]:
    """Documents of separator-format files. The id is the path relative to ``root`` (or the
    file name); with ``subset_by_folder``, ``meta["subset"]`` is the parent folder's name
    (Choi's ``3-5``, ``6-8``...), the groups an evaluation reports separately."""
    _check_on_error(on_error)
    docs, skipped = [], []
    for f in list_files(paths, pattern=pattern):
        try:
            segments = parse_separator(f, read_text(f), max_level=max_level)
            if not segments:
                raise ReaderError(f, 0, "empty document: no units")
        except ReaderError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        doc_id = f.relative_to(root).as_posix() if root else f.name
        meta = {"path": str(f), **({"subset": f.parent.name} if subset_by_folder else {})}
        docs.append(segments_to_document(doc_id, segments, meta))
    _warn_skipped(skipped)
    return docs


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        log.warning("skipped %d bad document(s) (on_error=skip); first: %s", len(skipped), skipped[0])


def read_jsonl(
    path: str | os.PathLike,
    *,
    label_names: Sequence[str],
    label_mode: str = SECTION,
    on_error: str = "raise",
) -> list[Document]:
    """One document per line: ``{"id", "lines", "labels"}``.

    ``label_mode="section"``: ``labels`` are per-line class ids (or names from
    ``label_names``). ``label_mode="boundary"``: 1 where a line starts a new segment
    (the first line may be 0 or 1); converted to the boundary task's "unit ends a segment".
    """
    _check_on_error(on_error)
    if label_mode not in (SECTION, BOUNDARY):
        raise ValueError(f"label_mode={label_mode!r} is not one of {(SECTION, BOUNDARY)}")
    path = Path(path)
    names = list(label_names)
    index = {name: i for i, name in enumerate(names)}
    docs, skipped, seen = [], [], {}
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = _jsonl_document(path, lineno, raw, names, index, label_mode)
            if doc.id in seen:
                raise ReaderError(path, lineno, f"duplicate id {doc.id!r} (first on line {seen[doc.id]})")
            seen[doc.id] = lineno
            docs.append(doc)
        except ReaderError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
    _warn_skipped(skipped)
    if not docs:
        raise ReaderError(path, 0, "no documents")
    return docs


def _jsonl_document(path, lineno, raw, names, index, label_mode) -> Document:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ReaderError(path, lineno, f"malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict) or not {"id", "lines", "labels"} <= set(obj):
        raise ReaderError(path, lineno, 'expected an object with keys "id", "lines", "labels"')
    lines, labels = obj["lines"], obj["labels"]
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise ReaderError(path, lineno, '"lines" must be a list of strings')
    if not isinstance(labels, list):
        raise ReaderError(path, lineno, '"labels" must be a list')
    if not lines:
        raise ReaderError(path, lineno, f"empty document {obj['id']!r}")
    if len(lines) != len(labels):
        raise ReaderError(path, lineno, f"{len(lines)} lines but {len(labels)} labels")
    ids = []
    for i, lab in enumerate(labels):
        if label_mode == BOUNDARY:
            if lab not in (0, 1) or isinstance(lab, bool):
                raise ReaderError(path, lineno, f"unknown label {lab!r} at position {i}: boundary labels are 0 or 1")
            ids.append(int(lab))
        elif isinstance(lab, str) and lab in index:
            ids.append(index[lab])
        elif isinstance(lab, int) and not isinstance(lab, bool) and 0 <= lab < len(names):
            ids.append(lab)
        else:
            raise ReaderError(path, lineno, f"unknown label {lab!r} at position {i}; label_names={names}")
    if label_mode == BOUNDARY:
        # "line i starts a segment" -> "line i - 1 ends one"; the document end is no slot.
        ids = ids[1:] + [0]
    return Document(str(obj["id"]), lines, ids, {"path": str(path), "line": lineno})


# -- corpora (``data=choi``, ``data=wiki``, ``data=jsonl``) ------------------------------


class FileCorpus:
    """Documents read from files: ``path`` split by a seeded document-level split into
    ``fractions``, or ``files`` = {"train": ..., "val": ..., "test": ...} read as given.
    Subclasses say how to read (``_read``)."""

    def __init__(self, *, path, files, fractions: Sequence[float], seed: int) -> None:
        from segmenter.data.splits import check_fractions

        if (path is None) == (files is None):
            raise ValueError(f"give exactly one of path={path!r} or files={files!r}")
        if files is not None and set(files) != {"train", "val", "test"}:
            raise ValueError(f"files={dict(files)} needs keys train, val, test")
        self.path, self.files = path, files
        self.fractions, self.seed = check_fractions(fractions), seed

    def _read(self, paths) -> list[Document]:
        raise NotImplementedError

    def load(self) -> dict[str, list[Document]]:
        from segmenter.data.splits import random_split

        if self.files is not None:
            return {split: self._read(p) for split, p in self.files.items()}
        return random_split(self._read(self.path), fractions=self.fractions, seed=self.seed)


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
        pattern: str = "*",
        on_error: str = "raise",
        subset_by_folder: bool = False,
    ) -> None:
        super().__init__(path=path, files=files, fractions=fractions, seed=seed)
        _check_on_error(on_error)
        self.subset_by_folder = subset_by_folder
        self.max_level, self.pattern, self.on_error = max_level, pattern, on_error

    def _read(self, paths) -> list[Document]:
        single = paths if isinstance(paths, (str, os.PathLike)) else None
        root = Path(single) if single is not None and Path(single).is_dir() else None
        return read_separator_files(
            paths, root=root, max_level=self.max_level, pattern=self.pattern, on_error=self.on_error,
            subset_by_folder=self.subset_by_folder,
        )



class JsonlCorpus(FileCorpus):
    """JSONL documents; ``label_mode="section"`` trains a multi-class head over ``label_names``,
    ``label_mode="boundary"`` a boundary head. ``path`` split by seed, or ``files`` per split."""

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
    ) -> None:
        super().__init__(path=path, files=files, fractions=fractions, seed=seed)
        if label_mode not in (SECTION, BOUNDARY):
            raise ValueError(f"label_mode={label_mode!r} is not one of {(SECTION, BOUNDARY)}")
        if label_mode == BOUNDARY and len(label_names) != 2:
            raise ValueError(f"label_mode=boundary needs 2 label_names, got {list(label_names)}")
        if len(label_names) < 2:
            raise ValueError(f"label_names={list(label_names)} needs at least 2 classes")
        _check_on_error(on_error)
        self.task = label_mode
        self.label_names = tuple(label_names)
        self.on_error = on_error

    def _read(self, path) -> list[Document]:
        return read_jsonl(path, label_names=self.label_names, label_mode=self.task, on_error=self.on_error)



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
        from segmenter.data.splits import check_fractions

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

    def load(self) -> dict[str, list[Document]]:
        import random

        from segmenter.data.document import document_segments
        from segmenter.data.splits import random_split

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
            raise ValueError(f"too few held-in source texts {({k: len(v) for k, v in pools.items()})}")
        key = {k: f"t{i:03d}" for i, k in enumerate(sorted(texts))}  # short stable names of the texts
        out = {"test": test}
        for split in ("train", "val"):
            out[split] = []
            for i in range(self.num_docs[split]):
                segments, composition = [], []
                for k in rng.sample(pools[split], self.segments_per_doc):
                    text = texts[k]
                    length = min(rng.randint(*self.segment_length), len(text))
                    start = rng.randrange(len(text) - length + 1)
                    segments.append(text[start : start + length])
                    composition.append([key[k], start, length])
                doc_id = f"synthetic-{split}-{i:05d}"
                doc = segments_to_document(doc_id, segments, {"composition": composition, "subset": "synthetic"})
                out[split].append(doc)
        log.info(
            "Choi source-disjoint split: %d test documents (%s) with %d source texts held out; "
            "train/val drawn from %d/%d other texts",
            len(test), ",".join(self.test_folders), len(held_out), len(pools["train"]), len(pools["val"]),
        )
        return {s: out[s] for s in ("train", "val", "test")}

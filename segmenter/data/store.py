"""A corpus on disk as memory-mapped Arrow shards (Hugging Face ``datasets``), so training
reads documents of a corpus of any size without holding them: RAM stays flat whatever the
number of documents.

The first run of a corpus streams its documents (``stream()`` where the corpus has one,
else ``load()``) into Arrow shards and writes beside them what every run needs without
walking the documents again::

    <root>/<key hash>/data-<i>-<split>-<n>.arrow   id, units, labels, meta (JSON) of each split's documents
    <root>/<key hash>/rows-<split>.npy       the split's documents: rows of the shards, in split order
    <root>/<key hash>/lengths.npy            units per row (training windows are cut from these)
    <root>/<key hash>/stats.json             per split: documents, units, segments, label counts, subsets
    <root>/<key hash>/splits.json            the split file (ids and fingerprints per split)
    <root>/<key hash>/key.json               what the hash is of (for people)

The key is the corpus's ``cache_key()``: its class and settings and its source files (path,
size, modification time), so a changed corpus gets a new folder and is never served stale.
A store is built in a temporary folder and renamed into place whole: an interrupted
preparation leaves no store (the next run starts again), and concurrent builders (DDP ranks)
leave one. A corpus without ``cache_key`` is stored under a temporary folder per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segmenter.core.document import Document, boundary_labels
from segmenter.core.io import atomic_file, atomic_write
from segmenter.core.windows import window_of, window_spans
from segmenter.data.splits import FINGERPRINT_VERSION, SPLITS, combine_digests, document_digest

log = logging.getLogger(__name__)

FORMAT = 1
SHARD_ROWS = 100_000  # documents per Arrow shard
WRITER_BATCH = 256  # documents the writer buffers before it writes a record batch
STATS, MANIFEST, KEY = "stats.json", "splits.json", "key.json"


def _features():
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "units": List(Value("string")),
            "labels": List(Value("int32")),
            "meta": Value("string"),  # JSON: subset, path, composition, ...
        }
    )


def file_signature(files: Iterable[Path]) -> str:
    """Hash of the files' paths, sizes and modification times: changes when any is
    edited, added, removed or replaced."""
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def store_key(corpus: Any) -> dict | None:
    """What a corpus's store is keyed by, or None when the corpus cannot say (no ``cache_key``)."""
    cache_key = getattr(corpus, "cache_key", None)
    if cache_key is None:
        return None
    key = cache_key()
    if key is None:
        return None
    return {"format": FORMAT, "corpus": f"{type(corpus).__module__}.{type(corpus).__qualname__}", "key": key}


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def records(corpus: Any) -> Iterator[tuple[str | None, Document]]:
    """(split, document) of every document of a corpus, one at a time where the corpus
    streams (``stream()``; split None: placed by its ``split_rows``), else from ``load()``."""
    stream = getattr(corpus, "stream", None)
    if stream is not None:
        yield from stream()
        return
    for split, docs in corpus.load().items():
        for d in docs:
            yield split, d


def build_store(corpus: Any, directory: str | os.PathLike, *, progress: bool = True) -> Path:
    """Write ``corpus`` into ``directory`` (see the module docstring), unless it is there."""
    directory = Path(directory)
    if (directory / STATS).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write(corpus, tmp, progress=progress)
        try:
            tmp.rename(directory)
        except OSError:  # another process (a DDP rank) put its store there first: the same one
            if not (directory / STATS).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("corpus %s stored at %s", type(corpus).__name__, directory)
    return directory


def _remove_abandoned(directory: Path) -> None:
    """Temporary folders of builds whose process is gone (killed mid-way)."""
    for tmp in directory.parent.glob(f".{directory.name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unplaced_ids(corpus: Any, *, progress: bool) -> list[str]:
    """First pass, for a corpus that splits once every id is known (``split_rows``): the ids
    of its documents, in stream order; [] for a corpus that names each document's split."""
    from datasets.utils import tqdm as hf_tqdm

    if getattr(corpus, "split_rows", None) is None:
        return []
    ids: list[str] = []
    with hf_tqdm(desc=f"listing {type(corpus).__name__}", unit=" docs", disable=not progress) as bar:
        for split, doc in records(corpus):
            if split is not None:  # a corpus names every split or none
                return []
            ids.append(doc.id)
            bar.update(1)
    return ids


def _write(corpus: Any, out: Path, *, progress: bool) -> None:
    """Each split's documents go to shards of their own (``data-<i>-<split>-<n>.arrow``), so
    reading one split (validation) touches its part of the disk, not pages of every shard.
    A corpus that splits by id is read twice: its ids first, then its documents."""
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils import tqdm as hf_tqdm

    task, num_classes = corpus.task, len(corpus.label_names)
    features = _features()
    unplaced = _unplaced_ids(corpus, progress=progress)
    code_of_unplaced = np.zeros(len(unplaced), dtype=np.int8)  # the split of each, in stream order
    by_split = corpus.split_rows(unplaced) if unplaced else {}
    for code, split in enumerate(SPLITS):
        code_of_unplaced[np.asarray(by_split.get(split, []), dtype=np.int64)] = code
    # One small entry per document (no units), by stream position: what the splits,
    # statistics and split file need.
    ids: list[str] = []
    digests = bytearray()
    lengths, segments, label_counts, subset_codes = array("q"), array("q"), array("q"), array("q")
    split_code, local = array("b"), array("q")  # the document's split and its row among that split's
    subsets: dict[str, int] = {}
    composition: dict[str, Any] = {}
    writers: dict[int, Any] = {}
    counts_by_split = [0] * len(SPLITS)
    try:
        with hf_tqdm(desc=f"preparing {type(corpus).__name__}", unit=" docs", disable=not progress) as bar:
            for split, doc in records(corpus):
                if split is None:
                    k = len(ids)
                    if k >= len(unplaced) or unplaced[k] != doc.id:
                        raise ValueError(f"{type(corpus).__name__} changed while it was being stored (at {doc.id!r})")
                    code = int(code_of_unplaced[k])
                elif split in SPLITS and not unplaced:
                    code = SPLITS.index(split)
                else:
                    raise ValueError(f"{type(corpus).__name__} gave split {split!r}, not one of {SPLITS}")
                row = counts_by_split[code]
                if row % SHARD_ROWS == 0:
                    if code in writers:
                        writers[code].finalize()
                        writers[code].close()
                    path = out / f"data-{code}-{SPLITS[code]}-{row // SHARD_ROWS:05d}.arrow"
                    writers[code] = ArrowWriter(features=features, path=str(path), writer_batch_size=WRITER_BATCH)
                writers[code].write(
                    {"id": doc.id, "units": doc.units, "labels": doc.labels, "meta": json.dumps(doc.meta, default=str)}
                )
                counts_by_split[code] += 1
                split_code.append(code)
                local.append(row)
                ids.append(doc.id)
                digests += document_digest(doc)
                lengths.append(len(doc))
                segments.append(sum(boundary_labels(doc.labels, task)) + 1)
                counts = np.bincount(np.asarray(doc.labels, dtype=np.int64), minlength=num_classes)
                if len(counts) > num_classes:
                    raise ValueError(f"document {doc.id!r}: label {len(counts) - 1} for {num_classes} classes")
                label_counts.extend(counts.tolist())
                subset_codes.append(subsets.setdefault(doc.subset, len(subsets)))
                if "composition" in doc.meta:
                    composition[doc.id] = doc.meta["composition"]
                bar.update(1)
    finally:
        for writer in writers.values():
            writer.finalize()
            writer.close()
    if len(ids) != len(unplaced) and unplaced:
        raise ValueError(f"{type(corpus).__name__} changed while it was being stored ({len(ids)} of {len(unplaced)})")
    # Stream position -> row of the store (the shards in order: train, val, test).
    offsets = np.concatenate([[0], np.cumsum(counts_by_split)[:-1]]).astype(np.int64)
    codes = np.frombuffer(split_code, dtype=np.int8).astype(np.int64)
    row_of = offsets[codes] + np.frombuffer(local, dtype=np.int64)
    # Each split's documents by stream position, in split order.
    if unplaced:
        positions = {s: np.asarray(by_split.get(s, []), dtype=np.int64) for s in SPLITS}
    else:
        positions = {s: np.flatnonzero(codes == i) for i, s in enumerate(SPLITS)}
    names = list(subsets)
    lengths_np = np.frombuffer(lengths, dtype=np.int64).astype(np.int32)
    by_row = np.empty_like(lengths_np)
    by_row[row_of] = lengths_np
    np.save(out / "lengths.npy", by_row)
    counts_np = np.frombuffer(label_counts, dtype=np.int64).reshape(len(ids), num_classes)  # (N, C)
    segments_np, subsets_np = np.frombuffer(segments, dtype=np.int64), np.frombuffer(subset_codes, dtype=np.int64)
    stats, manifest = {}, {"info": {"corpus": type(corpus).__name__}, "splits": {}, "fingerprints": {}}
    for split in SPLITS:
        pos = positions[split]
        np.save(out / f"rows-{split}.npy", row_of[pos])
        stats[split] = {
            "docs": len(pos),
            "units": int(lengths_np[pos].sum()),
            "segments": int(segments_np[pos].sum()),
            "label_counts": counts_np[pos].sum(0).tolist(),
            "subsets": sorted({names[c] for c in subsets_np[pos].tolist()}),
        }
        manifest["splits"][split] = [ids[p] for p in pos.tolist()]
        manifest["fingerprints"][split] = combine_digests(digests[20 * p : 20 * p + 20] for p in pos.tolist())
    manifest["fingerprint_version"] = FINGERPRINT_VERSION
    if composition:
        manifest["composition"] = composition
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    atomic_write(out / KEY, json.dumps(store_key(corpus), indent=1, sort_keys=True, default=str))
    atomic_write(out / STATS, json.dumps({"task": task, "label_names": list(corpus.label_names), "splits": stats}))


class DocumentStore:
    """A built store, memory-mapped: documents are read per ``document(row)``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        from datasets import Dataset, concatenate_datasets

        self.dir = Path(directory)
        meta = json.loads((self.dir / STATS).read_text(encoding="utf-8"))
        self.stats: dict[str, dict] = meta["splits"]
        shards = sorted(self.dir.glob("data-*.arrow"))
        tables = [Dataset.from_file(str(p)) for p in shards]  # memory-mapped, not read
        self.table = (concatenate_datasets(tables) if len(tables) > 1 else tables[0]) if tables else None
        self.lengths = np.load(self.dir / "lengths.npy", mmap_mode="r")
        self.rows = {split: np.load(self.dir / f"rows-{split}.npy") for split in SPLITS}

    def document(self, row: int) -> Document:
        r = self.table[int(row)]
        return Document(r["id"], r["units"], r["labels"], json.loads(r["meta"]))

    def units(self, rows: Sequence[int]) -> Iterator[list[str]]:
        """The units of each of ``rows``, one document at a time."""
        column = self.table.select_columns(["units"])
        for row in rows:
            yield column[int(row)]["units"]

    def copy_manifest(self, path: str | os.PathLike) -> Path:
        """The split file of this store, copied to ``path`` (a run folder) without reading it."""
        with open(self.dir / MANIFEST, "rb") as src, atomic_file(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return Path(path)


class StoredDocuments(Dataset):
    """Map-style dataset of a store's documents, ``rows`` in order; with ``windows`` (K, 3)
    = (row, start, end), item k is that window of that document (the whole document when
    it spans it, as ``window_document`` gives)."""

    def __init__(self, store: DocumentStore, rows: np.ndarray, *, windows: np.ndarray | None = None) -> None:
        self.store, self.rows, self.windows = store, rows, windows

    def __len__(self) -> int:
        return len(self.rows) if self.windows is None else len(self.windows)

    def __getitem__(self, i: int) -> Document:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} documents")
        if self.windows is None:
            return self.store.document(self.rows[i])
        row, start, end = self.windows[i].tolist()
        doc = self.store.document(row)
        return doc if end - start == len(doc) else window_of(doc, start, end)

    def __iter__(self) -> Iterator[Document]:
        for i in range(len(self)):
            yield self[i]


def training_windows(lengths: np.ndarray, rows: np.ndarray, *, size: int, overlap: int) -> np.ndarray:
    """(K, 3) int64 (row, start, end): the windows ``window_document`` cuts ``rows`` into."""
    out = [
        (row, s, e)
        for row, n in zip(rows.tolist(), lengths[rows].tolist())
        for s, e in window_spans(n, size=size, overlap=overlap)
    ]
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def temporary_root() -> tempfile.TemporaryDirectory:
    """Where a store goes that is not cached (no cache folder, or no key): removed with it."""
    return tempfile.TemporaryDirectory(prefix="segmenter-corpus-")

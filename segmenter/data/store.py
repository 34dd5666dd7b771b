"""A corpus on disk as memory-mapped Arrow shards (Hugging Face ``datasets``), so training
reads documents of a corpus of any size without holding them: RAM stays flat whatever the
number of documents.

The first run of a corpus streams its documents (``stream()`` where the corpus has one,
else ``load()``) into Arrow shards and writes beside them what every run needs without
walking the documents again::

    <root>/<key hash>/data-<i>-<split>-<part>.arrow   id, units, labels, meta (JSON) of each split's documents
    <root>/<key hash>/rows-<split>.npy       the split's documents: rows of the shards, in split order
    <root>/<key hash>/lengths.npy            units per row (training windows are cut from these)
    <root>/<key hash>/stats.json             per split: documents, units, segments, label counts, subsets
    <root>/<key hash>/splits.json            the split file (ids and fingerprints per split)
    <root>/<key hash>/key.json               what the hash is of (for people)

The key is the corpus's ``cache_key()``: its class and settings and its source files (path,
size, modification time), so a changed corpus gets a new folder and is never served stale.
A store is built in ``.<key hash>.partial`` beside it, ``PART_DOCS`` documents of the stream
at a time, and renamed into place whole once done. An interrupted preparation (Ctrl-C, a
kill, a bad document found late) leaves the parts it finished, each written whole
(temporary names, renamed): the next build reads past their documents, checking that each
is the one stored, and writes only the rest; the store is the one an uninterrupted build
gives. A file lock beside it lets one process build at a time (DDP ranks, a parallel sweep);
the others wait and find it built. What a build keeps while it runs is a few numbers per
document (numpy: split, units, segments, label counts, subset, a 20-byte digest) and, for a
corpus split by id, the ids as UTF-8 bytes end to end (``Ids``) until the split is drawn.
A corpus without ``cache_key`` is stored under a temporary folder per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segmenter.core.document import Document, boundary_labels
from segmenter.core.io import atomic_file, atomic_write
from segmenter.core.windows import window_of, window_spans
from segmenter.data.splits import FINGERPRINT_VERSION, SPLITS, Ids, combine_digests, document_digest

log = logging.getLogger(__name__)

FORMAT = 1
PART_DOCS = 50_000  # documents of the stream per part: the most an interrupted build writes again
WRITER_BATCH = 256  # documents the writer buffers before it writes a record batch
STATS, MANIFEST, KEY, PLAN = "stats.json", "splits.json", "key.json", "plan.npz"


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
    """Write ``corpus`` into ``directory`` (see the module docstring), unless it is there.
    The work goes on in ``.<directory name>.partial`` beside it, a part at a time; an
    interrupted build leaves its whole parts there, and the next build continues after them."""
    from filelock import FileLock

    directory = Path(directory)
    if (directory / STATS).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (DDP ranks, a parallel sweep): the others wait, then find it built.
    with FileLock(directory.parent / f".{directory.name}.lock"):
        if (directory / STATS).is_file():
            return directory
        _remove_abandoned(directory)
        work = directory.parent / f".{directory.name}.partial"
        work.mkdir(exist_ok=True)
        if not (work / STATS).is_file():  # else: written whole, only the rename was missed
            _write(corpus, work, progress=progress)
        work.rename(directory)
    log.info("corpus %s stored at %s", type(corpus).__name__, directory)
    return directory


def _remove_abandoned(directory: Path) -> None:
    """Temporary folders of builds (by earlier versions, which did not resume) whose process is gone."""
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


def _id_hash(doc_id: str) -> int:
    """8 bytes of a document id: what the split plan checks a stream against."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def _plan(corpus: Any, work: Path, *, progress: bool) -> dict[str, np.ndarray] | None:
    """For a corpus that splits once every id is known (``split_rows``): the split of each
    stream position (``code``), each split's positions in split order, and a hash of each
    id, from a first pass over the stream that keeps the ids compactly (``Ids``); None for a
    corpus that names each document's split. Kept in ``plan.npz``, so a resumed build does
    not list the ids again."""
    from datasets.utils import tqdm as hf_tqdm

    if getattr(corpus, "split_rows", None) is None:
        return None
    path = work / PLAN
    if path.is_file():
        with np.load(path) as plan:
            return {k: plan[k] for k in plan.files}
    ids = Ids()
    hashes = array("Q")
    with hf_tqdm(desc=f"listing {type(corpus).__name__}", unit=" docs", disable=not progress) as bar:
        for split, doc in records(corpus):
            if split is not None:  # a corpus names every split or none
                return None
            ids.append(doc.id)
            hashes.append(_id_hash(doc.id))
            bar.update(1)
    by_split = corpus.split_rows(ids)
    del ids
    plan = {"code": np.zeros(len(hashes), dtype=np.int8), "id_hash": np.frombuffer(hashes, dtype=np.uint64)}
    for code, split in enumerate(SPLITS):
        positions = np.asarray(by_split.get(split, []), dtype=np.int64)
        plan["code"][positions] = code
        plan[split] = positions
    with atomic_file(path, "wb") as f:
        np.savez(f, **plan)
    return plan


class _Part:
    """What the build keeps of the documents of one part while it is written: a few numbers
    per document (no units), saved beside the part's shards (``part-<n>.npz``)."""

    def __init__(self, num_classes: int) -> None:
        self.split, self.lengths, self.segments = array("b"), array("q"), array("q")
        self.label_counts, self.subset = array("q"), array("q")
        self.digests = bytearray()
        self.ids = Ids()  # for the split file: bytes, not str objects
        self.num_classes = num_classes
        self.composition: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.split)

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self)
        return {
            "split": np.frombuffer(self.split, dtype=np.int8),
            "lengths": np.frombuffer(self.lengths, dtype=np.int64).astype(np.int32),
            "segments": np.frombuffer(self.segments, dtype=np.int64).astype(np.int32),
            "label_counts": np.frombuffer(self.label_counts, dtype=np.int64).reshape(n, self.num_classes),  # (n, C)
            "subset": np.frombuffer(self.subset, dtype=np.int64).astype(np.int32),
            "digests": np.frombuffer(bytes(self.digests), dtype=np.uint8).reshape(n, 20),  # (n, 20) sha1
            **self.ids.arrays(),
        }


def _committed_parts(work: Path) -> int:
    """How many parts (0, 1, ...) were written whole; everything of a later part (shards of a
    build killed mid-part, temporary files) is removed, to be written again."""
    done = 0
    while (work / f"part-{done:05d}.json").is_file():
        done += 1
    for path in work.iterdir():
        part = path.name.rsplit("-", 1)[-1].split(".")[0]
        if path.name.startswith(".") or (
            path.name.startswith(("data-", "part-")) and part.isdigit() and int(part) >= done
        ):
            path.unlink()
    return done


def _load_parts(work: Path, parts: int) -> tuple[dict[str, np.ndarray], Ids, list[str], dict[str, Any]]:
    """The per-document arrays of ``parts`` whole parts, end to end; their ids; the subset
    names; the compositions."""
    arrays: dict[str, list[np.ndarray]] = {}
    ids = Ids()
    names: list[str] = []
    composition: dict[str, Any] = {}
    for i in range(parts):
        with np.load(work / f"part-{i:05d}.npz") as found:
            for k in found.files:
                if not k.startswith("id_"):
                    arrays.setdefault(k, []).append(found[k])
            ids.extend_arrays(found["id_bytes"], found["id_ends"])
        meta = json.loads((work / f"part-{i:05d}.json").read_text(encoding="utf-8"))
        names = meta["subsets"]
        composition.update(meta["composition"])
    return {k: np.concatenate(v) for k, v in arrays.items()}, ids, names, composition


def _write(corpus: Any, out: Path, *, progress: bool) -> None:
    """Write the store into ``out``, continuing after the parts a previous build wrote whole.

    The stream is written in parts of ``PART_DOCS`` documents; each part's documents go to
    shards of their split (``data-<i>-<split>-<part>.arrow``: reading one split touches its
    part of the disk), each shard written under a temporary name and renamed once whole;
    the part's per-document numbers (``part-<n>.npz``) follow, and ``part-<n>.json`` last
    says the part is done. A resumed build reads past the documents of done parts (checking
    each is the one stored) and writes none of them again. A corpus that splits by id is read
    twice: its ids first (``plan.npz``), then its documents."""
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils import tqdm as hf_tqdm

    task, num_classes = corpus.task, len(corpus.label_names)
    features = _features()
    plan = _plan(corpus, out, progress=progress)
    done_parts = _committed_parts(out)
    done, _, subset_names, composition = _load_parts(out, done_parts)
    reused = len(done.get("split", ()))
    if done_parts:
        log.info(
            "resuming the store of %s: %d documents (%d parts) were written whole before; reading past them",
            type(corpus).__name__,
            reused,
            done_parts,
        )
    subsets = {name: code for code, name in enumerate(subset_names)}
    part, writers, position, index = _Part(num_classes), {}, 0, done_parts

    def finish_part() -> None:
        """Close the part's shards, rename them into place, then record the part as done."""
        for code, (writer, tmp) in sorted(writers.items()):
            writer.finalize()
            writer.close()
            os.replace(tmp, out / f"data-{code}-{SPLITS[code]}-{index:05d}.arrow")
        writers.clear()
        with atomic_file(out / f"part-{index:05d}.npz", "wb") as f:
            np.savez(f, **part.arrays())
        record = {"docs": len(part), "subsets": list(subsets), "composition": part.composition}
        atomic_write(out / f"part-{index:05d}.json", json.dumps(record))

    try:
        with hf_tqdm(desc=f"preparing {type(corpus).__name__}", unit=" docs", disable=not progress) as bar:
            for split, doc in records(corpus):
                if plan is not None and split is None:
                    if position >= len(plan["code"]) or plan["id_hash"][position] != _id_hash(doc.id):
                        raise ValueError(f"{type(corpus).__name__} changed while it was being stored (at {doc.id!r})")
                    code = int(plan["code"][position])
                elif split in SPLITS and plan is None:
                    code = SPLITS.index(split)
                else:
                    raise ValueError(f"{type(corpus).__name__} gave split {split!r}, not one of {SPLITS}")
                if position < reused:  # stored by a build before: the same document?
                    if document_digest(doc) != done["digests"][position].tobytes():
                        raise ValueError(f"{type(corpus).__name__} changed while it was being stored (at {doc.id!r})")
                    position += 1
                    bar.update(1)
                    continue
                if code not in writers:
                    tmp = out / f".data-{code}-{index:05d}.arrow.tmp"
                    writers[code] = (ArrowWriter(features=features, path=str(tmp), writer_batch_size=WRITER_BATCH), tmp)
                writers[code][0].write(
                    {"id": doc.id, "units": doc.units, "labels": doc.labels, "meta": json.dumps(doc.meta, default=str)}
                )
                counts = np.bincount(np.asarray(doc.labels, dtype=np.int64), minlength=num_classes)
                if len(counts) > num_classes:
                    raise ValueError(f"document {doc.id!r}: label {len(counts) - 1} for {num_classes} classes")
                part.split.append(code)
                part.digests += document_digest(doc)
                part.ids.append(doc.id)
                part.lengths.append(len(doc))
                part.segments.append(sum(boundary_labels(doc.labels, task)) + 1)
                part.label_counts.extend(counts.tolist())
                part.subset.append(subsets.setdefault(doc.subset, len(subsets)))
                if "composition" in doc.meta:
                    part.composition[doc.id] = doc.meta["composition"]
                position += 1
                bar.update(1)
                if len(part) == PART_DOCS:
                    finish_part()
                    part, index = _Part(num_classes), index + 1
            if len(part):
                finish_part()
    finally:
        for writer, _ in writers.values():  # interrupted mid-part: its shards are not whole, and not kept
            writer.close()
    if position < reused:
        raise ValueError(f"{type(corpus).__name__} changed while it was being stored ({position} of {reused})")
    if plan is not None and position != len(plan["code"]):
        raise ValueError(
            f"{type(corpus).__name__} changed while it was being stored ({position} of {len(plan['code'])})"
        )
    _finish(corpus, out, plan=plan)


def _finish(corpus: Any, out: Path, *, plan: dict[str, np.ndarray] | None) -> None:
    """From the parts' per-document numbers: each split's rows, units per row, statistics,
    the split file (ids read back from the shards a batch at a time), then ``stats.json``."""
    task = corpus.task
    parts = sum(1 for _ in out.glob("part-*.json"))
    docs, ids, names, composition = _load_parts(out, parts)
    codes = docs["split"].astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    n = len(codes)
    counts_by_split = np.bincount(codes, minlength=len(SPLITS))
    # Stream position -> row of the store (the shards in name order: train, val, test, each
    # split's in stream order).
    offsets = np.concatenate([[0], np.cumsum(counts_by_split)[:-1]]).astype(np.int64)
    local = np.empty(n, dtype=np.int64)
    for i in range(len(SPLITS)):
        at = np.flatnonzero(codes == i)
        local[at] = np.arange(len(at))
    row_of = offsets[codes] + local
    # Each split's documents by stream position, in split order.
    positions = {s: (plan[s] if plan is not None else np.flatnonzero(codes == i)) for i, s in enumerate(SPLITS)}
    lengths = docs["lengths"] if parts else np.zeros(0, dtype=np.int32)
    by_row = np.empty_like(lengths)
    by_row[row_of] = lengths
    np.save(out / "lengths.npy", by_row)
    stats = {}
    for split in SPLITS:
        pos = positions[split]
        np.save(out / f"rows-{split}.npy", row_of[pos])
        stats[split] = {
            "docs": len(pos),
            "units": int(lengths[pos].sum()),
            "segments": int(docs["segments"][pos].sum()) if parts else 0,
            "label_counts": (docs["label_counts"][pos].sum(0).tolist() if parts else [0] * len(corpus.label_names)),
            "subsets": sorted({names[c] for c in np.unique(docs["subset"][pos]).tolist()}) if parts else [],
        }
    digests = docs["digests"] if parts else np.zeros((0, 20), dtype=np.uint8)
    fingerprints = {s: combine_digests([digests[positions[s]].tobytes()]) for s in SPLITS}
    _write_manifest(
        out / MANIFEST,
        ids,
        positions=positions,
        info={"corpus": type(corpus).__name__},
        fingerprints=fingerprints,
        composition=composition,
    )
    atomic_write(out / KEY, json.dumps(store_key(corpus), indent=1, sort_keys=True, default=str))
    atomic_write(out / STATS, json.dumps({"task": task, "label_names": list(corpus.label_names), "splits": stats}))
    for path in [*out.glob("part-*"), out / PLAN]:  # the build's own records, done with
        path.unlink(missing_ok=True)


def _write_manifest(
    path: Path,
    ids: Ids,
    *,
    positions: dict[str, np.ndarray],
    info: dict,
    fingerprints: dict[str, str],
    composition: dict[str, Any],
) -> None:
    """The split file (as ``split_manifest`` gives it: ids per split, fingerprints, version,
    compositions), each split's ids (``ids`` by stream position) decoded and written as they
    come: never a list of a corpus's ids."""
    with atomic_file(path) as f:
        f.write('{\n "info": ' + json.dumps(info) + ',\n "splits": {')
        for k, split in enumerate(SPLITS):
            pos = positions[split]
            f.write(("," if k else "") + f"\n  {json.dumps(split)}: [")
            for lo in range(0, len(pos), 10_000):  # a batch of ids at a time
                f.write(",".join(f"\n   {json.dumps(ids[p])}" for p in pos[lo : lo + 10_000].tolist()))
                f.write("," if lo + 10_000 < len(pos) else "")
            f.write("\n  ]" if len(pos) else "]")
        f.write('\n },\n "fingerprints": ' + json.dumps(fingerprints))
        f.write(',\n "fingerprint_version": ' + json.dumps(FINGERPRINT_VERSION))
        if composition:
            f.write(',\n "composition": ' + json.dumps(composition))
        f.write("\n}")


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

    @property
    def manifest(self) -> Path:
        """The split file of this store (ids and fingerprints per split)."""
        return self.dir / MANIFEST

    def copy_manifest(self, path: str | os.PathLike) -> Path:
        """The split file of this store, copied to ``path`` (a run folder) without reading it."""
        with open(self.manifest, "rb") as src, atomic_file(path, "wb") as dst:
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

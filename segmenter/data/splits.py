"""Deterministic document-level train/val/test splits and the split file that records them."""

from __future__ import annotations

import hashlib
import json
import os
import random
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from segmenter.core.document import Document
from segmenter.core.io import atomic_write

SPLITS = ("train", "val", "test")
SPLIT_FILE = "splits.json"


def check_fractions(
    fractions: Sequence[float], *, name: str = "fractions", positive: bool = False
) -> tuple[float, float, float]:
    """Train, val and test shares: 3 numbers summing to 1, each >= 0 (> 0 with ``positive``)."""
    kind = "positive" if positive else "non-negative"
    if (
        len(fractions) != 3
        or abs(sum(fractions) - 1) > 1e-6
        or min(fractions) < 0
        or (positive and min(fractions) == 0)
    ):
        raise ValueError(f"{name}={list(fractions)} must be 3 {kind} numbers (train, val, test) summing to 1")
    return tuple(float(f) for f in fractions)


def random_split(docs: Sequence[Document], *, fractions: Sequence[float], seed: int) -> dict[str, list[Document]]:
    """Seeded document-level split: the same documents and seed give the same split
    whatever order the files were listed in (documents are sorted by id first)."""
    rows = split_rows([d.id for d in docs], fractions=fractions, seed=seed)
    return {split: [docs[i] for i in r] for split, r in rows.items()}


class Ids(Sequence[str]):
    """Document ids held compactly: their UTF-8 bytes end to end and an offset each (about
    the id's length plus 8 bytes per document, against some 90 bytes for a list of str), for
    splitting a corpus too large to hold by its ids. ``append`` one at a time; ``argsort``
    orders them as ``sorted`` orders the strings."""

    def __init__(self) -> None:
        self.blob, self.ends = bytearray(), array("q")

    def append(self, doc_id: str) -> None:
        self.blob += doc_id.encode("utf-8")
        self.ends.append(len(self.blob))

    def arrays(self) -> dict[str, np.ndarray]:
        """The ids as two arrays (to save): their bytes end to end and where each ends."""
        return {"id_bytes": np.frombuffer(bytes(self.blob), dtype=np.uint8), "id_ends": np.asarray(self.ends)}

    def extend_arrays(self, id_bytes: np.ndarray, id_ends: np.ndarray) -> None:
        """Append the ids ``arrays()`` gave (of another ``Ids``)."""
        at = len(self.blob)
        self.blob += id_bytes.tobytes()
        self.ends.extend((id_ends.astype(np.int64) + at).tolist())

    def __len__(self) -> int:
        return len(self.ends)

    def _bytes(self, i: int) -> bytes:
        return bytes(self.blob[self.ends[i - 1] if i else 0 : self.ends[i]])

    def __getitem__(self, i):  # an id, decoded when asked for
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} ids")
        return self._bytes(i % len(self)).decode("utf-8")

    def argsort(self) -> np.ndarray:
        """(N,) int64 positions in ``sorted`` order of the ids. UTF-8 bytes order as the code
        points do, so a numpy sort of fixed-width bytes (zero padded, a chunk filled at a
        time) gives Python's order; ids holding a NUL (which the padding would hide) are
        sorted by Python."""
        n = len(self)
        if b"\x00" in self.blob:
            return np.asarray(sorted(range(n), key=self.__getitem__), dtype=np.int64)
        ends = np.frombuffer(self.ends, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        width = int((ends - starts).max()) if n else 1
        fixed = np.zeros(n, dtype=f"S{max(width, 1)}")
        for lo in range(0, n, 65536):
            hi = min(n, lo + 65536)
            fixed[lo:hi] = [bytes(self.blob[a:b]) for a, b in zip(starts[lo:hi].tolist(), ends[lo:hi].tolist())]
        return np.argsort(fixed, kind="stable")


def split_rows(ids: Sequence[str], *, fractions: Sequence[float], seed: int) -> dict[str, list[int] | np.ndarray]:
    """``random_split`` on the ids alone: {split: positions in ``ids``, in split order}
    (how a corpus too large to hold is split: its ids are enough). ``ids`` given as ``Ids``
    are sorted in numpy and the positions come as int64 arrays (the same split)."""
    train_f, val_f, _ = check_fractions(fractions)
    if isinstance(ids, Ids):
        order = ids.argsort()
        # Sorted, equal ids are neighbours.
        dup = next((i for i in range(1, len(order)) if ids._bytes(order[i]) == ids._bytes(order[i - 1])), None)
    else:
        order = sorted(range(len(ids)), key=ids.__getitem__)
        dup = next((i for i in range(1, len(order)) if ids[order[i]] == ids[order[i - 1]]), None)
    if dup is not None:
        raise ValueError(f"document ids are not unique ({ids[order[dup]]!r} twice); a split needs unique ids")
    # The shuffle draws the same swaps for any sequence of this length (a list or an array).
    random.Random(seed).shuffle(order)
    n_train, n_val = round(len(order) * train_f), round(len(order) * val_f)
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


# Version 2: the hash of the documents' own hashes, so a split's fingerprint is computed from
# one small digest per document (a corpus streamed from disk is never held whole). Split
# files without "fingerprint_version" hold version 1 (one hash over every document).
FINGERPRINT_VERSION = 2


def document_digest(doc: Document) -> bytes:
    """sha1 of a document's id, units and labels (ids alone can be positional)."""
    return hashlib.sha1(json.dumps([doc.id, doc.units, doc.labels]).encode()).digest()


def combine_digests(digests: Iterable[bytes]) -> str:
    """A split's fingerprint from its documents' digests, in split order."""
    h = hashlib.sha1()
    for d in digests:
        h.update(d)
    return h.hexdigest()


def fingerprint(docs: Iterable[Document], *, version: int = FINGERPRINT_VERSION) -> str:
    """Hash of the documents' ids, units and labels, in order (``version`` 1: the split
    files of earlier runs)."""
    if version == FINGERPRINT_VERSION:
        return combine_digests(document_digest(d) for d in docs)
    if version != 1:
        raise ValueError(f"fingerprint version={version} is not 1 or {FINGERPRINT_VERSION}")
    h = hashlib.sha1()
    for d in docs:
        h.update(json.dumps([d.id, d.units, d.labels]).encode())
    return h.hexdigest()


def split_manifest(splits: dict[str, list[Document]], **info) -> dict:
    """What the split file holds: the ids per split, a fingerprint of their content and,
    for documents assembled from parts (synthetic training documents), their composition."""
    manifest = {
        "info": info,
        "splits": {s: [d.id for d in docs] for s, docs in splits.items()},
        "fingerprints": {s: fingerprint(docs) for s, docs in splits.items()},
        "fingerprint_version": FINGERPRINT_VERSION,
    }
    composed = {d.id: d.meta["composition"] for docs in splits.values() for d in docs if "composition" in d.meta}
    if composed:
        manifest["composition"] = composed
    return manifest


def write_split_file(path: str | os.PathLike, manifest: dict) -> Path:
    atomic_write(path, json.dumps(manifest, indent=1))
    return Path(path)


def read_split_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found (written by training into the run folder)")
    return json.loads(path.read_text(encoding="utf-8"))

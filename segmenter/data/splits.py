"""Deterministic document-level train/val/test splits and the split file that records them."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

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
    train_f, val_f, _ = check_fractions(fractions)
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise ValueError("document ids are not unique; a split needs unique ids")
    order = sorted(docs, key=lambda d: d.id)
    random.Random(seed).shuffle(order)
    n_train, n_val = round(len(order) * train_f), round(len(order) * val_f)
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def fingerprint(docs: Sequence[Document]) -> str:
    """Hash of the documents' ids, units and labels: ids alone can be positional."""
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

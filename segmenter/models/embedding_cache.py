"""On-disk cache of frozen unit embeddings, keyed by the encoder's identity and the unit text.

A frozen sentence encoder gives a unit the same vector every epoch and every run, so
each unique text is encoded once and stored. Layout::

    <root>/<identity hash>/identity.json     what produced these vectors (for people)
    <root>/<identity hash>/shard-<uuid>.pt   keys (N, 32) sha256 of the text, vectors (N, D),
                                             checksums (N,) crc32 of key + vector bytes

Robustness, by construction:
- a different encoder (model, weights, settings) hashes to a different directory, so
  stale vectors can never be served;
- shards are written to a temporary file and renamed into place (segmenter.io), so
  an interrupted run leaves only whole shards (plus a stray ``.tmp`` that is ignored);
  everything written before the interruption is reused;
- every entry carries a checksum; an entry that fails it (or a shard that cannot be
  read) is logged, dropped and recomputed, never trusted.
Several processes (DDP ranks, parallel runs) may share a directory: each writes shards
under fresh names, and a duplicate entry is harmless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from segmenter.io import atomic_file, atomic_write

log = logging.getLogger(__name__)

FORMAT = 1
KEY_BYTES = 32  # sha256 digest of the unit text


def identity_hash(identity: dict[str, Any]) -> str:
    """Short stable hash of an encoder identity (a JSON-serializable dict)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]


@lru_cache(maxsize=1 << 20)
def text_key(text: str) -> bytes:
    """Cache key of a unit's text. Memoised: every training step looks up the same units,
    and hashing them again each step is wasted work on the hot path."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def entry_checksum(key: bytes, vector: Tensor) -> int:
    """crc32 of the key and the vector's bytes: detects a flipped byte in either."""
    return zlib.crc32(vector.numpy().tobytes(), zlib.crc32(key))


class UnitEmbeddingCache:
    """Text -> (D,) vector store, in memory and (when ``root`` is set) on disk.

    ``lookup(texts, encode)`` returns the (N, D) vectors of ``texts``, calling
    ``encode(list_of_new_texts) -> (n, D)`` only for texts never seen under this identity.
    """

    def __init__(
        self,
        *,
        identity: dict[str, Any],
        dim: int,
        root: str | os.PathLike | None = None,
        shard_size: int = 4096,
        max_shards: int = 64,
    ) -> None:
        if dim < 1 or shard_size < 1:
            raise ValueError(f"dim={dim} and shard_size={shard_size} must be >= 1")
        self.identity, self.dim = dict(identity), dim
        self.shard_size, self.max_shards = shard_size, max_shards
        self.dir = Path(root) / identity_hash(self.identity) if root is not None else None
        self._row: dict[bytes, int] = {}
        self._read: set[str] = set()  # shard names already loaded
        self._vectors = torch.empty(0, dim)  # (rows, D), float32, CPU
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "encode_seconds": 0.0}
        if self.dir is not None:
            self._open_dir()
            self.reload()

    def __len__(self) -> int:
        return len(self._row)

    # -- disk -------------------------------------------------------------------------
    def _open_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "identity.json"
            if not meta.exists():
                atomic_write(meta, json.dumps(self.identity, indent=2, sort_keys=True))
        except OSError as e:  # read-only disk, a checkpoint's path from another machine...
            log.warning("embedding cache disabled, cannot write %s (%s): vectors kept in memory only", self.dir, e)
            self.dir = None

    def _read_shard(self, path: Path) -> tuple[Tensor, Tensor] | None:
        """(keys (N, 32), vectors (N, D)) of the entries that pass their checksum, or None
        when the shard is unreadable (then it is deleted: its entries will be recomputed)."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            keys, vectors, sums = blob["keys"], blob["vectors"], blob["checksums"]
            if blob.get("format") != FORMAT or blob.get("identity") != identity_hash(self.identity):
                raise ValueError(f"format/identity {blob.get('format')}/{blob.get('identity')} do not match this cache")
            if keys.shape != (len(sums), KEY_BYTES) or vectors.shape != (len(sums), self.dim):
                raise ValueError(f"shapes keys {tuple(keys.shape)}, vectors {tuple(vectors.shape)}, checksums {len(sums)}")
        except FileNotFoundError:  # removed by another process compacting the cache
            return None
        except Exception as e:  # truncated or garbled file: recompute, never trust
            log.warning("corrupt embedding cache shard %s (%s): deleted, its entries will be recomputed", path, e)
            self.stats["corrupt"] += 1
            path.unlink(missing_ok=True)
            return None
        vectors = vectors.float().contiguous()
        ok = torch.tensor([entry_checksum(bytes(k.tolist()), v) == int(s) for k, v, s in zip(keys, vectors, sums)], dtype=torch.bool)
        if not ok.all():
            bad = int((~ok).sum())
            self.stats["corrupt"] += bad
            log.warning("embedding cache shard %s: %d of %d entries fail their checksum; they will be recomputed", path, bad, len(ok))
            keys, vectors = keys[ok], vectors[ok]
            self._write_shard(keys, vectors, path=path)  # rewrite without them, so the warning is not repeated
        return keys, vectors

    def _write_shard(self, keys: Tensor, vectors: Tensor, path: Path | None = None) -> None:
        if self.dir is None:
            return
        path = path or self.dir / f"shard-{uuid.uuid4().hex}.pt"
        self._read.add(path.name)  # its entries are in memory already
        sums = torch.tensor([entry_checksum(bytes(k.tolist()), v) for k, v in zip(keys, vectors)], dtype=torch.long)
        blob = {"format": FORMAT, "identity": identity_hash(self.identity), "keys": keys, "vectors": vectors, "checksums": sums}
        try:
            with atomic_file(path, "wb") as f:  # readers see the old state or the whole new shard
                torch.save(blob, f)
        except OSError as e:
            log.warning("embedding cache: cannot write %s (%s): vectors kept in memory only", path, e)
            self.dir = None

    def reload(self) -> None:
        """Read the shards of this identity not read yet (e.g. written by another process)."""
        if self.dir is None:
            return
        shards = sorted(self.dir.glob("shard-*.pt"))
        for path in shards:
            if path.name not in self._read and (read := self._read_shard(path)) is not None:
                self._insert(*read)
            self._read.add(path.name)
        if len(shards) > self.max_shards:  # many small shards from lazy, per-batch encoding: merge
            self.compact(shards)

    def compact(self, shards: Sequence[Path]) -> None:
        """Replace ``shards`` by shards of ``shard_size`` entries holding everything in memory."""
        keys = torch.tensor([list(k) for k in self._row], dtype=torch.uint8).view(-1, KEY_BYTES)  # (N, 32)
        vectors = self._vectors[list(self._row.values())]  # (N, D)
        for i in range(0, len(keys), self.shard_size):
            self._write_shard(keys[i : i + self.shard_size], vectors[i : i + self.shard_size])
        if self.dir is not None:  # only once the merged copies are safely written
            for p in shards:
                p.unlink(missing_ok=True)
            log.info("embedding cache %s: compacted %d shards", self.dir, len(shards))

    # -- memory -----------------------------------------------------------------------
    def _insert(self, keys: Tensor, vectors: Tensor) -> None:
        new: dict[bytes, int] = {}  # key -> its row in ``vectors``; first copy wins
        for i, k in enumerate(keys):
            k = bytes(k.tolist())
            if k not in self._row and k not in new:
                new[k] = i
        if not new:
            return
        start = len(self._vectors)
        for j, k in enumerate(new):
            self._row[k] = start + j
        self._vectors = torch.cat((self._vectors, vectors[list(new.values())].float()))  # (rows, D)

    def lookup(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], Tensor],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Tensor:
        """(N, D) vectors of ``texts`` (CPU, float32); new unique texts are encoded in batches
        of ``batch_size`` (longest first), stored every ``shard_size`` entries."""
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._row:
                missing.setdefault(k, t)
        self.stats["hits"] += len(texts) - len(missing)
        if missing:
            self._encode_missing(missing, encode, batch_size, progress)
        return self._vectors[[self._row[k] for k in keys]]  # (N, D)

    def _encode_missing(self, missing: dict[bytes, str], encode, batch_size: int, progress: bool | None) -> None:
        # Longest first: batches of similar lengths waste little padding.
        items = sorted(missing.items(), key=lambda kv: -len(kv[1]))
        self.stats["misses"] += len(items)
        if progress is None:
            progress = len(items) > 4 * batch_size
        start = time.perf_counter()
        pending_keys: list[bytes] = []
        pending_vecs: list[Tensor] = []
        with tqdm(total=len(items), desc="encoding units", unit="unit", disable=not progress, mininterval=2.0) as bar:
            for i in range(0, len(items), batch_size):
                batch = items[i : i + batch_size]
                vecs = encode([t for _, t in batch]).detach().float().cpu()  # (b, D)
                if vecs.shape != (len(batch), self.dim):
                    raise ValueError(f"encoder returned {tuple(vecs.shape)} for {len(batch)} units of width {self.dim}")
                pending_keys += [k for k, _ in batch]
                pending_vecs.append(vecs)
                bar.update(len(batch))
                if len(pending_keys) >= self.shard_size or i + batch_size >= len(items):
                    k = torch.tensor([list(x) for x in pending_keys], dtype=torch.uint8).view(-1, KEY_BYTES)  # (n, 32)
                    v = torch.cat(pending_vecs)  # (n, D)
                    self._insert(k, v)
                    self._write_shard(k, v)
                    pending_keys, pending_vecs = [], []
        secs = time.perf_counter() - start
        self.stats["encode_seconds"] += secs
        if progress:
            log.info("encoded %d new units in %.1f s (%.0f units/s)", len(items), secs, len(items) / max(secs, 1e-9))

"""On-disk cache of frozen unit embeddings, keyed by the encoder's identity and the unit text.

A frozen sentence encoder gives a unit the same vector every epoch and every run, so
each unique text is encoded once and stored. Layout::

    <root>/<identity hash>/identity.json     what produced these vectors (for people)
    <root>/<identity hash>/shard-<uuid>.pt   keys (N, 32) sha256 of the text, vectors (N, D),
                                             checksums (N,) crc32 of key + vector bytes

Robustness, by construction:
- a different encoder (model, weights, settings) hashes to a different directory, so
  stale vectors can never be served;
- shards are written to a temporary file and renamed into place (segmenter.core.io), so
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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from segmenter.core.io import atomic_file, atomic_write
from segmenter.core.progress import Progress

log = logging.getLogger(__name__)

FORMAT = 1
KEY_BYTES = 32  # sha256 digest of the unit text


def identity_hash(identity: dict[str, Any]) -> str:
    """Short stable hash of an encoder identity (a JSON-serializable dict)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def text_key(text: str) -> bytes:
    """Cache key of a unit's text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def entry_checksum(key: bytes, vector: Tensor) -> int:
    """crc32 of the key and the vector's bytes: detects a flipped byte in either."""
    return zlib.crc32(vector.numpy().tobytes(), zlib.crc32(key))


class UnitEmbeddingCache:
    """Text -> (D,) vector store, in memory and (when ``root`` is set) on disk.

    ``lookup(texts, encode)`` returns the (N, D) vectors of ``texts``, calling
    ``encode(list_of_new_texts) -> (n, D)`` only for texts not held under this identity.
    ``max_entries`` bounds the vectors held in memory (None: no bound): past it, the least
    recently used are dropped (and encoded again if they come back), so a process that sees
    endless new text, a server, stays flat.
    """

    def __init__(
        self,
        *,
        identity: dict[str, Any],
        dim: int,
        root: str | os.PathLike | None = None,
        shard_size: int = 4096,
        max_shards: int = 64,
        max_entries: int | None = None,
    ) -> None:
        if dim < 1 or shard_size < 1 or (max_entries is not None and max_entries < 1):
            raise ValueError(f"dim={dim}, shard_size={shard_size} and max_entries={max_entries} must be >= 1")
        self.identity, self.dim = dict(identity), dim
        self.shard_size, self.max_shards, self.max_entries = shard_size, max_shards, max_entries
        self.dir = Path(root) / identity_hash(self.identity) if root is not None else None
        self._row: OrderedDict[bytes, int] = OrderedDict()  # key -> its row in _vectors, least recently used first
        self._used = 0  # rows of _vectors in use (a dropped entry's row is reused)
        self._read: set[str] = set()  # shard names already loaded
        self._vectors = torch.empty(0, dim)  # (capacity, D), float32, CPU
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "evicted": 0, "encode_seconds": 0.0}
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
                raise ValueError(
                    f"shapes keys {tuple(keys.shape)}, vectors {tuple(vectors.shape)}, checksums {len(sums)}"
                )
        except FileNotFoundError:  # removed by another process compacting the cache
            return None
        except Exception as e:  # truncated or garbled file: recompute, never trust
            log.warning("corrupt embedding cache shard %s (%s): deleted, its entries will be recomputed", path, e)
            self.stats["corrupt"] += 1
            path.unlink(missing_ok=True)
            return None
        vectors = vectors.float().contiguous()
        ok = torch.tensor(
            [entry_checksum(bytes(k.tolist()), v) == int(s) for k, v, s in zip(keys, vectors, sums)], dtype=torch.bool
        )
        if not ok.all():
            bad = int((~ok).sum())
            self.stats["corrupt"] += bad
            log.warning(
                "embedding cache shard %s: %d of %d entries fail their checksum; they will be recomputed",
                path,
                bad,
                len(ok),
            )
            keys, vectors = keys[ok], vectors[ok]
            self._write_shard(keys, vectors, path=path)  # rewrite without them, so the warning is not repeated
        return keys, vectors

    def _write_shard(self, keys: Tensor, vectors: Tensor, path: Path | None = None) -> None:
        if self.dir is None:
            return
        path = path or self.dir / f"shard-{uuid.uuid4().hex}.pt"
        self._read.add(path.name)  # its entries are in memory already
        sums = torch.tensor([entry_checksum(bytes(k.tolist()), v) for k, v in zip(keys, vectors)], dtype=torch.long)
        blob = {
            "format": FORMAT,
            "identity": identity_hash(self.identity),
            "keys": keys,
            "vectors": vectors,
            "checksums": sums,
        }
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
        # Many small shards from lazy, per-batch encoding: merge them, unless memory holds
        # fewer entries than the disk (max_entries dropped some), which merging would lose.
        if len(shards) > self.max_shards and self.stats["evicted"] == 0:
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
        if self.max_entries is not None and len(new) > self.max_entries:  # only the last ones can stay
            self.stats["evicted"] += len(new) - self.max_entries
            new = dict(list(new.items())[-self.max_entries :])
        rows = []
        for k in new:
            if self.max_entries is not None and len(self._row) >= self.max_entries:
                _, row = self._row.popitem(last=False)  # the least recently used makes room
                self.stats["evicted"] += 1
            else:
                row, self._used = self._used, self._used + 1
            self._row[k] = row
            rows.append(row)
        if self._used > len(self._vectors):  # grow by doubling: amortised O(1) per entry
            grown = torch.empty(max(self._used, 2 * len(self._vectors)), self.dim)
            grown[: len(self._vectors)] = self._vectors
            self._vectors = grown
        if rows:
            self._vectors[rows] = vectors[list(new.values())].float()

    def lookup(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], Tensor],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Tensor:
        """(N, D) vectors of ``texts`` (CPU, float32); new unique texts are encoded in batches
        of ``batch_size`` (longest first), stored every ``shard_size`` entries. ``progress``:
        log the encoding's progress (INFO lines of this module's logger, seen only where the
        application shows them); None: only for more than 4 batches."""
        keys = [text_key(t) for t in texts]
        out = torch.empty(len(texts), self.dim)  # (N, D)
        missing: dict[bytes, str] = {}
        at, rows = [], []  # positions in texts and rows in _vectors of the hits
        for i, (k, t) in enumerate(zip(keys, texts)):
            row = self._row.get(k)
            if row is None:
                missing.setdefault(k, t)
            else:
                at.append(i)
                rows.append(row)
                self._row.move_to_end(k)  # recently used
        out[at] = self._vectors[rows]
        self.stats["hits"] += len(at)
        if missing:
            found = self._encode_missing(missing, encode, batch_size, progress)
            for i, k in enumerate(keys):
                if k in missing:
                    out[i] = found[k]
        return out

    def _encode_missing(
        self, missing: dict[bytes, str], encode, batch_size: int, progress: bool | None
    ) -> dict[bytes, Tensor]:
        """Encode ``missing`` {key: text}, store the vectors; {key: (D,) vector}."""
        # Longest first: batches of similar lengths waste little padding.
        items = sorted(missing.items(), key=lambda kv: -len(kv[1]))
        self.stats["misses"] += len(items)
        if progress is None:
            progress = len(items) > 4 * batch_size
        start = time.perf_counter()
        pending_keys: list[bytes] = []
        pending_vecs: list[Tensor] = []
        found: dict[bytes, Tensor] = {}
        # Log lines, not a bar: shown where the application set up logging (the scripts), silent in a
        # program that uses the API without configuring it (a server, a notebook's stderr).
        shown = Progress("encoding units", total=len(items), unit="units", log=log) if progress else None
        for i in range(0, len(items), batch_size):
            batch = items[i : i + batch_size]
            vecs = encode([t for _, t in batch]).detach().float().cpu()  # (b, D)
            if vecs.shape != (len(batch), self.dim):
                raise ValueError(f"encoder returned {tuple(vecs.shape)} for {len(batch)} units of width {self.dim}")
            pending_keys += [k for k, _ in batch]
            pending_vecs.append(vecs)
            found.update((k, v) for (k, _), v in zip(batch, vecs))
            if shown is not None:
                shown.advance(len(batch))
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
        return found

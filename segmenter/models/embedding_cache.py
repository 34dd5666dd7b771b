"""On-disk cache of frozen unit embeddings, keyed by the encoder's identity and the unit text.

A frozen sentence encoder gives a unit the same vector every epoch and every run, so
each unique text is encoded once and stored. Layout::

    <root>/<identity hash>/identity.json      what produced these vectors (for people)
    <root>/<identity hash>/shard-<uuid>.bin   a header, then N entries sorted by key:
                                              key prefixes (N,) uint64, keys (N, 32) sha256 of
                                              the text, checksums (N,) crc32 of key + vector
                                              bytes, vectors (N, D) float16

Shards are read memory-mapped (numpy): a lookup binary-searches each shard's key prefixes
and reads only the rows it needs, so RAM does not grow with the number of cached units (the
page cache holds what is used). Vectors are stored as float16 (half the disk of float32);
every vector this cache returns, fresh from the encoder or read back, is rounded to float16
the same way, so a unit's vector is the same whether it was cached or not.

Robustness, by construction:
- a different encoder (model, weights, settings) hashes to a different directory, so
  stale vectors can never be served;
- shards are written to a temporary file and renamed into place (segmenter.core.io), so
  an interrupted run leaves only whole shards (plus a stray ``.tmp`` that is ignored);
  everything written before the interruption is reused;
- every entry carries a checksum, checked whenever the entry is read; an entry that fails
  it is logged, dropped (its shard rewritten without it) and recomputed, never trusted; a
  shard whose header or size is wrong is deleted and its entries recomputed.
Several processes (DDP ranks, parallel runs) may share a directory: each writes shards
under fresh names, and a duplicate entry is harmless. Shards of the earlier format
(``shard-*.pt``, float32 loaded whole) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segmenter.core.io import atomic_file, atomic_write
from segmenter.core.progress import Progress

log = logging.getLogger(__name__)

FORMAT = 2
KEY_BYTES = 32  # sha256 digest of the unit text
MAGIC = b"SEGEMB\x00\x02"
HEADER = struct.Struct("<8sIIQ20s20x")  # magic, format, dim, entries, identity hash; 64 bytes
CHUNK = 65536  # entries copied at a time when shards are merged
# The most entries one compaction merges: it sorts their keys in memory (numpy arrays of keys,
# prefixes and rows), so this bounds its memory whatever the cache's size. Shards of half this or more are
# left as they are; a cache of N entries is searched in at most max_shards small shards plus
# about N / (MERGE_ENTRIES / 2) large ones.
MERGE_ENTRIES = 500_000


def identity_hash(identity: dict[str, Any]) -> str:
    """Short stable hash of an encoder identity (a JSON-serializable dict)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def text_key(text: str) -> bytes:
    """Cache key of a unit's text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def entry_checksum(key: bytes, vector: np.ndarray) -> int:
    """crc32 of the key and the (D,) float16 vector's bytes: detects a flipped byte in either."""
    return zlib.crc32(np.ascontiguousarray(vector, dtype=np.float16).tobytes(), zlib.crc32(key))


def _prefixes(keys: np.ndarray) -> np.ndarray:
    """(N, 32) uint8 keys -> (N,) uint64 of their first 8 bytes, ordered as the keys are."""
    return np.ascontiguousarray(keys[:, :8]).view(">u8").reshape(-1).astype(np.uint64)


class Shard:
    """One shard file, memory-mapped (nothing is read until an entry is looked up)."""

    def __init__(self, path: Path, *, dim: int, identity: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            raise ValueError(f"{len(head)} bytes, shorter than the header")
        magic, fmt, d, n, ident = HEADER.unpack(head)
        if magic != MAGIC or fmt != FORMAT or d != dim or ident.decode() != identity:
            raise ValueError(f"header format {fmt}, width {d}, identity {ident!r} do not match this cache")
        self.n = n
        sizes = {"prefix": 8 * n, "keys": KEY_BYTES * n, "sums": 4 * n, "vectors": 2 * dim * n}
        expected = HEADER.size + sum(sizes.values())
        if path.stat().st_size != expected:
            raise ValueError(f"{path.stat().st_size} bytes, expected {expected} for {n} entries")
        with open(path, "rb") as f:  # one read-only map of the file; the arrays are views of it
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        at = HEADER.size
        self.prefix = np.frombuffer(self._map, dtype="<u8", count=n, offset=at)  # (n,)
        at += sizes["prefix"]
        self.keys = np.frombuffer(self._map, dtype=np.uint8, count=n * KEY_BYTES, offset=at).reshape(n, KEY_BYTES)
        at += sizes["keys"]
        self.sums = np.frombuffer(self._map, dtype="<u4", count=n, offset=at)  # (n,)
        at += sizes["sums"]
        self.vectors = np.frombuffer(self._map, dtype="<f2", count=n * dim, offset=at).reshape(n, dim)

    def release(self) -> None:
        """Drop the pages read so far from this process's resident set: they stay in the page
        cache and are mapped again when next read, so a pass over a cache larger than memory
        (a warm-up, a compaction) keeps the process's memory flat."""
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux, macOS
            self._map.madvise(mmap.MADV_DONTNEED)

    def find(self, prefixes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the query, rows here) of the query keys this shard holds."""
        idx = np.minimum(np.searchsorted(self.prefix, prefixes), self.n - 1)
        hit = np.flatnonzero(self.prefix[idx] == prefixes)
        if len(hit):
            same = (self.keys[idx[hit]] == keys[hit]).all(axis=1)
            hit = hit[same]
        return hit, idx[hit]

    def valid(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: the rows whose checksum holds (read ``CHUNK`` rows at a time,
        their pages released after each)."""
        out = np.empty(len(rows), dtype=bool)
        for lo in range(0, len(rows), CHUNK):
            part = rows[lo : lo + CHUNK].tolist()
            out[lo : lo + len(part)] = [
                entry_checksum(self.keys[r].tobytes(), self.vectors[r]) == int(self.sums[r]) for r in part
            ]
            if len(rows) > CHUNK:
                self.release()
        return out


def write_shard(path: Path, parts: Sequence[tuple[Any, np.ndarray]], *, dim: int, identity: str) -> int:
    """Write the entries ``parts`` = [(source, rows)]: rows of a Shard, or of a (keys (n, 32),
    vectors (n, D)) pair, already free of duplicate keys; sorted by key prefix, copied a
    chunk at a time. Returns the number of entries."""
    order_src, order_row, order_prefix = [], [], []
    for i, (src, rows) in enumerate(parts):
        keys = src.keys if isinstance(src, Shard) else src[0]
        prefix = src.prefix[rows] if isinstance(src, Shard) else _prefixes(keys[rows])
        order_src.append(np.full(len(rows), i, dtype=np.int32))
        order_row.append(np.asarray(rows, dtype=np.int64))
        order_prefix.append(np.asarray(prefix, dtype=np.uint64))
    src_of, row_of, prefix = (np.concatenate(a) for a in (order_src, order_row, order_prefix))
    order = np.argsort(prefix, kind="stable")
    src_of, row_of, prefix = src_of[order], row_of[order], prefix[order]
    n = len(prefix)

    def gather(field: str, lo: int, hi: int) -> np.ndarray:
        s, r = src_of[lo:hi], row_of[lo:hi]
        out = None
        for i, (src, _) in enumerate(parts):
            sel = np.flatnonzero(s == i)
            if not len(sel):
                continue
            if isinstance(src, Shard):
                values = {"keys": src.keys, "vectors": src.vectors}[field][r[sel]]
            else:
                values = {"keys": src[0], "vectors": src[1]}[field][r[sel]]
            if out is None:
                out = np.empty((hi - lo, *values.shape[1:]), dtype=values.dtype)
            out[sel] = values
        return out

    def release() -> None:  # the source shards' pages read for this chunk leave the resident set
        for src, _ in parts:
            if isinstance(src, Shard):
                src.release()

    with atomic_file(path, "wb") as f:  # readers see the old state or the whole new shard
        f.write(HEADER.pack(MAGIC, FORMAT, dim, n, identity.encode()))
        f.write(prefix.astype("<u8").tobytes())
        for lo in range(0, n, CHUNK):
            f.write(gather("keys", lo, min(n, lo + CHUNK)).astype(np.uint8).tobytes())
            release()
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            keys, vectors = gather("keys", lo, hi), gather("vectors", lo, hi).astype("<f2")
            sums = [entry_checksum(k.tobytes(), v) for k, v in zip(keys, vectors)]
            f.write(np.asarray(sums, dtype="<u4").tobytes())
            release()
        for lo in range(0, n, CHUNK):
            f.write(gather("vectors", lo, min(n, lo + CHUNK)).astype("<f2").tobytes())
            release()
    return n


class UnitEmbeddingCache:
    """Text -> (D,) vector store, on disk (when ``root`` is set, memory-mapped) or in memory.

    ``lookup(texts, encode)`` returns the (N, D) vectors of ``texts``, calling
    ``encode(list_of_new_texts) -> (n, D)`` only for texts not held under this identity.
    Without a disk (``root`` None, or not writable), vectors are held in memory; there
    ``max_entries`` bounds them (None: no bound): past it, the least recently used are
    dropped (and encoded again if they come back), so a process that sees endless new text,
    a server, stays flat.
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
        self._row: OrderedDict[bytes, int] = OrderedDict()  # in memory: key -> its row in _vectors, LRU first
        self._used = 0  # rows of _vectors in use (a dropped entry's row is reused)
        self._vectors = torch.empty(0, dim)  # (capacity, D), float32, CPU: the memory store
        self._shards: dict[str, Shard] = {}  # name -> the shard, memory-mapped
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "evicted": 0, "encode_seconds": 0.0}
        if self.dir is not None:
            self._open_dir()
            self.reload()

    def __len__(self) -> int:
        return len(self._row) + sum(s.n for s in self._shards.values())

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are not pickled (they would be copied whole): a DataLoader worker
        # opens the shards again.
        return {**self.__dict__, "_shards": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.dir is not None:
            self.reload()

    # -- disk -------------------------------------------------------------------------
    @property
    def _ident(self) -> str:
        return identity_hash(self.identity)

    def _open_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "identity.json"
            if not meta.exists():
                atomic_write(meta, json.dumps(self.identity, indent=2, sort_keys=True))
        except OSError as e:  # read-only disk, a checkpoint's path from another machine...
            log.warning("embedding cache disabled, cannot write %s (%s): vectors kept in memory only", self.dir, e)
            self.dir = None

    def _open_shard(self, path: Path) -> Shard | None:
        try:
            return Shard(path, dim=self.dim, identity=self._ident)
        except FileNotFoundError:  # removed by another process compacting the cache
            return None
        except Exception as e:  # truncated or garbled file: recompute, never trust
            log.warning("corrupt embedding cache shard %s (%s): deleted, its entries will be recomputed", path, e)
            self.stats["corrupt"] += 1
            path.unlink(missing_ok=True)
            return None

    def reload(self) -> None:
        """Open the shards of this identity not open yet (e.g. written by another process)."""
        if self.dir is None:
            return
        paths = sorted(self.dir.glob("shard-*.bin"))
        for path in paths:
            if path.name not in self._shards and (shard := self._open_shard(path)) is not None and shard.n:
                self._shards[path.name] = shard
        for name in set(self._shards) - {p.name for p in paths}:  # compacted away by another process
            del self._shards[name]
        if len(self._small()) > self.max_shards:
            self.compact()

    def _small(self) -> list[Shard]:
        """The shards a compaction may merge (smaller than half of ``MERGE_ENTRIES``), smallest first."""
        return sorted((s for s in self._shards.values() if s.n < MERGE_ENTRIES // 2), key=lambda s: s.n)

    def compact(self) -> None:
        """Merge small shards (many come from lazy, per-batch encoding), the smallest first, at
        most ``MERGE_ENTRIES`` entries per merge, until at most ``max_shards`` small ones are left."""
        while len(small := self._small()) > self.max_shards:
            chosen, total = [], 0
            for shard in small:
                if len(chosen) >= 2 and total + shard.n > MERGE_ENTRIES:
                    break
                chosen.append(shard)
                total += shard.n
            if not self._merge(chosen):
                return

    def _merge(self, shards: list[Shard]) -> bool:
        """Write ``shards``' entries (each key once) into one new shard that replaces them."""
        # Each key once, the first shard's copy: the first occurrence of each key (32 bytes,
        # seen as one numpy value) among the shards' keys end to end.
        keys = np.concatenate([s.keys for s in shards]).view(f"V{KEY_BYTES}").reshape(-1)  # (N,)
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        del keys
        for shard in shards:
            shard.release()
        parts, at = [], 0
        for shard in shards:
            rows = np.flatnonzero(first[at : at + shard.n])
            at += shard.n
            parts.append((shard, rows[shard.valid(rows)]))
        path = self.dir / f"shard-{uuid.uuid4().hex}.bin"
        try:
            write_shard(path, parts, dim=self.dim, identity=self._ident)
        except OSError as e:
            log.warning("embedding cache: cannot compact into %s (%s)", path, e)
            return False
        for shard in shards:  # only once the merged copy is safely written
            shard.path.unlink(missing_ok=True)
            del self._shards[shard.path.name]
        self._shards[path.name] = Shard(path, dim=self.dim, identity=self._ident)
        log.info("embedding cache %s: compacted %d shards", self.dir, len(shards))
        return True

    def release(self) -> None:
        """Drop the shards' pages read so far from the resident set (``Shard.release``)."""
        for shard in self._shards.values():
            shard.release()

    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """New entries (keys (n, 32) uint8, vectors (n, D) float16 for a shard, float32 for
        memory): a new shard, or memory."""
        if self.dir is not None:
            unique = np.unique(keys, axis=0, return_index=True)[1]
            path = self.dir / f"shard-{uuid.uuid4().hex}.bin"
            try:
                write_shard(path, [((keys, vectors), np.sort(unique))], dim=self.dim, identity=self._ident)
                self._shards[path.name] = Shard(path, dim=self.dim, identity=self._ident)
                if len(self._small()) > self.max_shards:
                    self.compact()
                return
            except OSError as e:
                log.warning("embedding cache: cannot write %s (%s): vectors kept in memory only", path, e)
                self.dir = None
        self._insert(keys, vectors)

    def _repair(self, shard: Shard) -> None:
        """Rewrite a shard without the entries that fail their checksum (so the warning is
        not repeated); they will be recomputed."""
        rows = np.arange(shard.n)
        ok = shard.valid(rows)
        bad = int((~ok).sum())
        self.stats["corrupt"] += bad
        log.warning(
            "embedding cache shard %s: %d of %d entries fail their checksum; they will be recomputed",
            shard.path,
            bad,
            shard.n,
        )
        del self._shards[shard.path.name]
        if ok.any():
            write_shard(shard.path, [(shard, rows[ok])], dim=self.dim, identity=self._ident)
            self._shards[shard.path.name] = Shard(shard.path, dim=self.dim, identity=self._ident)
        else:
            shard.path.unlink(missing_ok=True)

    def _read_disk(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``keys`` found on disk, their (n, D) float32 vectors)."""
        found = np.zeros(len(keys), dtype=bool)
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        if not len(keys):
            return np.flatnonzero(found), out[:0]
        prefixes = _prefixes(keys)
        for shard in list(self._shards.values()):
            todo = np.flatnonzero(~found)
            if not len(todo):
                break
            at, rows = shard.find(prefixes[todo], keys[todo])
            if not len(at):
                continue
            ok = shard.valid(rows)
            if not ok.all():
                self._repair(shard)
                at, rows = at[ok], rows[ok]
            pos = todo[at]
            out[pos] = shard.vectors[rows]
            found[pos] = True
        pos = np.flatnonzero(found)
        return pos, out[pos]

    # -- memory -----------------------------------------------------------------------
    def _insert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        new: dict[bytes, int] = {}  # key -> its row in ``vectors``; first copy wins
        for i, k in enumerate(map(bytes, keys)):
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
            self._vectors[rows] = torch.from_numpy(vectors[list(new.values())].astype(np.float32))

    def lookup(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], Tensor],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Tensor:
        """(N, D) vectors of ``texts`` (CPU, float32; float16 values where stored on disk); new unique texts
        are encoded in batches of ``batch_size`` (longest first), stored every ``shard_size``
        entries. ``progress``: log the encoding's progress (INFO lines of this module's logger,
        seen only where the application shows them); None: only for more than 4 batches."""
        keys = [text_key(t) for t in texts]
        out = torch.empty(len(texts), self.dim)  # (N, D)
        at, rows, rest = [], [], []  # memory hits: positions in texts and rows in _vectors; the others
        for i, k in enumerate(keys):
            row = self._row.get(k)
            if row is None:
                rest.append(i)
            else:
                at.append(i)
                rows.append(row)
                self._row.move_to_end(k)  # recently used
        out[at] = self._vectors[rows]
        if rest and self._shards:
            key_array = np.frombuffer(b"".join(keys[i] for i in rest), dtype=np.uint8).reshape(-1, KEY_BYTES)
            pos, vectors = self._read_disk(key_array)
            hit = [rest[p] for p in pos.tolist()]
            out[hit] = torch.from_numpy(vectors)
            at += hit
            found = set(hit)
            rest = [i for i in rest if i not in found]
        self.stats["hits"] += len(at)
        if rest:
            missing: dict[bytes, str] = {}
            for i in rest:
                missing.setdefault(keys[i], texts[i])
            new = self._encode_missing(missing, encode, batch_size, progress)
            for i in rest:
                out[i] = new[keys[i]]
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
        pending_vecs: list[np.ndarray] = []
        found: dict[bytes, Tensor] = {}
        # Log lines, not a bar: shown where the application set up logging (the scripts), silent in a
        # program that uses the API without configuring it (a server, a notebook's stderr).
        shown = Progress("encoding units", total=len(items), unit="units", log=log) if progress else None
        for i in range(0, len(items), batch_size):
            batch = items[i : i + batch_size]
            vecs = encode([t for _, t in batch]).detach().float().cpu()  # (b, D)
            if vecs.shape != (len(batch), self.dim):
                raise ValueError(f"encoder returned {tuple(vecs.shape)} for {len(batch)} units of width {self.dim}")
            # (b, D): what is stored, and what is returned. On disk float16 (half the bytes of a
            # corpus's vectors, and what a later run reads back, so the first run returns the same);
            # a memory-only cache (inference) keeps the encoder's float32 vectors as they are.
            kept = vecs.numpy().astype(np.float16 if self.dir is not None else np.float32)
            pending_keys += [k for k, _ in batch]
            pending_vecs.append(kept)
            found.update((k, torch.from_numpy(v.astype(np.float32))) for (k, _), v in zip(batch, kept))
            if shown is not None:
                shown.advance(len(batch))
            if len(pending_keys) >= self.shard_size or i + batch_size >= len(items):
                k = np.frombuffer(b"".join(pending_keys), dtype=np.uint8).reshape(-1, KEY_BYTES)  # (n, 32)
                self._store(k, np.concatenate(pending_vecs))  # (n, D)
                pending_keys, pending_vecs = [], []
        secs = time.perf_counter() - start
        self.stats["encode_seconds"] += secs
        if progress:
            log.info("encoded %d new units in %.1f s (%.0f units/s)", len(items), secs, len(items) / max(secs, 1e-9))
        return found

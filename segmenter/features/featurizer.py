"""Units (strings) -> the tensors a network reads, outside the network.

A ``UnitFeature`` is one kind of input: it turns one document's units into named tensors
(``__call__``) and batches the tensors of several documents (``collate``). A ``Featurizer``
is the set a network needs, which it declares itself: every module of the network that
reads text has a ``unit_features()`` method naming what it needs with its settings
(``Featurizer.for_net``). A network rebuilt from a checkpoint's config therefore gets the
same featurizer it was trained with, and the two cannot disagree on a setting.

Two layouts leave ``collate``:

- per unit of the batch, flattened in document order (N = sum of the documents' lengths):
  what encoders map to (N, D) vectors, which the network scatters into (B, T, D) by the
  mask (hashed feature ids, frozen vectors, word pieces);
- padded to (B, T, ...) with zeros (surface recurrence features).

Everything here is plain Python and torch on the CPU, and picklable: a DataLoader runs it
in its workers. Nothing is memoised at module level; the one cache, of frozen sentence
vectors, is owned by its ``FrozenVectors`` and bounded (``max_entries``).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from segmenter.core.progress import Progress
from segmenter.features.text import char_ngrams, hashed_features
from segmenter.inference.settings import check_minilm_dtype
from segmenter.models.recurrence import recurrence_features

log = logging.getLogger(__name__)

MASK = "mask"  # (B, T) True at real units: the one key every batch has
WARM_CHUNK = 8192  # units a warm-up holds at a time: their (8192, 384) float32 vectors are 12.6 MB


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """``items`` as lists of at most ``size``, read lazily: one list held at a time."""
    if size < 1:
        raise ValueError(f"chunk size={size} must be >= 1")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@runtime_checkable
class UnitFeature(Protocol):
    """One kind of network input made from a document's units."""

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        """One document's n units -> named tensors whose first dimension is n."""
        ...

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        """The tensors of B documents (T: the longest one's length) -> batched tensors."""
        ...

    def config(self) -> dict[str, Any]:
        """Plain data that says what this feature computes (its kind and settings)."""
        ...


def _pad(rows: Sequence[Tensor], t: int) -> Tensor:
    """B tensors (n_b, ...) -> (B, T, ...), zeros past each document's end."""
    out = rows[0].new_zeros(len(rows), t, *rows[0].shape[1:])
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out


class HashedBags:
    """Each unit's hashed word, bigram and character n-gram ids (``HashedNgramEncoder``)."""

    def __init__(self, *, num_buckets: int, char_ngram: int) -> None:
        if num_buckets < 1 or char_ngram < 0:
            raise ValueError(
                f"need num_buckets >= 1 and char_ngram >= 0; got num_buckets={num_buckets}, char_ngram={char_ngram}"
            )
        self.num_buckets, self.char_ngram = num_buckets, char_ngram

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        bags = [hashed_features(u, self.num_buckets, self.char_ngram) for u in units]
        return {
            "hashed_ids": torch.tensor([i for b in bags for i in b], dtype=torch.long),  # (F,) every unit's ids in turn
            "hashed_sizes": torch.tensor([len(b) for b in bags], dtype=torch.long),  # (n,) ids per unit, >= 1
        }

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        return {k: torch.cat([d[k] for d in docs]) for k in ("hashed_ids", "hashed_sizes")}  # (F,), (N,)

    def config(self) -> dict[str, Any]:
        return {"kind": "hashed", "num_buckets": self.num_buckets, "char_ngram": self.char_ngram}


class SurfaceRecurrence:
    """The surface view of ``SelfSimilarity``: recurrence features of each unit's character
    n-gram counts in its document. They depend on the text alone, so they are computed here
    once per document, not by the network at every step."""

    def __init__(self, *, ngram: int, buckets: int, thresholds: Sequence[float], stripe: int) -> None:
        if ngram < 1 or buckets < 1 or stripe < 0 or not thresholds:
            raise ValueError(
                f"need ngram >= 1, buckets >= 1, stripe >= 0 and thresholds; got ngram={ngram}, "
                f"buckets={buckets}, stripe={stripe}, thresholds={list(thresholds)}"
            )
        self.ngram, self.buckets, self.stripe = ngram, buckets, stripe
        self.thresholds = tuple(float(x) for x in sorted(thresholds))

    def counts(self, units: Sequence[str]) -> Tensor:
        """(n, buckets) counts of each unit's hashed character n-grams."""
        grams = [char_ngrams(unit, self.ngram, self.buckets) for unit in units]
        rows = torch.repeat_interleave(torch.arange(len(units)), torch.tensor([len(g) for g in grams]))
        cols = torch.tensor([x for g in grams for x in g], dtype=torch.long)
        return torch.zeros(len(units), self.buckets).index_put_((rows, cols), torch.ones(len(cols)), accumulate=True)

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        v = self.counts(units)[None]  # (1, n, buckets)
        mask = torch.ones(1, len(units), dtype=torch.bool)
        return {"surface": recurrence_features(v, mask, thresholds=self.thresholds, stripe=self.stripe)[0]}  # (n, P)

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        return {"surface": _pad([d["surface"] for d in docs], t)}  # (B, T, P), 0 at padding

    def config(self) -> dict[str, Any]:
        return {
            "kind": "surface",
            "ngram": self.ngram,
            "buckets": self.buckets,
            "thresholds": list(self.thresholds),
            "stripe": self.stripe,
        }


class FrozenVectors:
    """Frozen MiniLM sentence vectors (384-d) of each unit, looked up in an embedding cache
    that this object owns (on disk under ``cache_dir``, and in memory up to ``max_entries``
    vectors, the least recently used dropped first; None: no bound). A unit missing from it
    is encoded, in batches of ``batch_size`` units of similar length. ``dtype``: MiniLM's
    weights and activations while encoding: ``float32`` (exact), or ``bfloat16``, about twice
    as fast on a CPU that multiplies bfloat16 natively (AVX-512 BF16, AMX), and emulated on
    one that does not (not measured here: expect it slower); its vectors differ from float32's by a cosine under 1e-4
    (docs/encoders.md) and are cached apart from them."""

    def __init__(
        self,
        *,
        model_dir: str | Path,
        max_seq_length: int,
        batch_size: int = 64,
        cache_dir: str | None = None,
        max_entries: int | None = None,
        progress: bool | None = None,
        dtype: str = "float32",
    ) -> None:
        from segmenter.models.minilm import DISTRIBUTION, MINILM_DIM, MODEL_NAME, model_dir_hash

        if batch_size < 1 or not 1 <= max_seq_length <= 512:
            raise ValueError(f"batch_size={batch_size} must be >= 1 and max_seq_length={max_seq_length} in [1, 512]")
        check_minilm_dtype(dtype)
        self.model_dir, self.max_seq_length, self.batch_size = Path(model_dir), max_seq_length, batch_size
        self.progress, self.dim, self.dtype = progress, MINILM_DIM, dtype
        identity = {
            "model": MODEL_NAME,
            "package": f"{DISTRIBUTION}=={importlib.metadata.version(DISTRIBUTION)}",
            # Hashing the 90 MB of files only matters for vectors kept on disk: a cache in
            # memory lives and dies with the files it was filled from.
            "files_sha256": model_dir_hash(self.model_dir) if cache_dir is not None else None,
            "max_seq_length": max_seq_length,
            # Only where it is not float32, so the float32 vectors cached before keep their key.
            **({"dtype": dtype} if dtype != "float32" else {}),
        }
        from segmenter.models.embedding_cache import UnitEmbeddingCache

        self.cache = UnitEmbeddingCache(identity=identity, dim=MINILM_DIM, root=cache_dir, max_entries=max_entries)
        self._model = None

    def model(self):
        """The frozen MiniLM, loaded on first use and kept by this featurizer (not pickled:
        each DataLoader worker loads its own)."""
        if self._model is None:
            from segmenter.models.bert import load_minilm

            model = load_minilm(self.model_dir)  # loaded afresh: this featurizer's own
            self._model = model.to(torch.bfloat16) if self.dtype == "bfloat16" else model
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def _encode(self, texts: list[str]) -> Tensor:
        # The plain-torch MiniLM (segmenter.models.bert): the same vectors as
        # sentence-transformers without importing transformers (seconds of cold start).
        model = self.model()
        forward = (lambda ids, mask: model(ids, mask).float()) if self.dtype == "bfloat16" else None
        return model.encode(
            texts, batch_size=len(texts), max_seq_length=self.max_seq_length, forward=forward
        )  # (n, 384)

    def vectors(self, units: Sequence[str], *, progress: bool | None = None) -> Tensor:
        """(n, 384) unit-length sentence vectors, CPU float32."""
        progress = self.progress if progress is None else progress
        return self.cache.lookup(units, self._encode, batch_size=self.batch_size, progress=progress)

    def warm(self, units: Iterable[str], *, chunk_size: int = WARM_CHUNK) -> None:
        """Encode (or read from disk) every unit ahead of training, its progress logged.
        ``units`` (an iterator will do) is read lazily, ``chunk_size`` at a time: a corpus's
        40M sentences are never held, nor their vectors; units the cache holds (from an
        earlier chunk or run) are not encoded again."""
        self.cache.reload()  # pick up what other processes (DDP rank 0) wrote
        shown = (
            None if self.progress is False else Progress("warming the vector cache", total=None, unit="units", log=log)
        )
        start, misses, done = time.perf_counter(), self.cache.stats["misses"], 0
        for chunk in chunks(units, chunk_size):
            self.cache.lookup(chunk, self._encode, batch_size=self.batch_size, progress=False)
            self.cache.release()  # the shards' pages this chunk read: a 40M-unit cache is not mapped in whole
            done += len(chunk)
            if shown is not None:
                shown.advance(len(chunk))
        if shown is not None:
            new = self.cache.stats["misses"] - misses
            log.info("vector cache warm: %d units, %d newly encoded, %.1f s", done, new, time.perf_counter() - start)

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        return {"minilm_vectors": self.vectors(units)}  # (n, 384)

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        return {"minilm_vectors": torch.cat([d["minilm_vectors"] for d in docs])}  # (N, 384)

    def config(self) -> dict[str, Any]:
        extra = {"dtype": self.dtype} if self.dtype != "float32" else {}
        return {"kind": "minilm_vectors", "max_seq_length": self.max_seq_length, **extra}


class StaticVectors:
    """Static sentence vectors of each unit (model2vec): the mean of its word pieces' fixed
    vectors, unit length. A table lookup, not a network: thousands of units per second on
    one core, so nothing is cached. ``model_dir``: a model2vec folder (``config.json``,
    ``model.safetensors``, ``tokenizer.json``); ``max_length``: word pieces kept per unit."""

    def __init__(self, *, model_dir: str | Path, max_length: int = 512) -> None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1")
        self.model_dir, self.max_length = Path(model_dir), max_length
        self._model = None

    def model(self):
        """The static model, loaded on first use and kept (not pickled: each DataLoader
        worker loads its own, in well under a second)."""
        if self._model is None:
            from model2vec import StaticModel

            self._model = StaticModel.from_pretrained(self.model_dir, normalize=True)
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    @property
    def dim(self) -> int:
        return int(self.model().dim)

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        # One process per caller: model2vec's own worker pool would fork inside DataLoader
        # workers and servers.
        v = self.model().encode(list(units), max_length=self.max_length, use_multiprocessing=False)  # (n, dim)
        return {"static_vectors": torch.from_numpy(v).float()}

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        return {"static_vectors": torch.cat([d["static_vectors"] for d in docs])}  # (N, dim)

    def config(self) -> dict[str, Any]:
        return {"kind": "static_vectors", "model": self.model_dir.name, "max_length": self.max_length}


class WordPieces:
    """MiniLM's word-piece ids of each unit, for a network that trains MiniLM itself."""

    def __init__(self, *, model_dir: str | Path, max_seq_length: int) -> None:
        self.model_dir, self.max_seq_length = Path(model_dir), max_seq_length
        self._model = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        if self._model is None:  # its tokenizer, loaded once per process that featurizes
            from segmenter.models.bert import load_minilm

            self._model = load_minilm(self.model_dir)
        ids = self._model.token_ids(units, max_seq_length=self.max_seq_length)
        length = max(len(i) for i in ids)
        tokens = torch.zeros(len(ids), length, dtype=torch.long)  # (n, L), 0 = [PAD]
        for row, i in enumerate(ids):
            tokens[row, : len(i)] = torch.tensor(i, dtype=torch.long)
        return {"word_pieces": tokens}

    def collate(self, docs: Sequence[Mapping[str, Tensor]], t: int) -> dict[str, Tensor]:
        length = max(d["word_pieces"].shape[1] for d in docs)
        padded = [nn.functional.pad(d["word_pieces"], (0, length - d["word_pieces"].shape[1])) for d in docs]
        return {"word_pieces": torch.cat(padded)}  # (N, L)

    def config(self) -> dict[str, Any]:
        return {"kind": "word_pieces", "max_seq_length": self.max_seq_length}


class Featurizer:
    """The inputs of one network: ``featurizer(units)`` gives one document's tensors,
    ``collate`` batches documents' tensors with their mask, ``batch`` does both."""

    def __init__(self, *, features: Sequence[UnitFeature]) -> None:
        self.features = list(features)
        keys = [f.config()["kind"] for f in self.features]
        if len(set(keys)) != len(keys):
            raise ValueError(f"one feature of each kind; got {keys}")

    @classmethod
    def for_net(cls, net: nn.Module, **settings: Any) -> Featurizer:
        """What ``net``'s modules declare they read (each module with a ``unit_features``
        method, in module order). ``settings`` go to those methods: the loading side's
        choices, such as ``cache_dir`` and ``cache_entries`` for frozen vectors."""

        def declared(module: nn.Module) -> list[UnitFeature]:
            if hasattr(module, "unit_features"):  # it speaks for its submodules too (a hybrid encoder)
                return list(module.unit_features(**settings))
            return [f for child in module.children() for f in declared(child)]

        return cls(features=declared(net))

    def feature(self, kind: str) -> UnitFeature | None:
        return next((f for f in self.features if f.config()["kind"] == kind), None)

    def warm(self, units: Iterable[str], *, chunk_size: int = WARM_CHUNK) -> None:
        """Let each feature that precomputes (frozen vectors) see every unit ahead of training:
        ``units`` (an iterator will do) read once, ``chunk_size`` units at a time."""
        warming = [f for f in self.features if hasattr(f, "warm")]
        if len(warming) == 1:  # it reads the units in chunks itself, and logs its progress
            warming[0].warm(units, chunk_size=chunk_size)
            return
        for chunk in chunks(units, chunk_size):
            for f in warming:
                f.warm(chunk, chunk_size=chunk_size)

    def __call__(self, units: Sequence[str]) -> dict[str, Tensor]:
        """One document (at least one unit) -> its named tensors."""
        if not units:
            raise ValueError("a document needs at least one unit, got none")
        out: dict[str, Tensor] = {}
        for f in self.features:
            out.update(f(units))
        out["length"] = torch.tensor(len(units))
        return out

    def collate(self, docs: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """B documents' tensors -> the batch the network reads: each feature's tensors and
        ``mask`` (B, T), True at real units."""
        lengths = torch.stack([d["length"] for d in docs])  # (B,)
        t = int(lengths.max())
        out = {MASK: torch.arange(t)[None, :] < lengths[:, None]}  # (B, T)
        for f in self.features:
            out.update(f.collate(docs, t))
        return out

    def batch(self, docs: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """B documents of units -> the network's batch."""
        return self.collate([self(d) for d in docs])

    def config(self) -> list[dict[str, Any]]:
        return [f.config() for f in self.features]

"""Chunkers compared on documents with known topic boundaries (scripts/compare_chunkers.py,
conf/compare_chunkers.yaml, the table in docs/chunking.md).

Every chunker gets each document as text, its sentences joined by line breaks, and returns
chunks as strings. A chunk's end is mapped back to a sentence boundary through the stream of
non-whitespace characters (every chunker here keeps those in order, whatever it does with
spaces), snapped to the nearest sentence end, so chunkers that cut inside a sentence (the
fixed-size splitter) are scored at their nearest sentence boundary. Then Pk and WindowDiff
(segmenter.evaluation.evaluate.score), the share of chunks over ``max_tokens`` tokens of
``tokenizer``, and documents per second after a warm-up call (one chunker after another on
the same machine, so compare them as ratios within one run).
"""

from __future__ import annotations

import bisect
import functools
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from segmenter.core.document import Document, boundary_labels
from segmenter.core.limits import token_counter
from segmenter.data.formats import read_separator_files
from segmenter.evaluation.evaluate import score

log = logging.getLogger(__name__)

Chunker = Callable[[Sequence[str]], list[list[str]]]  # texts -> each text's chunks


def document_text(doc: Document) -> str:
    """What every chunker is given: the document's sentences joined by line breaks."""
    return "\n".join(doc.units)


def chunk_slots(units: Sequence[str], chunks: Sequence[str]) -> list[int]:
    """N - 1 boundary slots for ``units`` from ``chunks`` of their text: 1 after the unit
    whose end is nearest to each chunk's end (counted in non-whitespace characters).
    ValueError when the chunks do not hold the text's non-whitespace characters."""
    ends, total = [], 0  # cumulative non-whitespace characters at each unit's end
    for unit in units:
        total += len("".join(unit.split()))
        ends.append(total)
    got = sum(len("".join(c.split())) for c in chunks)
    if got != total:
        raise ValueError(
            f"the chunks hold {got} non-whitespace characters, the text {total}: a chunker changed the text"
        )
    slots, pos = [0] * max(len(units) - 1, 0), 0
    for chunk in chunks[:-1]:
        pos += len("".join(chunk.split()))
        k = bisect.bisect_left(ends, pos)  # ends[k - 1] < pos <= ends[k]
        if k > 0 and pos - ends[k - 1] < ends[k] - pos:
            k -= 1
        if k < len(slots):
            slots[k] = 1
    return slots


class SegmenterChunks:
    """A segmenter model as a chunker: ``segment`` with the given settings on each text.
    ``cache_dir``: where a MiniLM encoder keeps its sentence vectors (None: memory only)."""

    def __init__(self, *, segmenter: Any, cache_dir: str | None = None, **settings: Any) -> None:
        from segmenter.integrations import Chunking, load_segmenter

        self.segmenter, self.chunking = load_segmenter(segmenter, cache_dir=cache_dir), Chunking(**settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [[t[s:e] for s, e in spans] for t, spans in zip(texts, self.chunking.spans(self.segmenter, texts))]

    def setting(self) -> str:
        parts = [] if self.chunking.threshold is None else [f"threshold {self.chunking.threshold:g}"]
        if self.chunking.length_prior not in (None, False):
            parts.append(f"length prior {self.chunking.length_prior}")
        return ", ".join(parts) or "default"


class MiniLMEmbeddings:
    """all-MiniLM-L6-v2 from the package that ships it (segmenter.models.minilm), offline:
    what both semantic chunkers embed text with, each text looked up in the embedding cache
    the topic model's sentence vectors use (segmenter.features.FrozenVectors; on disk under
    ``cache_dir``, None: memory only), so a threshold grid or a rerun encodes nothing twice.
    sentence-transformers' model stays for its tokenizer (Chonkie counts tokens with it) and
    its ``max_seq_length`` (256 word pieces), which the cached vectors are encoded at."""

    def __init__(self, *, cache_dir: str | None = None, model: Any = None) -> None:
        """``model``: a sentence-transformers all-MiniLM-L6-v2 already loaded (None: load it)."""
        from segmenter.features.featurizer import FrozenVectors
        from segmenter.models.minilm import load_sentence_transformer, require_minilm

        self.model = load_sentence_transformer(require_minilm()) if model is None else model
        self.vectors = FrozenVectors(
            model_dir=require_minilm(), max_seq_length=self.model.max_seq_length, cache_dir=cache_dir, progress=False
        )
        # sentence-transformers draws a progress bar per encode call whenever its logger is at INFO
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit-length vectors of ``texts``, float32."""
        return self.vectors.vectors(list(texts)).numpy()  # (n, 384)

    def langchain(self) -> Any:
        from langchain_core.embeddings import Embeddings

        encode = self.encode

        class _Embeddings(Embeddings):
            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                return encode(texts).tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        return _Embeddings()

    def chonkie(self) -> Any:
        from chonkie.embeddings import SentenceTransformerEmbeddings

        encode = self.encode

        class _Embeddings(SentenceTransformerEmbeddings):
            def embed(self, text: str) -> np.ndarray:
                return encode([text])[0]

            def embed_batch(self, texts: list[str]) -> list[np.ndarray]:
                return list(encode(texts))

        with warnings.catch_warnings():  # chonkie 1.7 calls a sentence-transformers method since renamed
            warnings.simplefilter("ignore", FutureWarning)
            return _Embeddings(self.model)


class LangChainSemantic:
    """langchain_experimental's SemanticChunker (its defaults: percentile breakpoints at 95);
    ``settings`` go to it (``breakpoint_threshold_type``, ``breakpoint_threshold_amount``...)."""

    def __init__(self, *, embeddings: MiniLMEmbeddings, **settings: Any) -> None:
        from langchain_experimental.text_splitter import SemanticChunker

        self.chunker = SemanticChunker(embeddings.langchain(), **settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.chunker.split_text(t) for t in texts]

    def setting(self) -> str:
        return f"{self.chunker.breakpoint_threshold_type} {self.chunker.breakpoint_threshold_amount:g}"


class ChonkieSemantic:
    """Chonkie's SemanticChunker (its defaults but the embeddings; ``threshold`` 0.8: the
    percentile of the similarity curve's minima under which a minimum becomes a cut)."""

    def __init__(self, *, embeddings: MiniLMEmbeddings, **settings: Any) -> None:
        from chonkie import SemanticChunker

        self.chunker = SemanticChunker(embedding_model=embeddings.chonkie(), **settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [[c.text for c in self.chunker.chunk(t)] for t in texts]

    def setting(self) -> str:
        return f"threshold {self.chunker.threshold:g}"


class WholeDocument:
    """No cut at all, every document one chunk: where Pk and WindowDiff stand for a chunker
    that never cuts (a tuned threshold can drift towards it)."""

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [[t] for t in texts]

    def setting(self) -> str:
        return "no cut"


class FixedSize:
    """LangChain's RecursiveCharacterTextSplitter at ``chunk_tokens`` tokens of ``tokenizer``,
    no overlap (it prefers to cut at line breaks, i.e. between sentences)."""

    def __init__(self, *, chunk_tokens: int, tokenizer: Any = "minilm") -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.chunk_tokens = chunk_tokens
        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens, chunk_overlap=0, length_function=token_counter(tokenizer)
        )

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.splitter.split_text(t) for t in texts]

    def setting(self) -> str:
        return f"{self.chunk_tokens} tokens"


def score_chunks(
    docs: Sequence[Document], chunks: Sequence[Sequence[str]], *, count_tokens: Callable[[str], int], max_tokens: int
) -> dict[str, float]:
    """{pk, windowdiff, f1, chunks, over_max} of each document's ``chunks`` against its boundaries."""
    flat = [c for doc_chunks in chunks for c in doc_chunks]
    metrics = score(chunk_pairs(docs, chunks))
    return {
        "pk": metrics["pk"],
        "windowdiff": metrics["windowdiff"],
        "f1": metrics["f1"],
        "chunks": len(flat),
        "over_max": sum(count_tokens(c) > max_tokens for c in flat) / max(len(flat), 1),
    }


def chunk_pairs(docs: Sequence[Document], chunks: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
    """(hypothesis, reference) boundary slots of each document (``score``'s input)."""
    return [(chunk_slots(d.units, c), boundary_labels(d.labels, "boundary")[:-1]) for d, c in zip(docs, chunks)]


def timed(chunker: Chunker, texts: Sequence[str]) -> tuple[list[list[str]], float]:
    """``chunker(texts)`` and the texts chunked per second, after a warm-up call (lazy loading
    is not timed)."""
    chunker(["A first sentence to warm up with. And a second one, quite unlike it."])
    start = time.perf_counter()
    chunks = chunker(texts)
    return chunks, len(texts) / (time.perf_counter() - start)


def compare(
    docs: Sequence[Document], chunkers: dict[str, Chunker], *, count_tokens: Callable[[str], int], max_tokens: int = 512
) -> dict[str, dict[str, float]]:
    """{chunker: {pk, windowdiff, f1, chunks, over_max, docs_per_s}} on ``docs``."""
    texts = [document_text(d) for d in docs]
    table = {}
    for name, chunker in chunkers.items():
        chunks, docs_per_s = timed(chunker, texts)
        table[name] = {
            **score_chunks(docs, chunks, count_tokens=count_tokens, max_tokens=max_tokens),
            "docs_per_s": docs_per_s,
        }
        log.info("%s: %s", name, table[name])
    return table


def grid_settings(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Every setting of ``grid``: a mapping of a parameter to its values (all combinations), or a
    list of such mappings (the union of theirs, e.g. one per threshold type), in order."""
    from sklearn.model_selection import ParameterGrid

    grids = [grid] if isinstance(grid, Mapping) else list(grid)
    for g in grids:
        if (
            not isinstance(g, Mapping)
            or not g
            or any(isinstance(v, str) or not isinstance(v, Sequence) for v in g.values())
        ):
            raise ValueError(f"a tuning grid maps each parameter to a list of values, got {g!r}")
    return list(ParameterGrid([{k: list(v) for k, v in g.items()} for g in grids]))


def tune(
    docs: Sequence[Document], make: Callable[..., Chunker], grid: Any
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, float]]]]:
    """The setting of ``grid`` (``grid_settings``) whose chunker, ``make(**setting)``, has the
    lowest Pk on ``docs`` (the first of equals), and every setting with its Pk and WindowDiff."""
    if not docs:
        raise ValueError("tuning needs validation documents, got none")
    texts = [document_text(d) for d in docs]
    results = []
    for setting in grid_settings(grid):
        metrics = score(chunk_pairs(docs, make(**setting)(texts)))
        results.append((setting, {"pk": metrics["pk"], "windowdiff": metrics["windowdiff"]}))
        log.info("tuning %s: %s", setting, results[-1][1])
    best = min(range(len(results)), key=lambda i: results[i][1]["pk"])
    return results[best][0], results


@dataclass
class Row:
    """One line of the table: a chunker with its settings on one corpus's test documents."""

    corpus: str
    docs: int
    chunker: str
    setting: str
    metrics: dict[str, float]
    docs_per_s: float | None = None


def to_markdown(rows: Sequence[Row], *, max_tokens: int) -> str:
    lines = [
        f"| documents | chunker | setting | Pk ↓ | WindowDiff ↓ | F1 ↑ | chunks | over {max_tokens} tokens | documents/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, speed = r.metrics, "–" if r.docs_per_s is None else f"{r.docs_per_s:.2f}"
        lines.append(
            f"| {r.corpus} ({r.docs}) | {r.chunker} | {r.setting} | {m['pk']:.1%} | {m['windowdiff']:.1%} | "
            f"{m['f1']:.1%} | {m['chunks']} | {m['over_max']:.1%} | {speed} |"
        )
    return "\n".join(lines) + "\n"


def tuning_markdown(tuned: Sequence[tuple[str, str, list[tuple[str, dict[str, float]]]]]) -> str:
    """(corpus, chunker, [(setting, val metrics)]) -> a table of every setting tried."""
    lines = ["| validation documents | chunker | setting | Pk ↓ | WindowDiff ↓ |", "|---|---|---|---:|---:|"]
    for corpus, chunker, results in tuned:
        for setting, m in results:
            lines.append(f"| {corpus} | {chunker} | {setting} | {m['pk']:.1%} | {m['windowdiff']:.1%} |")
    return "\n".join(lines) + "\n"


def load_documents(spec: DictConfig) -> list[Document]:
    """``folder``: every separator-format file in it; ``data`` (a data config) with ``split``."""
    if spec.get("folder"):
        folder = Path(spec.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder (paths.shared_data_dir={folder.parents[1]}?)")
        return read_separator_files(folder, root=folder)
    datamodule = hydra.utils.instantiate(spec.data)
    splits = datamodule.corpus.load()
    if spec.split not in splits:
        raise ValueError(f"split={spec.split!r}: the corpus has the splits {sorted(splits)}")
    return splits[spec.split]


class Chunkers:
    """The chunkers of ``conf/compare_chunkers.yaml``'s ``chunkers``, built on demand with a
    setting: sharing one MiniLM embedding cache (on disk under ``cache_dir``), or ``cold``,
    each with its own empty one in memory (what a fresh process meets: the speed pass)."""

    def __init__(self, specs: DictConfig, *, cache_dir: str | None) -> None:
        self.specs = {key: spec for key, spec in specs.items() if spec is not None}
        self.cache_dir, self._embeddings = cache_dir, None

    def build(self, key: str, *, cold: bool = False, **setting: Any) -> Chunker:
        spec = self.specs[key]
        given: dict[str, Any] = dict(setting)
        if spec.get("embeds"):
            shared = self.embeddings()  # a cold one gets an empty cache of its own, not another model
            given["embeddings"] = MiniLMEmbeddings(cache_dir=None, model=shared.model) if cold else shared
        if "cache_dir" in spec.chunker:
            given["cache_dir"] = None if cold else self.cache_dir
        return hydra.utils.instantiate(spec.chunker, **given)

    def embeddings(self) -> MiniLMEmbeddings:
        if self._embeddings is None:
            self._embeddings = MiniLMEmbeddings(cache_dir=self.cache_dir)
        return self._embeddings


def run(cfg: DictConfig) -> str:
    """scripts/compare_chunkers.py's body: the table, also written to ``output_dir`` (table.md,
    and tuning.md with every setting tried on the validation documents)."""
    chunkers = Chunkers(cfg.chunkers, cache_dir=cfg.get("cache_dir"))
    count = token_counter(cfg.tokenizer)
    limit = int(cfg.max_docs) if cfg.get("max_docs") else None
    rows: list[Row] = []
    tuned: list[tuple[str, str, list[tuple[str, dict[str, float]]]]] = []
    for key, corpus in cfg.corpora.items():
        if corpus is None:
            continue
        label = corpus.get("name") or key
        test, val = load_documents(corpus.test)[:limit], None
        texts = [document_text(d) for d in test]
        speed_docs = int(corpus.get("speed_docs", cfg.get("speed_docs")) or 0)
        for ckey, spec in chunkers.specs.items():
            settings = [("", {})]
            if spec.get("tune"):
                if val is None:
                    val = load_documents(corpus.val)[:limit]
                best, results = tune(val, functools.partial(chunkers.build, ckey), spec.tune)
                tuned.append(
                    (f"{label} ({len(val)})", spec.name, [(chunkers.build(ckey, **s).setting(), m) for s, m in results])
                )
                settings.append((", tuned", best))
            for suffix, setting in settings:
                chunker = chunkers.build(ckey, **setting)
                metrics = score_chunks(test, chunker(texts), count_tokens=count, max_tokens=cfg.max_tokens)
                speed = None
                if speed_docs and spec.get("timed", True):
                    speed = timed(chunkers.build(ckey, cold=True, **setting), texts[:speed_docs])[1]
                rows.append(Row(label, len(test), spec.name + suffix, chunker.setting(), metrics, speed))
                log.info("%s, %s: %s, %s documents/s", label, rows[-1].chunker, metrics, speed)
    table = to_markdown(rows, max_tokens=cfg.max_tokens)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table, encoding="utf-8")
    (out / "tuning.md").write_text(tuning_markdown(tuned), encoding="utf-8")
    return table

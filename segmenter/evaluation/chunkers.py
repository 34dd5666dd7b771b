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
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from segmenter.core.document import Document, boundary_labels
from segmenter.core.limits import token_counter
from segmenter.data.formats import read_separator_files
from segmenter.evaluation.evaluate import score

log = logging.getLogger(__name__)


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
    """A segmenter model as a chunker: ``segment`` with the given settings on each text."""

    def __init__(self, *, segmenter: Any, **settings: Any) -> None:
        from segmenter.integrations import Chunking, load_segmenter

        self.segmenter, self.chunking = load_segmenter(segmenter), Chunking(**settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [[t[s:e] for s, e in spans] for t, spans in zip(texts, self.chunking.spans(self.segmenter, texts))]


class MiniLMEmbeddings:
    """all-MiniLM-L6-v2 from the package that ships it (segmenter.models.minilm), offline,
    through sentence-transformers: what both semantic chunkers embed sentences with."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from segmenter.models.minilm import require_minilm

        self.model = SentenceTransformer(str(require_minilm()), device="cpu")
        # sentence-transformers draws a progress bar per encode call whenever its logger is at INFO
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)

    def langchain(self) -> Any:
        from langchain_core.embeddings import Embeddings

        model = self.model

        class _Embeddings(Embeddings):
            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                return model.encode(texts, batch_size=64, show_progress_bar=False).tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        return _Embeddings()

    def chonkie(self) -> Any:
        from chonkie.embeddings import SentenceTransformerEmbeddings

        return SentenceTransformerEmbeddings(self.model)


class LangChainSemantic:
    """langchain_experimental's SemanticChunker (its defaults: percentile breakpoints)."""

    def __init__(self, *, embeddings: MiniLMEmbeddings, **settings: Any) -> None:
        from langchain_experimental.text_splitter import SemanticChunker

        self.chunker = SemanticChunker(embeddings.langchain(), **settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.chunker.split_text(t) for t in texts]


class ChonkieSemantic:
    """Chonkie's SemanticChunker (its defaults but the embeddings)."""

    def __init__(self, *, embeddings: MiniLMEmbeddings, **settings: Any) -> None:
        from chonkie import SemanticChunker

        self.chunker = SemanticChunker(embedding_model=embeddings.chonkie(), **settings)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [[c.text for c in self.chunker.chunk(t)] for t in texts]


class FixedSize:
    """LangChain's RecursiveCharacterTextSplitter at ``chunk_tokens`` tokens of ``tokenizer``,
    no overlap (it prefers to cut at line breaks, i.e. between sentences)."""

    def __init__(self, *, chunk_tokens: int, tokenizer: Any = "minilm") -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens, chunk_overlap=0, length_function=token_counter(tokenizer)
        )

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.splitter.split_text(t) for t in texts]


def compare(
    docs: Sequence[Document],
    chunkers: dict[str, Callable[[Sequence[str]], list[list[str]]]],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int = 512,
) -> dict[str, dict[str, float]]:
    """{chunker: {pk, windowdiff, f1, chunks, over_max, docs_per_s}} on ``docs``."""
    texts = [document_text(d) for d in docs]
    refs = [boundary_labels(d.labels, "boundary")[:-1] for d in docs]
    table = {}
    for name, chunker in chunkers.items():
        chunker(["A first sentence to warm up with. And a second one, quite unlike it."])  # lazy loading: not timed
        start = time.perf_counter()
        chunks = chunker(texts)
        seconds = time.perf_counter() - start
        pairs = [(chunk_slots(d.units, c), ref) for d, c, ref in zip(docs, chunks, refs)]
        flat = [c for doc_chunks in chunks for c in doc_chunks]
        metrics = score(pairs)
        table[name] = {
            "pk": metrics["pk"],
            "windowdiff": metrics["windowdiff"],
            "f1": metrics["f1"],
            "chunks": len(flat),
            "over_max": sum(count_tokens(c) > max_tokens for c in flat) / max(len(flat), 1),
            "docs_per_s": len(docs) / seconds,
        }
        log.info("%s: %s", name, table[name])
    return table


def to_markdown(tables: dict[str, dict[str, dict[str, float]]], *, docs: dict[str, int], max_tokens: int) -> str:
    lines = [
        f"| documents | chunker | Pk ↓ | WindowDiff ↓ | F1 ↑ | chunks | over {max_tokens} tokens | documents/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for corpus, table in tables.items():
        for name, m in table.items():
            lines.append(
                f"| {corpus} ({docs[corpus]}) | {name} | {m['pk']:.1%} | {m['windowdiff']:.1%} | {m['f1']:.1%} | "
                f"{m['chunks']} | {m['over_max']:.1%} | {m['docs_per_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def load_documents(spec: DictConfig) -> list[Document]:
    """``folder``: every separator-format file in it; ``data`` (a data config) with ``split``."""
    if spec.get("folder"):
        folder = Path(spec.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder (paths.shared_data_dir={folder.parents[1]}?)")
        return read_separator_files(folder, root=folder)
    datamodule = hydra.utils.instantiate(spec.data)
    return datamodule.corpus.load()[spec.split]


def run(cfg: DictConfig) -> str:
    """scripts/compare_chunkers.py's body: the table, also written to ``output_dir``."""
    corpora = {name: load_documents(spec) for name, spec in cfg.corpora.items()}
    for name, docs in corpora.items():
        if cfg.get("max_docs"):
            corpora[name] = docs[: int(cfg.max_docs)]
    embeddings = MiniLMEmbeddings()
    chunkers = {
        spec.name: hydra.utils.instantiate(spec.chunker, **({"embeddings": embeddings} if spec.get("embeds") else {}))
        for spec in cfg.chunkers.values()
        if spec is not None
    }
    count = token_counter(cfg.tokenizer)
    tables = {
        name: compare(docs, chunkers, count_tokens=count, max_tokens=cfg.max_tokens) for name, docs in corpora.items()
    }
    table = to_markdown(tables, docs={k: len(v) for k, v in corpora.items()}, max_tokens=cfg.max_tokens)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table, encoding="utf-8")
    return table

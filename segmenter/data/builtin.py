"""The built-in corpus: Choi-style documents from English text that ships with CPython.

Source texts are the documentation topics of ``pydoc_data.topics`` (the text
behind ``help("assert")``) and the docstrings of each standard-library module,
read with ``ast`` (nothing is imported or executed). Each source text is cut into
sentences by pysbd. A document is the concatenation of ``segments_per_doc``
segments, each a run of consecutive sentences from a different source, so its
boundaries are known, as in Choi (2000).

Sources are split into train/val/test *before* documents are drawn, so validation
and test documents are made of texts the model never saw in training. The result
is deterministic for a given Python version and settings, and cached as JSON.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
import re
import sys
import sysconfig
from collections import Counter
from functools import lru_cache
from pathlib import Path

from segmenter.core.document import BOUNDARY, Document, document_segments, segments_to_document
from segmenter.core.io import atomic_write
from segmenter.data.splits import SPLITS, check_fractions
from segmenter.data.synthetic import draw_segments

log = logging.getLogger(__name__)

_INDENTED = (" ", "\t", ">>>")
_RULE = re.compile(r"^[*=\-~^]{3,}$")


def _clean_paragraphs(text: str) -> list[str]:
    """Prose paragraphs only: code blocks, grammar and doctest lines are indented; rules underline titles."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.split("\n") if ln.strip()]
        if not lines or any(ln.startswith(_INDENTED) for ln in lines):
            continue
        if _RULE.match(lines[-1].strip()):  # "Title\n*****": drop the title
            continue
        out.append(" ".join(ln.strip() for ln in lines))
    return out


def _sentences(text: str, splitter) -> list[str]:
    sents = []
    for para in _clean_paragraphs(text):
        for s in splitter.segment(para):
            s = s.strip()
            # Fragments ("See also:", "Changed in version 3.8.") carry no topic.
            if len(s.split()) >= 4 and re.search("[a-z]", s):
                sents.append(s)
    return sents


def _module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return "\n\n".join(d for d in (ast.get_docstring(n) for n in nodes) if d)


def source_texts() -> dict[str, str]:
    """Name -> raw text of every source, in a fixed order."""
    from pydoc_data.topics import topics

    texts = {f"pydoc:{name}": text for name, text in sorted(topics.items())}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/__init__.py"))
    for f in files:
        texts[f"stdlib:{f.relative_to(stdlib).as_posix()}"] = _module_docstrings(f)
    return texts


@lru_cache(maxsize=1)
def source_sentences() -> dict[str, list[str]]:
    """Name -> sentences of every source (computed once per process)."""
    import pysbd

    splitter = pysbd.Segmenter(language="en", clean=False)
    sources = {name: _sentences(text, splitter) for name, text in source_texts().items()}
    # Boilerplate ("(c) Copyright CNRI...") recurs across modules; a sentence found in
    # two sources would leak between splits, so only sentences unique to one source stay.
    owners = Counter(s for sents in sources.values() for s in set(sents))
    return {name: [s for s in sents if owners[s] == 1] for name, sents in sources.items()}


class BuiltinCorpus:
    """Choi-style documents drawn from CPython's own documentation text."""

    task = BOUNDARY
    label_names = ("inside", "boundary")

    def __init__(
        self,
        *,
        num_docs: dict[str, int] | None = None,
        segments_per_doc: int = 10,
        segment_length: tuple[int, int] = (3, 11),
        source_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        num_docs = dict(num_docs or {"train": 600, "val": 100, "test": 100})
        lo, hi = segment_length
        if set(num_docs) != set(SPLITS) or min(num_docs.values()) < 1:
            raise ValueError(f"num_docs={num_docs} needs a positive count for each of {SPLITS}")
        if not 1 <= lo <= hi:
            raise ValueError(f"segment_length={tuple(segment_length)} must satisfy 1 <= min <= max")
        if segments_per_doc < 1:
            raise ValueError(f"segments_per_doc={segments_per_doc} must be >= 1")
        check_fractions(source_fractions, name="source_fractions", positive=True)
        self.settings = {
            "num_docs": {s: int(num_docs[s]) for s in SPLITS},
            "segments_per_doc": int(segments_per_doc),
            "segment_length": [int(lo), int(hi)],
            "source_fractions": [float(f) for f in source_fractions],
            "seed": int(seed),
            "python": sys.version.split()[0],
            "format": 2,
        }
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        return self.cache_dir / f"builtin-{key}.json"

    def cache_key(self) -> dict:
        """What the corpus is drawn from and how (its DataModule store is keyed by it)."""
        return {"settings": self.settings}

    def prepare(self) -> None:
        """Build and cache the corpus if it is not cached yet (DDP: once, on rank 0)."""
        if self.cache_path is not None and not self.cache_path.exists():
            self.load()

    def load(self) -> dict[str, list[Document]]:
        path = self.cache_path
        if path is not None and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = self.build()
            if path is not None:
                atomic_write(path, json.dumps(data))  # a concurrent or interrupted build never leaves half a file
                log.info("built-in corpus cached at %s", path)
        return {
            split: [Document(d["id"], d["units"], d["labels"], {"sources": d["sources"]}) for d in data[split]]
            for split in SPLITS
        }

    def build(self) -> dict[str, list[dict]]:
        s = self.settings
        lo = s["segment_length"][0]
        sources = {name: sents for name, sents in source_sentences().items() if len(sents) >= lo}
        names = sorted(sources)
        rng = random.Random(s["seed"])
        rng.shuffle(names)
        n_train = round(len(names) * s["source_fractions"][0])
        n_val = round(len(names) * s["source_fractions"][1])
        by_split = {"train": names[:n_train], "val": names[n_train : n_train + n_val], "test": names[n_train + n_val :]}
        out = {}
        for split in SPLITS:
            pool = sorted(by_split[split])
            if len(pool) < 2:
                raise ValueError(
                    f"split {split!r} has {len(pool)} source texts; adjust source_fractions={s['source_fractions']}"
                )
            out[split] = [self._draw(f"{split}-{i:04d}", pool, sources, rng) for i in range(s["num_docs"][split])]
        return out

    def _draw(self, doc_id: str, pool: list[str], sources: dict[str, list[str]], rng: random.Random) -> dict:
        names, segments, _ = draw_segments(
            rng,
            pool,
            sources,
            segments_per_doc=self.settings["segments_per_doc"],
            segment_length=tuple(self.settings["segment_length"]),
        )
        doc = segments_to_document(doc_id, segments)
        return {"id": doc.id, "units": doc.units, "labels": doc.labels, "sources": names}


def describe(corpus: BuiltinCorpus) -> str:
    """Size and statistics of each split, as a markdown table."""
    rows = [
        "| split | source texts | documents | units | segments | units/document | units/segment |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split, docs in corpus.load().items():
        sources = {s for d in docs for s in d.meta["sources"]}
        units = sum(len(d) for d in docs)
        segs = sum(len(document_segments(d)) for d in docs)
        rows.append(
            f"| {split} | {len(sources)} | {len(docs)} | {units} | {segs} | {units / len(docs):.1f} | {units / segs:.2f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # python -m segmenter.data.builtin: statistics of the default corpus
    print(describe(BuiltinCorpus()))

"""Several corpora of one task trained as one (the shipped ``topic`` model: Choi, the
Wiki-727K sample and the built-in corpus together)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from segmenter.core.document import Document

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class MixedCorpus:
    """Each split is the union of the corpora's; every document's id is prefixed with its
    corpus's name and its ``subset`` (what evaluation reports separately) becomes
    ``<name>`` or ``<name>/<its own subset>``, so a test table shows each corpus apart.
    The corpora must share a task and label names (a boundary corpus and a verse/chorus one
    do not mix). ``repeat``: how many times a corpus's training documents count (to balance
    a small corpus against a large one), 1 by default."""

    def __init__(
        self,
        *,
        corpora: Mapping[str, Any],
        repeat: Mapping[str, int] | None = None,
    ) -> None:
        if not corpora:
            raise ValueError("MixedCorpus needs at least one corpus")
        self.corpora = dict(corpora)
        self.repeat = {name: 1 for name in self.corpora} | dict(repeat or {})
        unknown = set(self.repeat) - set(self.corpora)
        if unknown or min(self.repeat.values()) < 1:
            raise ValueError(f"repeat={dict(repeat or {})}: names must be among {sorted(self.corpora)}, counts >= 1")
        kinds = {name: (c.task, tuple(c.label_names)) for name, c in self.corpora.items()}
        if len(set(kinds.values())) > 1:
            raise ValueError(f"corpora of different tasks or label names cannot be mixed: {kinds}")
        self.task, self.label_names = next(iter(kinds.values()))

    def prepare(self) -> None:
        for corpus in self.corpora.values():
            prepare = getattr(corpus, "prepare", None)
            if prepare is not None:
                prepare()

    def cache_key(self) -> dict | None:
        """The corpora's keys and how they are mixed; None when a corpus has no key."""
        keys = {}
        for name, corpus in self.corpora.items():
            key = getattr(corpus, "cache_key", lambda: None)()
            if key is None:
                return None
            keys[name] = {"corpus": f"{type(corpus).__module__}.{type(corpus).__qualname__}", "key": key}
        return {"corpora": keys, "repeat": self.repeat}

    def load(self) -> dict[str, list[Document]]:
        out: dict[str, list[Document]] = {split: [] for split in SPLITS}
        for name, corpus in self.corpora.items():
            splits = corpus.load()
            for split in SPLITS:
                docs = [_tag(d, name) for d in splits.get(split, [])]
                out[split] += docs * (self.repeat[name] if split == "train" else 1)
            log.info("mixed corpus: %s: %s", name, ", ".join(f"{s} {len(splits.get(s, []))}" for s in SPLITS))
        return out


def _tag(doc: Document, name: str) -> Document:
    meta = {**doc.meta, "subset": f"{name}/{doc.subset}" if doc.subset else name}
    return replace(doc, id=f"{name}:{doc.id}", meta=meta)

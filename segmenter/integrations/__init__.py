"""segmenter inside retrieval frameworks: a LangChain text splitter (``langchain``) and a
LlamaIndex node parser (``llama_index``), both cutting text where a trained model puts its
boundaries, under hard length limits, with each chunk's character offsets from its span
(docs/chunking.md). Neither framework is imported until its module is."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from segmenter.core import decisions, limits
from segmenter.core.document import check_units
from segmenter.core.spans import Span
from segmenter.inference.api import Segmenter
from segmenter.pretrained import MODELS


def load_segmenter(segmenter: Segmenter | str | os.PathLike, **loading: Any) -> Segmenter:
    """``segmenter`` itself, a shipped model by name (``topic``, ``lyrics``) or a checkpoint file,
    loaded with ``loading`` (``from_pretrained`` / ``from_checkpoint``'s settings: ``cache_dir``...)."""
    if isinstance(segmenter, Segmenter):
        return segmenter
    if isinstance(segmenter, str) and segmenter in MODELS:
        return Segmenter.from_pretrained(segmenter, **loading)
    if isinstance(segmenter, (str, os.PathLike)) and str(segmenter).endswith(".ckpt"):
        return Segmenter.from_checkpoint(segmenter, **loading)
    raise ValueError(
        f"segmenter={segmenter!r}: give a Segmenter, a shipped model's name ({', '.join(sorted(MODELS))}) "
        "or a checkpoint file (.ckpt)"
    )


@dataclass(frozen=True)
class Chunking:
    """How text becomes chunks: the unit kind (None: the model's own, ``Segmenter.units``) and the decision settings of
    ``Segmenter.segment_many`` (threshold, num_segments, min_segment_units, length_prior and the
    length limits), checked when made; ``tokenizer`` as segmenter.core.limits.token_counter takes it."""

    units: str | None = None
    threshold: float | None = None
    num_segments: int | None = None
    min_segment_units: int = 1
    max_segment_chars: int | None = None
    max_segment_tokens: int | None = None
    tokenizer: Any = None
    length_prior: bool | float | None = None

    def __post_init__(self) -> None:
        decisions.LENGTH_PRIOR.check("length_prior", self.length_prior)
        if self.units is not None:
            check_units(self.units)
        decisions.check(
            0, threshold=self.threshold, num_segments=self.num_segments, min_segment_units=self.min_segment_units
        )
        bound = limits.limits(
            max_segment_chars=self.max_segment_chars,
            max_segment_tokens=self.max_segment_tokens,
            tokenizer=self.tokenizer,
            min_segment_units=self.min_segment_units,
        )
        object.__setattr__(self, "tokenizer", bound.count_tokens)  # a name is loaded once, here

    def spans(self, seg: Segmenter, texts: Sequence[str]) -> list[list[Span]]:
        """Each text's chunks as (start, end) offsets into it, all texts through the network in
        batches; a text without units (blank) has none."""
        decide = {f.name: getattr(self, f.name) for f in fields(self)}  # units and every decision setting
        return [pred.spans for pred in seg.segment_many(texts, return_probs=True, **decide)]

"""A LangChain text splitter that cuts where a trained segmenter puts its boundaries.

    from segmenter.integrations.langchain import SegmenterTextSplitter
    splitter = SegmenterTextSplitter(segmenter="topic", max_segment_chars=800, add_start_index=True)
    docs = splitter.create_documents([text])     # metadata["start_index"]: the chunk's offset in text

A chunk is a segment's span in the text (segmenter.core.spans): its units with the text
between them, never overlapping another; ``start_index`` comes from that span, not from
searching the text for the chunk. Needs ``langchain-text-splitters`` (segmenter[chunking]).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from segmenter.inference.api import Segmenter
from segmenter.integrations import Chunking, load_segmenter


class SegmenterTextSplitter(TextSplitter):
    """``segmenter``: a Segmenter, a shipped model's name or a checkpoint file. ``units``,
    ``threshold``, ``num_segments``, ``min_segment_units``, ``max_segment_chars``,
    ``max_segment_tokens``, ``tokenizer``, ``length_prior``: as ``Segmenter.segment`` takes them.
    ``add_start_index``: each document's ``metadata["start_index"]`` is its chunk's offset.
    Chunks never overlap (``chunk_overlap`` is 0) and keep their text as it stands
    (``strip_whitespace`` has nothing to strip: a span starts and ends on a unit)."""

    def __init__(
        self,
        *,
        segmenter: Segmenter | str | os.PathLike = "topic",
        units: str | None = None,
        threshold: float | None = None,
        num_segments: int | None = None,
        min_segment_units: int = 1,
        max_segment_chars: int | None = None,
        max_segment_tokens: int | None = None,
        tokenizer: Any = None,
        length_prior: bool | float | None = None,
        add_start_index: bool = False,
    ) -> None:
        self.chunking = Chunking(
            units=units,
            threshold=threshold,
            num_segments=num_segments,
            min_segment_units=min_segment_units,
            max_segment_chars=max_segment_chars,
            max_segment_tokens=max_segment_tokens,
            tokenizer=tokenizer,
            length_prior=length_prior,
        )
        # chunk_size is what LangChain's own code reads as the largest chunk: our character limit, if any
        super().__init__(
            chunk_size=max_segment_chars or 2**31 - 1,
            chunk_overlap=0,
            add_start_index=add_start_index,
            strip_whitespace=False,
        )
        self.segmenter = load_segmenter(segmenter)

    def split_text(self, text: str) -> list[str]:
        (spans,) = self.chunking.spans(self.segmenter, [text])
        return [text[start:end] for start, end in spans]

    def create_documents(self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None) -> list[Document]:
        """One Document per chunk of every text (all texts through the network in batches), with
        the text's metadata and, with ``add_start_index``, ``start_index`` from the chunk's span."""
        texts = list(texts)
        metadatas = metadatas if metadatas is not None else [{}] * len(texts)
        if len(metadatas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        out = []
        for text, metadata, spans in zip(texts, metadatas, self.chunking.spans(self.segmenter, texts)):
            for start, end in spans:
                meta = copy.deepcopy(metadata)
                if self._add_start_index:
                    meta["start_index"] = start
                out.append(Document(page_content=text[start:end], metadata=meta))
        return out

    def split_documents(self, documents: Iterable[Document]) -> list[Document]:
        documents = list(documents)
        return self.create_documents([d.page_content for d in documents], [d.metadata for d in documents])

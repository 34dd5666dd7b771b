"""A LlamaIndex node parser that cuts where a trained segmenter puts its boundaries.

    from segmenter.integrations.llama_index import SegmenterNodeParser
    parser = SegmenterNodeParser(segmenter="topic", max_segment_chars=800)
    nodes = parser.get_nodes_from_documents(documents)   # start_char_idx / end_char_idx: the chunk's span
    index = VectorStoreIndex.from_documents(documents, transformations=[parser], embed_model=...)

Every node is a segment's span in its document's text (segmenter.core.spans), with the
document as its SOURCE and its neighbours as PREVIOUS / NEXT; its offsets come from the span,
not from searching the text for the chunk (which finds the wrong place when text repeats).
Needs ``llama-index-core`` (segmenter[chunking]).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from llama_index.core.node_parser.interface import NodeParser
from llama_index.core.node_parser.node_utils import build_nodes_from_splits
from llama_index.core.schema import BaseNode, Document, TextNode
from pydantic import PrivateAttr

from segmenter.inference.api import Segmenter
from segmenter.integrations import Chunking, load_segmenter


class SegmenterNodeParser(NodeParser):
    """``segmenter``: a Segmenter, a shipped model's name or a checkpoint file; the rest as
    ``Segmenter.segment`` takes them. ``model``: a name for the model in ``to_dict()`` (the name or
    path given as ``segmenter``; give one when passing a Segmenter). NodeParser's own settings (``include_metadata``,
    ``include_prev_next_rel``, ``id_func``, ``callback_manager``) as keywords too."""

    # which model cuts (a shipped model's name or a checkpoint path): part of to_dict(), so an
    # IngestionPipeline's cache tells two parsers with different models apart
    model: str = ""
    units: str | None = None
    threshold: float | None = None
    num_segments: int | None = None
    min_segment_units: int = 1
    max_segment_chars: int | None = None
    max_segment_tokens: int | None = None
    length_prior: bool | float | None = None
    _chunking: Chunking = PrivateAttr()
    _segmenter: Segmenter = PrivateAttr()

    def __init__(
        self, *, segmenter: Segmenter | str | os.PathLike = "topic", tokenizer: Any = None, **kwargs: Any
    ) -> None:
        if not isinstance(segmenter, Segmenter):
            kwargs.setdefault("model", str(segmenter))
        super().__init__(**kwargs)
        # Chunking's settings are this parser's fields of the same names, but for the tokenizer:
        # a callable or tokenizer object, which a pydantic field would have to serialize.
        settings = {f.name: getattr(self, f.name) for f in fields(Chunking) if f.name != "tokenizer"}
        self._chunking = Chunking(tokenizer=tokenizer, **settings)
        self._segmenter = load_segmenter(segmenter)

    @classmethod
    def class_name(cls) -> str:
        return "SegmenterNodeParser"

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
        texts = [node.get_content() for node in nodes]
        out: list[BaseNode] = []
        for node, text, spans in zip(nodes, texts, self._chunking.spans(self._segmenter, texts)):
            # offsets into the document: a node cut from one before (a TextNode with offsets) adds its own start
            base = (node.start_char_idx or 0) if isinstance(node, TextNode) and not isinstance(node, Document) else 0
            chunks = build_nodes_from_splits([text[s:e] for s, e in spans], node, id_func=self.id_func)
            for chunk, (start, end) in zip(chunks, spans):
                chunk.start_char_idx, chunk.end_char_idx = base + start, base + end
            out += chunks
        return out

    def _postprocess_parsed_nodes(self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]) -> list[BaseNode]:
        # NodeParser's post-processing adds metadata and PREVIOUS / NEXT, and re-finds each
        # node's offsets by searching the document for its text: the spans' offsets stand.
        offsets = [(n.start_char_idx, n.end_char_idx) if isinstance(n, TextNode) else None for n in nodes]
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node, span in zip(nodes, offsets):
            if span is not None:
                node.start_char_idx, node.end_char_idx = span
        return nodes

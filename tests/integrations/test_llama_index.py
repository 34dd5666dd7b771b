"""SegmenterNodeParser against the real llama-index-core: nodes keep their spans as
start_char_idx / end_char_idx (right where the text repeats, which LlamaIndex's own search
gets wrong), their SOURCE / PREVIOUS / NEXT relationships, and build a VectorStoreIndex offline."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="the chunking extra is not installed")
from llama_index.core import Document, MockEmbedding, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import NodeRelationship, TextNode  # noqa: E402

from segmenter import Segmenter  # noqa: E402
from segmenter.integrations.llama_index import SegmenterNodeParser  # noqa: E402

TEXTS = [
    "Rivers flow to the sea.\r\nThey carry   silt. Deltas form where they slow.\n\nMountains rise slowly. "
    "Erosion wears them down! Peaks are cold.",
    "Go. Go. Go. Go. Go.",
]


@pytest.fixture(scope="module")
def topic() -> Segmenter:
    return Segmenter.from_pretrained("topic")


def check_nodes(nodes, documents, max_chars):
    for doc in documents:
        mine = [n for n in nodes if n.ref_doc_id == doc.doc_id]
        assert mine
        for k, node in enumerate(mine):
            assert doc.text[node.start_char_idx : node.end_char_idx] == node.text
            assert len(node.text) <= max_chars
            assert node.relationships[NodeRelationship.SOURCE].node_id == doc.doc_id
            if k:
                assert node.relationships[NodeRelationship.PREVIOUS].node_id == mine[k - 1].node_id
                assert mine[k - 1].end_char_idx <= node.start_char_idx
        assert NodeRelationship.NEXT not in mine[-1].relationships


def test_nodes_keep_their_spans_and_relationships(topic):
    documents = [Document(text=t, metadata={"n": i}) for i, t in enumerate(TEXTS)]
    parser = SegmenterNodeParser(segmenter=topic, max_segment_chars=8)
    nodes = parser.get_nodes_from_documents(documents)
    check_nodes(nodes, documents, 8)
    assert all(isinstance(n, TextNode) and n.metadata["n"] in (0, 1) for n in nodes)
    spans = [s for s in topic.segment(TEXTS[1], return_probs=True, max_segment_chars=8).spans]
    assert [(n.start_char_idx, n.end_char_idx) for n in nodes if n.metadata["n"] == 1] == spans


def test_vector_store_index_offline(topic):
    documents = [Document(text=t) for t in TEXTS]
    parser = SegmenterNodeParser(segmenter=topic, max_segment_chars=60)
    index = VectorStoreIndex.from_documents(documents, transformations=[parser], embed_model=MockEmbedding(embed_dim=8))
    nodes = list(index.docstore.docs.values())
    check_nodes(nodes, documents, 60)
    found = index.as_retriever(similarity_top_k=2).retrieve("rivers")
    assert len(found) == 2 and all(r.node.node_id in index.docstore.docs for r in found)


def test_token_limit_and_a_model_by_name():
    parser = SegmenterNodeParser(segmenter="topic", max_segment_tokens=5, tokenizer=str.split)
    nodes = parser.get_nodes_from_documents([Document(text=TEXTS[0])])
    assert nodes and all(len(n.text.split()) <= 5 for n in nodes)
    assert parser.to_dict()["model"] == "topic" and parser.to_dict()["max_segment_tokens"] == 5
    with pytest.raises(ValueError, match="max_segment_tokens=5 needs tokenizer="):
        SegmenterNodeParser(segmenter="topic", max_segment_tokens=5)

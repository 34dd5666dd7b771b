"""A long-lived process that segments ever new text keeps a flat resident set: nothing
the model computes per unit or per document is kept past its request."""

from __future__ import annotations

import pytest

from segmenter.tools.memory import measure, unique_documents


def test_unique_documents_share_no_line():
    docs = unique_documents(count=30, lines=50, seed=1)
    lines = [line for doc in docs for line in doc]
    assert len(docs) == 30 and all(len(d) == 50 for d in docs) and len(set(lines)) == len(lines)


@pytest.mark.parametrize("path", ["api", "server"])
def test_new_documents_do_not_grow_resident_memory(path):
    if path == "server":
        pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
    # 40 unique 500-line songs: per-unit memos grew the lyrics model by about 2 MB a song,
    # 80 MB here; a flat process stays within allocator noise.
    result = measure(path=path, pretrained="lyrics", units="lines", warmup=5, docs=40, lines=500)
    assert result["growth_mb"] < 25, result

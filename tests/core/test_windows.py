import pytest
import torch

from segmenter.core.document import Document
from segmenter.core.windows import owned_spans, stitch, window_document, window_spans


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 37, 100])
@pytest.mark.parametrize("size,overlap", [(10, 0), (10, 4), (7, 6), (1, 0)])
def test_every_unit_owned_exactly_once_by_a_covering_window(n, size, overlap):
    spans = window_spans(n, size=size, overlap=overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(e - s <= size for s, e in spans)
    owned = owned_spans(spans)
    units = [i for s, e in owned for i in range(s, e)]
    assert units == list(range(n))
    assert all(s0 <= s <= e <= e0 for (s0, e0), (s, e) in zip(spans, owned))


def test_units_go_to_the_window_where_they_are_most_central():
    spans = window_spans(20, size=10, overlap=6)  # starts 0, 4, 8, 10
    for (s, e), (os_, oe) in zip(spans, owned_spans(spans)):
        for i in range(os_, oe):
            edge = min(i - s, e - 1 - i)
            others = [min(i - a, b - 1 - i) for a, b in spans if a <= i < b]
            assert edge >= max(others) - 1  # central up to rounding of the overlap's middle


def test_stitch_reassembles_the_document():
    n = 23
    spans = window_spans(n, size=8, overlap=3)
    outs = [torch.arange(s, e) for s, e in spans]
    assert stitch(outs, spans).tolist() == list(range(n))
    with pytest.raises(ValueError, match="outputs for"):
        stitch(outs[:-1], spans)


def test_window_document_and_bad_arguments():
    doc = Document("d", [f"u{i}" for i in range(12)], [0] * 11 + [0])
    parts = window_document(doc, size=5, overlap=2)
    assert [p.units[0] for p in parts] == ["u0", "u3", "u6", "u7"]
    assert window_document(doc, size=20, overlap=2) == [doc]
    with pytest.raises(ValueError, match="overlap=5"):
        window_spans(10, size=5, overlap=5)

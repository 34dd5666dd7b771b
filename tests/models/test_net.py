import functools

import pytest
import torch

from segmenter.models.attention import BoundaryAwareAttention, LocalizedAttention, SelfAttention
from segmenter.models.encoder import HashedNgramEncoder
from segmenter.models.net import SegmenterNet

DOCS = [["a b c", "d e f", "g h i", "j k l"], ["x y", "y z"]]


def net(attention_cls, **kw):
    torch.manual_seed(0)
    return SegmenterNet(
        encoder=HashedNgramEncoder(dim=32, num_buckets=256, code_dim=16),
        attention=functools.partial(attention_cls, dim=32, num_heads=4, **kw),
        dim=32,
        num_layers=2,
        ff_dim=32,
        num_classes=3,
    ).eval()


@pytest.mark.parametrize("cls", [SelfAttention, LocalizedAttention, BoundaryAwareAttention])
def test_net_outputs_and_padding(cls):
    model = net(cls)
    out = model(DOCS)
    assert out.logits.shape == (2, 4, 3)
    alone = model(DOCS[1:])
    torch.testing.assert_close(alone.logits[0], out.logits[1, :2], atol=1e-5, rtol=0)
    if cls is BoundaryAwareAttention:
        assert out.boundary_logits.shape == (2, 2, 4)  # (layers, B, T)
    else:
        assert out.boundary_logits is None


def test_each_layer_gets_its_own_attention():
    model = net(SelfAttention)
    assert model.blocks[0].attention is not model.blocks[1].attention


def test_rejects_width_mismatch():
    with pytest.raises(ValueError, match="encoder width 16"):
        SegmenterNet(
            encoder=HashedNgramEncoder(dim=16),
            attention=functools.partial(SelfAttention, dim=32, num_heads=4),
            dim=32,
            num_layers=1,
            ff_dim=32,
            num_classes=2,
        )

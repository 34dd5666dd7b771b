import functools

import pytest
import torch

from segmenter.models.attention import BoundaryAwareAttention, LocalizedAttention, SelfAttention
from segmenter.models.encoder import HashedNgramEncoder
from segmenter.models.net import CohesionProfile, SegmenterNet, shift
from tests.helpers import one_hot_by_first_seen, run_net

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
    out = run_net(model, DOCS)
    assert out.logits.shape == (2, 4, 3)
    alone = run_net(model, DOCS[1:])
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


def reference_profile(e: torch.Tensor, length: int, radius: int, blocks: tuple[int, ...]) -> torch.Tensor:
    """The cohesion features of one document, unit by unit (slow and plain)."""
    u = torch.nn.functional.normalize(e[:length], dim=-1)
    rows = []
    for i in range(length):
        offsets = [o for o in range(-radius, radius + 1) if o]
        sims = [float(u[i] @ u[i + o]) if 0 <= i + o < length else 0.0 for o in offsets]
        seen = [1.0 if 0 <= i + o < length else 0.0 for o in offsets]
        gaps = []
        for k in blocks:
            left, right = u[max(0, i - k + 1) : i + 1].sum(0), u[i + 1 : i + 1 + k].sum(0)
            gaps.append(float(torch.nn.functional.cosine_similarity(left, right, dim=0, eps=1e-6)))
        rows.append(sims + seen + gaps)
    return torch.tensor(rows, dtype=e.dtype)


def test_cohesion_profile_matches_the_reference_and_ignores_padding():
    torch.manual_seed(0)
    prof = CohesionProfile(dim=8, radius=3, blocks=(1, 2, 5)).double()
    prof.proj = torch.nn.Identity()  # look at the features themselves
    e = torch.randn(2, 9, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    e[1, 5:] = 100.0  # padding content must not leak into any feature
    feats = prof(e, mask)  # (B, T, 4r + K)
    assert feats.shape == (2, 9, 4 * 3 + 3) and prof.reach == 5
    torch.testing.assert_close(feats[0], reference_profile(e[0], 9, 3, (1, 2, 5)))
    torch.testing.assert_close(feats[1, :5], reference_profile(e[1], 5, 3, (1, 2, 5)))
    torch.testing.assert_close(prof(e[1:, :5], mask[1:, :5])[0], feats[1, :5])
    torch.testing.assert_close(prof(e[:1, :2], mask[:1, :2])[0], reference_profile(e[0], 2, 3, (1, 2, 5)))  # T < r
    # a sharp topic change shows: block similarity across the gap drops there
    topics = torch.eye(6, dtype=torch.float64)
    e2 = torch.stack(
        [topics[0] + 0.1 * torch.randn(6, dtype=torch.float64) for _ in range(4)]
        + [topics[1] + 0.1 * torch.randn(6, dtype=torch.float64) for _ in range(4)]
    )[None]
    gap2 = prof(e2, torch.ones(1, 8, dtype=torch.bool))[0, :, 4 * 3 + 1]  # k = 2 block cosine per gap
    assert gap2[:7].argmin() == 3


def test_cohesion_profile_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"radius=0 .* blocks=\[2\]"):
        CohesionProfile(dim=8, radius=0, blocks=(2,))
    with pytest.raises(ValueError, match=r"blocks=\[0, 2\]"):
        CohesionProfile(dim=8, radius=2, blocks=(0, 2))


def net_with_cohesion(*, content: bool) -> SegmenterNet:
    torch.manual_seed(0)
    return SegmenterNet(
        encoder=HashedNgramEncoder(dim=32, num_buckets=256, code_dim=16),
        attention=functools.partial(LocalizedAttention, dim=32, num_heads=4),
        dim=32,
        num_layers=2,
        ff_dim=32,
        num_classes=2,
        cohesion=CohesionProfile(dim=32, radius=2, blocks=(1, 2)),
        content=content,
    )


@pytest.mark.parametrize("content", [True, False])
def test_cohesion_net_pads_and_trains(content):
    model = net_with_cohesion(content=content).eval()
    out = run_net(model, DOCS)
    torch.testing.assert_close(run_net(model, DOCS[1:]).logits[0], out.logits[1, :2], atol=1e-5, rtol=0)
    model.train()
    run_net(model, DOCS).logits.sum().backward()
    assert model.cohesion.proj.weight.grad.abs().sum() > 0
    projection_grad = model.encoder.proj.weight.grad
    # Without content the encoder's learned vectors never reach the output.
    assert (projection_grad is not None and projection_grad.abs().sum() > 0) == content


@pytest.mark.parametrize("content", [True, False])
def test_without_content_only_similarities_matter(content):
    """Different words, same similarity pattern (each unit said twice): the same output
    exactly when the blocks see no content; a different one when they do."""
    model = net_with_cohesion(content=content).eval()
    model.encoder.frozen_units = one_hot_by_first_seen
    a = run_net(model, [["red apples", "red apples", "tax law", "tax law"]]).logits
    b = run_net(model, [["blue sky", "blue sky", "cold soup", "cold soup"]]).logits
    if content:
        assert (a - b).abs().max() > 1e-3
    else:
        torch.testing.assert_close(a, b)


def test_content_off_needs_cohesion():
    with pytest.raises(ValueError, match="content=False needs a cohesion or similarity module"):
        SegmenterNet(
            encoder=HashedNgramEncoder(dim=32),
            attention=functools.partial(SelfAttention, dim=32, num_heads=4),
            dim=32,
            num_layers=1,
            ff_dim=32,
            num_classes=2,
            content=False,
        )


@pytest.mark.parametrize("offset", [-5, -4, -1, 0, 1, 3, 4, 9])
def test_shift_reads_the_neighbour_at_the_offset_and_zeros_past_the_ends(offset):
    """Offsets as long as the document or longer included (short documents, exported graphs)."""
    x = torch.randn(2, 4, 3)
    out = shift(x, offset)
    for i in range(4):
        j = i + offset
        assert torch.equal(out[:, i], x[:, j] if 0 <= j < 4 else torch.zeros(2, 3))

"""segmenter/training/module.py: the soft boundary targets and their loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segmenter.core.document import IGNORE
from segmenter.training.module import soft_boundary_targets, soft_cross_entropy


def test_soft_targets_give_the_neighbours_of_a_boundary_their_share():
    labels = torch.tensor(
        [
            [0, 0, 1, 0, 0, 1, 1, 0],
            [1, 0, 0, 0, IGNORE, IGNORE, IGNORE, IGNORE],
        ]
    )
    p = soft_boundary_targets(labels, 0.25)[..., 1]  # (B, T) boundary probability
    expected = torch.tensor(
        [
            [0, 0.25, 1, 0.25, 0.25, 1, 1, 0.25],  # adjacent boundaries stay 1
            [1, 0.25, 0, 0, 0, 0, 0, 0],  # padding is neither a boundary nor next to one
        ]
    )
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(soft_boundary_targets(labels, 0.25).sum(-1), torch.ones(2, 8))


def test_soft_cross_entropy_with_one_hot_targets_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(50, 2), torch.randint(0, 2, (50,))
    weight = torch.tensor([0.6, 3.0])
    targets = F.one_hot(labels, 2).float()
    torch.testing.assert_close(
        soft_cross_entropy(logits, targets, weight), F.cross_entropy(logits, labels, weight=weight)
    )
    torch.testing.assert_close(soft_cross_entropy(logits, targets, None), F.cross_entropy(logits, labels))
    # Smoothing the targets changes the loss: the soft path is not the hard one in disguise.
    soft = soft_boundary_targets(labels[None], 0.3)[0]
    assert not torch.isclose(soft_cross_entropy(logits, soft, weight), F.cross_entropy(logits, labels, weight=weight))


@pytest.mark.parametrize("smoothing", [-0.1, 0.5, 1.0])
def test_soft_targets_reject_a_smoothing_out_of_range(smoothing):
    with pytest.raises(ValueError, match=f"boundary_smoothing={smoothing}"):
        soft_boundary_targets(torch.zeros(1, 3, dtype=torch.long), smoothing)


class _Net(torch.nn.Module):
    """Just what SegmenterModule reads of a network before training."""

    def __init__(self, *, num_classes: int, crf: object = None) -> None:
        super().__init__()
        self.num_classes, self.crf = num_classes, crf


@pytest.mark.parametrize(
    ("task", "labels", "crf"),
    [("section", ("verse", "chorus"), None), ("boundary", ("inside", "boundary"), object())],
)
def test_boundary_smoothing_needs_a_boundary_task_without_crf(task, labels, crf):
    from segmenter.training.module import SegmenterModule

    with pytest.raises(ValueError, match="boundary_smoothing=0.2: for a boundary task without a CRF"):
        SegmenterModule(
            net=_Net(num_classes=2, crf=crf),
            optimizer=torch.optim.AdamW,
            task=task,
            label_names=labels,
            boundary_smoothing=0.2,
        )
    SegmenterModule(net=_Net(num_classes=2, crf=crf), optimizer=torch.optim.AdamW, task=task, label_names=labels)

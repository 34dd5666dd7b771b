"""segmenter/training/module.py: the loss weights against rare boundaries."""

from __future__ import annotations

import pytest
import torch

from segmenter.training.module import class_weights


def test_class_weights_balance_rare_classes():
    balanced = class_weights([90, 10], "balanced", 2)
    torch.testing.assert_close(balanced, torch.tensor([100 / 180, 100 / 20]))
    torch.testing.assert_close(class_weights([90, 10], "sqrt", 2), balanced.sqrt())
    assert class_weights([90, 10], "none", 2) is None and class_weights(None, "balanced", 2) is None


def test_class_weights_name_bad_settings():
    with pytest.raises(ValueError, match="class_weighting='even'"):
        class_weights([90, 10], "even", 2)
    with pytest.raises(ValueError, match=r"class_counts=\[90, 10\] for num_classes=3"):
        class_weights([90, 10], "balanced", 3)

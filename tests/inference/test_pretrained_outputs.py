"""The shipped models give the outputs recorded in tests/fixtures/pretrained/expected.json
(tests/fixtures/make_pretrained_expected.py): how units become tensors, how windows are cut
and stitched, and the network itself may change inside, not what a user gets out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segmenter import Segmenter

EXPECTED = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "pretrained" / "expected.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", sorted(EXPECTED["models"]))
def test_shipped_model_outputs_match_the_recorded_ones(name):
    seg = Segmenter.from_pretrained(name, **EXPECTED["settings"])
    docs = EXPECTED["documents"]
    recorded = EXPECTED["models"][name]
    for got, want in zip(seg.logits(docs), recorded):
        torch.testing.assert_close(got, torch.tensor(want["logits"]), rtol=0, atol=1e-5)
    for got, want in zip(seg.predict(docs), recorded):
        assert got.boundary_probs == pytest.approx(want["boundary_probs"], abs=1e-5)
        assert got.boundaries == want["boundaries"]
        assert got.label_ids == want["labels"]

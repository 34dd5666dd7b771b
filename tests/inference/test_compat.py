"""Checkpoints written before the restructure (tests/fixtures/compat, made by
tests/fixtures/make_compat_checkpoints.py at commit c37c1e6) still load with
``segmenter.inference.checkpoint.load_net`` (weights_only) and predict what they predicted then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segmenter import Segmenter
from segmenter.core.document import boundary_probs
from segmenter.inference.checkpoint import FORMAT1_NAMES, FORMAT_VERSION, KEY, load, load_net
from segmenter.models import registry
from segmenter.pretrained import checkpoint_path

COMPAT = Path(__file__).parents[1] / "fixtures" / "compat"
EXPECTED = json.loads((COMPAT / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(EXPECTED["checkpoints"]))
def test_old_checkpoints_load_and_predict_as_recorded(name):
    path = COMPAT / f"{name}.ckpt"
    recorded = EXPECTED["checkpoints"][name]
    net, meta = load_net(path)
    assert meta["task"] == recorded["task"] and meta["label_names"] == recorded["label_names"]
    seg = Segmenter(net=net, task=meta["task"], label_names=meta["label_names"], **EXPECTED["settings"])
    docs = EXPECTED["documents"]
    for got, want in zip(seg.logits(docs), recorded["logits"]):
        torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=1e-5)
    for structured, key in ((True, "structured"), (False, "argmax")):
        for got, want, lg in zip(seg.predict(docs, structured=structured), recorded[key], recorded["logits"]):
            assert got.label_ids == want["labels"] and got.boundaries == want["boundaries"]
            if structured and net.crf is not None:
                # Since calibration, a CRF model reports its marginals (they were the softmax of
                # the emissions when the fixture was recorded): different by the transition
                # scores, which this barely trained fixture keeps near 0.
                want_probs = boundary_probs(
                    net.unit_probs(torch.tensor(lg)[None], torch.ones(1, len(lg), dtype=torch.bool))[0], meta["task"]
                ).tolist()
                assert got.boundary_probs == pytest.approx(want_probs, abs=1e-5)
                assert got.boundary_probs == pytest.approx(want["boundary_probs"], abs=1e-3)
            else:
                assert got.boundary_probs == pytest.approx(want["boundary_probs"], abs=1e-5)


def test_format1_class_paths_map_to_registered_parts():
    """Format 1 named classes by path; every path the fixtures and shipped models hold is
    read through checkpoint.FORMAT1_NAMES and comes back as a registered name, nothing else."""
    targets = set()

    def collect(node):
        if isinstance(node, dict):
            targets.update([node["_target_"]] if "_target_" in node else [])
            for v in node.values():
                collect(v)

    files = [COMPAT / f"{name}.ckpt" for name in EXPECTED["checkpoints"]] + [
        checkpoint_path(n) for n in ("lyrics", "topic")
    ]
    for path in files:
        stored = torch.load(path, map_location="cpu", weights_only=True)[KEY]
        assert stored["format_version"] == 1
        collect(stored["net"])
        read = load(path)[KEY]
        assert read["format_version"] == FORMAT_VERSION and "_target_" not in repr(read["net"])
    assert (
        targets <= set(FORMAT1_NAMES)
        and {
            "segmenter.models.net.SegmenterNet",
            "segmenter.models.encoder.HashedNgramEncoder",
            "segmenter.models.minilm.MiniLMEncoder",
            "segmenter.models.attention.BoundaryAwareAttention",
            "segmenter.models.attention.LocalizedAttention",
            "segmenter.models.attention.SelfAttention",
            "segmenter.models.net.CohesionProfile",
            "segmenter.models.net.SelfSimilarity",
            "segmenter.models.crf.LinearChainCRF",
        }
        <= targets
    )
    assert set(FORMAT1_NAMES.values()) <= set(registry.names())
    assert Segmenter.from_checkpoint(COMPAT / "lyrics.ckpt").net.crf is not None


def test_the_shipped_lyrics_model_still_loads():
    """segmenter/pretrained/lyrics.ckpt, written before the restructure by main's code (the
    self-similarity gate, calibration in its entry), loads and labels a song."""
    path = checkpoint_path("lyrics")
    net, meta = load_net(path)
    assert meta["label_names"] == ["verse", "chorus"] and net.crf is not None and net.similarity is not None
    seg = Segmenter(net=net, task=meta["task"], label_names=meta["label_names"])
    song = ["la la la", "we sing along", "oh oh oh", "la la la", "we sing along", "oh oh oh", "the end"]
    (pred,) = seg.predict([song])
    assert len(pred.labels) == len(song) and all(0.0 <= p <= 1.0 for p in pred.boundary_probs)

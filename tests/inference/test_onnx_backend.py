"""The ONNX backend (segmenter.inference.onnx_backend, scripts/export.py): the exported graph
gives the torch backend's probabilities for every attention type, for boundary and
section/CRF models, on documents longer than one window; the file carries what the backend
needs; the command's errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install -e '.[onnx]')")

from segmenter import Segmenter  # noqa: E402
from segmenter.features import Featurizer  # noqa: E402
from segmenter.inference.checkpoint import CheckpointError, load_net, metadata, net_config  # noqa: E402
from segmenter.inference.checkpoint import build_net as build  # noqa: E402
from segmenter.inference.onnx_backend import OnnxNet, backend_net, cache_key  # noqa: E402
from tests.helpers import ATTENTIONS, ROOT, TINY_MODEL  # noqa: E402
from tests.inference.test_predict import long_doc  # noqa: E402

TOLERANCE = 1e-4  # on probabilities
# Documents longer than a window (max_units=32), one of a single unit; lines shared between
# documents and repeated within them, so the self-similarity view sees recurrence.
DOCS = [long_doc(90, seed=1) + long_doc(90, seed=1)[:20], long_doc(33, seed=2), long_doc(1, seed=3), long_doc(5)]
# A section model like the shipped lyrics one, small: cohesion, the self-similarity views
# (fixed and surface), a CRF, no content.
SECTION = [
    *TINY_MODEL,
    "model.net.num_layers=1",
    "model.net.content=false",
    "+model.net.similarity={_target_: segmenter.models.net.SelfSimilarity, dim: 32, surface_buckets: 512}",
    "model.net.crf={_target_: segmenter.models.crf.LinearChainCRF, _partial_: true}",
]


def assert_same_predictions(torch_seg: Segmenter, onnx_seg: Segmenter, docs=DOCS) -> None:
    for a, b in zip(torch_seg.predict(docs), onnx_seg.predict(docs)):
        assert a.boundary_probs == pytest.approx(b.boundary_probs, abs=TOLERANCE)
        assert a.labels == b.labels and a.boundaries == b.boundaries


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_section_model_with_crf_gives_torch_probabilities(tiny_cfg, tmp_path, attention):
    cfg = tiny_cfg(f"attention={attention}", *SECTION)
    torch.manual_seed(0)
    entry = net_config(cfg.model.net, num_classes=2)
    net = build(entry).eval()
    with torch.no_grad():  # untrained transitions are 0: make the CRF matter
        net.crf.transitions.normal_(std=2.0)
    meta = metadata(net=entry, task="section", label_names=["verse", "chorus"])
    settings = {"task": "section", "label_names": ["verse", "chorus"], "max_units": 32, "overlap": 8}
    onnx_net = backend_net("onnx", net, meta, onnx_path=tmp_path / "net.onnx")
    assert isinstance(onnx_net, OnnxNet) and onnx_net.crf is not None
    assert_same_predictions(Segmenter(net=net, **settings), Segmenter(net=onnx_net, **settings))
    # structured=False: each unit's softmax, not the CRF's marginals
    unstructured = [Segmenter(net=n, **settings).predict(DOCS[:1], structured=False)[0] for n in (net, onnx_net)]
    assert unstructured[0].boundary_probs == pytest.approx(unstructured[1].boundary_probs, abs=TOLERANCE)


def test_checkpoint_export_script_and_from_onnx(tiny_checkpoint, tiny_onnx):
    """A boundary model (tiny_checkpoint: localized, hashed encoder) through the export
    command: from_onnx (the file alone) and from_checkpoint(backend="onnx", onnx_path=...)
    predict what the torch backend does; the file holds the windowing it was exported with."""
    reference = Segmenter.from_checkpoint(tiny_checkpoint, max_units=40, overlap=8)
    alone = Segmenter.from_onnx(tiny_onnx)
    assert (alone.max_units, alone.overlap, alone.task, alone.label_names) == (40, 8, "boundary", reference.label_names)
    assert alone.calibration == reference.calibration
    assert_same_predictions(reference, alone)
    beside = Segmenter.from_checkpoint(tiny_checkpoint, max_units=40, overlap=8, backend="onnx", onnx_path=tiny_onnx)
    assert_same_predictions(reference, beside)


def test_export_on_the_fly_is_cached(tiny_checkpoint, tiny_onnx, tmp_path, monkeypatch):
    """Without onnx_path the graph is exported once into the cache, named by the weights;
    a file in the cache is used as it is (here: the one the export command wrote)."""
    monkeypatch.setenv("SEGMENTER_CACHE", str(tmp_path))
    seg = Segmenter.from_checkpoint(tiny_checkpoint, max_units=40, overlap=8)
    cached = tmp_path / "onnx" / f"{cache_key(*load_net(tiny_checkpoint))}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_onnx.read_bytes())
    onnx_seg = Segmenter.from_checkpoint(tiny_checkpoint, max_units=40, overlap=8, backend="onnx")
    assert isinstance(onnx_seg.net, OnnxNet) and list((tmp_path / "onnx").iterdir()) == [cached]
    assert_same_predictions(seg, onnx_seg, DOCS[1:])


def test_a_graph_of_other_weights_is_refused(tiny_checkpoint, tiny_onnx, tmp_path):
    from segmenter.inference.checkpoint import load

    ckpt = load(tiny_checkpoint)
    net = build(ckpt["segmenter"]["net"])  # untrained: other weights
    with pytest.raises(CheckpointError, match="exported from other weights"):
        backend_net("onnx", net, ckpt["segmenter"], onnx_path=tiny_onnx)


def test_bad_backend_settings_say_what_is_wrong(tiny_checkpoint, tiny_onnx, tmp_path):
    with pytest.raises(ValueError, match="backend='tensorrt' is not one of"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="tensorrt")
    with pytest.raises(ValueError, match="onnx_path=.* is for backend='onnx'"):
        Segmenter.from_checkpoint(tiny_checkpoint, onnx_path=tiny_onnx)
    with pytest.raises(ValueError, match="runs on the CPU"):
        Segmenter.from_onnx(tiny_onnx, device="cuda")
    not_ours = tmp_path / "plain.onnx"
    import onnx

    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    onnx.save(model, not_ours)
    with pytest.raises(CheckpointError, match="not an ONNX graph exported by segmenter"):
        Segmenter.from_onnx(not_ours)


def test_featurizer_comes_from_the_file(tiny_checkpoint, tiny_onnx):
    net = OnnxNet.load(tiny_onnx)
    torch_net = Segmenter.from_checkpoint(tiny_checkpoint).net
    assert Featurizer.for_net(net).config() == Featurizer.for_net(torch_net).config()
    assert net.entry["inputs"][:2] == ["start", "mask"]


def script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "scripts/export.py", *args], cwd=ROOT, capture_output=True, timeout=300, env=env
    )


def test_script_help_and_one_line_errors(tmp_path):
    help_ = script("--help")
    assert help_.returncode == 0 and b"output=<file.onnx>" in help_.stdout
    for args in (
        [f"output={tmp_path / 'x.onnx'}"],
        ["pretrained=topic", "ckpt_path=x.ckpt", f"output={tmp_path / 'x.onnx'}"],
    ):
        proc = script(*args)
        assert proc.returncode == 2, proc.stderr.decode()[-2000:]
        lines = [ln for ln in proc.stderr.decode().splitlines() if ln.strip()]
        assert len(lines) == 1 and "give ckpt_path=" in lines[0]
    proc = script("pretrained=topic", f"output={tmp_path / 'x.onnx'}", "overlap=600")
    assert proc.returncode == 2 and b"overlap < max_units" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["topic", "lyrics"])
def test_shipped_models_give_torch_probabilities(name, tmp_path):
    """topic: frozen MiniLM vectors in, localized attention; lyrics: a section model with a
    CRF and the self-similarity views."""
    settings = {"max_units": 64, "overlap": 16}
    onnx_seg = Segmenter.from_pretrained(name, backend="onnx", onnx_path=tmp_path / f"{name}.onnx", **settings)
    assert_same_predictions(Segmenter.from_pretrained(name, **settings), onnx_seg)

"""Checkpoints are self-contained, plain data, and load safely; other formats fail clearly."""

from __future__ import annotations

import functools
import logging
import random

import pytest
import torch

import segmenter
from segmenter import Segmenter
from segmenter.inference.checkpoint import FORMAT_VERSION, KEY, CheckpointError, build_net, load, load_net, upgrade
from segmenter.training.train import build, train
from tests.helpers import compose_train, run_net, score_checkpoint


def raw(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # test-made files only


def test_checkpoint_carries_what_rebuilds_the_model(tiny_checkpoint):
    for path in tiny_checkpoint.parent.glob("*.ckpt"):  # epoch_XXX.ckpt and last.ckpt alike
        ckpt = load(path)  # weights_only=True inside
        meta = ckpt[KEY]
        assert meta["format_version"] == FORMAT_VERSION and meta["segmenter_version"] == segmenter.__version__
        assert meta["task"] == "boundary" and meta["label_names"] == ["inside", "boundary"]
        assert meta["units"] == "sentences"  # the built-in corpus's units
        net = meta["net"]
        assert net["type"] == "segmenter_net" and net["num_classes"] == 2
        assert net["attention"]["type"] == "localized" and net["encoder"]["type"] == "hashed"
        assert net["attention"]["window_size"] == 7 and net["dim"] == net["encoder"]["dim"] == 128
        # Parts are named, never located: no class path and no Hydra key anywhere in the entry.
        assert "segmenter." not in repr(meta) and "_target_" not in repr(meta) and "_partial_" not in repr(meta)
        assert meta["featurizer"] == [{"kind": "hashed", "num_buckets": 16384, "char_ngram": 3}]
        # Lightning's own hyperparameters are plain too: no pickled optimizer factories.
        assert not {"optimizer", "scheduler", "net"} & set(ckpt["hyper_parameters"])
        assert ckpt["hyper_parameters"]["label_names"] == ["inside", "boundary"]
        assert type(ckpt["hyper_parameters"]["class_counts"]) is list


def test_loaded_net_equals_the_trained_weights(tiny_checkpoint, tmp_path):
    net, meta = load_net(tiny_checkpoint)
    assert not net.training
    # The same architecture built from the training configs, given the same weights:
    _, module = build(
        compose_train(tmp_path, ["data.corpus.num_docs={train: 4, val: 2, test: 2}", "attention=localized"])
    )
    module.load_state_dict(raw(tiny_checkpoint)["state_dict"])
    docs = [["the cat sat", "on the mat", "stocks fell"], ["one more", "doc"]]
    with torch.inference_mode():
        torch.testing.assert_close(run_net(net, docs).logits, run_net(module.net.eval(), docs).logits, rtol=0, atol=0)


def test_weights_only_loading_refuses_pickled_objects(tiny_checkpoint, tmp_path):
    ckpt = raw(tiny_checkpoint)
    ckpt["hyper_parameters"]["optimizer"] = functools.partial(torch.optim.AdamW, lr=0.1)  # as before format 1
    del ckpt[KEY]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*before checkpoint format 1.*upgrade") as e:
        load(old)
    assert "functools.partial" in str(e.value)
    # The way out the message names: the user vouches for the file, the run's config describes the net.
    new = upgrade(old, tmp_path / "new.ckpt", config=tiny_checkpoint.parent.parent / ".hydra" / "config.yaml")
    net, meta = load_net(new)
    ref, _ = load_net(tiny_checkpoint)
    assert meta["net"] == load(tiny_checkpoint)[KEY]["net"]
    docs = [["a b c", "d e f", "g h"]]
    with torch.inference_mode():
        torch.testing.assert_close(run_net(net, docs).logits, run_net(ref, docs).logits, rtol=0, atol=0)


def test_checkpoint_without_segmenter_entry_names_its_writer(tiny_checkpoint, tmp_path):
    ckpt = raw(tiny_checkpoint)
    del ckpt[KEY]
    torch.save(ckpt, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match=r"no 'segmenter' entry.*before checkpoint format 1.*Lightning 2\."):
        load(tmp_path / "bare.ckpt")


def test_newer_format_asks_for_a_newer_segmenter(tiny_checkpoint, tmp_path):
    ckpt = raw(tiny_checkpoint)
    ckpt[KEY].update(format_version=FORMAT_VERSION + 1, segmenter_version="9.9.9")
    torch.save(ckpt, tmp_path / "future.ckpt")
    with pytest.raises(
        CheckpointError, match=rf"written by segmenter 9\.9\.9 in checkpoint format {FORMAT_VERSION + 1}.*Upgrade"
    ):
        load(tmp_path / "future.ckpt")


@pytest.mark.parametrize(
    "where,value,match",
    [
        ("encoder", "os.system", "no part is registered as 'os.system'"),
        ("encoder", "segmenter.models.encoder.HashedNgramEncoder", "no part is registered"),  # a path is not a name
        ("attention", "no_such_attention", "no part is registered as 'no_such_attention'"),
        ("attention", 3, "expected a part's registered name"),
    ],
)
def test_only_registered_parts_are_built(tiny_checkpoint, where, value, match):
    net = load(tiny_checkpoint)[KEY]["net"]
    net[where]["type"] = value
    with pytest.raises(CheckpointError, match=match):
        build_net(net)


@pytest.mark.parametrize(
    "target,match",
    [
        ("os.system", "not a part segmenter ever saved"),
        ("segmenter.models.net.torch.nn.Linear", "not a part segmenter ever saved"),
        ("segmenter.models.encoder.pad_units", "not a part segmenter ever saved"),
        (["x"], "not a part segmenter ever saved"),
    ],
)
def test_format1_class_paths_are_read_through_the_table_only(tiny_checkpoint, target, match):
    net = {
        "_target_": "segmenter.models.net.SegmenterNet",
        **{k: v for k, v in load(tiny_checkpoint)[KEY]["net"].items() if k != "type"},
    }
    net["encoder"] = {"_target_": target, **{k: v for k, v in net["encoder"].items() if k != "type"}}
    with pytest.raises(CheckpointError, match=match):
        build_net(net)


def test_a_part_is_bounded_by_its_own_limits(tiny_checkpoint):
    net = load(tiny_checkpoint)[KEY]["net"]
    with pytest.raises(
        CheckpointError, match=r"net.encoder.num_buckets=4194305: expected a whole number from 1 to 4,194,304"
    ):
        build_net({**net, "encoder": {**net["encoder"], "num_buckets": (1 << 22) + 1}})
    with pytest.raises(CheckpointError, match=r"net.attention.window_size=-1"):
        build_net({**net, "attention": {**net["attention"], "window_size": -1}})
    with pytest.raises(CheckpointError, match=r"net.cohesion.blocks=\[1, 5000\]"):
        build_net({**net, "cohesion": {**net["cohesion"], "blocks": [1, 5000]}})


def test_a_featurizer_other_than_the_trained_one_is_refused(tiny_checkpoint, tmp_path):
    ckpt = raw(tiny_checkpoint)
    ckpt[KEY]["featurizer"] = [{"kind": "hashed", "num_buckets": 16384, "char_ngram": 4}]
    torch.save(ckpt, tmp_path / "drift.ckpt")
    with pytest.raises(
        CheckpointError, match=r"trained on features .*'char_ngram': 4.*would give it .*'char_ngram': 3"
    ):
        load_net(tmp_path / "drift.ckpt")


def test_a_model_splits_text_as_it_was_trained_unless_told(tiny_checkpoint, tmp_path, caplog):
    """The checkpoint's units are the default of segment() and predict; a checkpoint without
    them (written before they were stored) splits by sentences, as before; a caller's other
    choice is honoured with one info line."""
    ckpt = raw(tiny_checkpoint)
    ckpt[KEY]["units"] = "lines"
    torch.save(ckpt, tmp_path / "lines.ckpt")
    del ckpt[KEY]["units"]
    torch.save(ckpt, tmp_path / "older.ckpt")
    text = "First line of the song\nSecond line of the song\nThird line. It has two sentences.\n"

    seg = Segmenter.from_checkpoint(tmp_path / "lines.ckpt")
    with caplog.at_level(logging.INFO, logger="segmenter.inference.api"):
        assert seg.units == "lines" and len(seg.segment(text, return_probs=True).units) == 3
    assert not [r for r in caplog.records if "units=" in r.getMessage()]
    with caplog.at_level(logging.INFO, logger="segmenter.inference.api"):
        assert len(seg.segment(text, units="sentences", return_probs=True).units) == 2  # pysbd: 2 sentences
    (said,) = [r.getMessage() for r in caplog.records if "units=" in r.getMessage()]
    assert "units=sentences" in said and "trained on lines" in said
    assert Segmenter.from_checkpoint(tmp_path / "lines.ckpt", units="sentences").units == "sentences"
    assert Segmenter.from_checkpoint(tmp_path / "older.ckpt").units == "sentences"

    ckpt[KEY]["units"] = "words"
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bad\.ckpt: units='words' is not one of \('sentences', 'lines'\)"):
        load_net(tmp_path / "bad.ckpt")


def test_hydra_keys_and_interpolations_are_refused(tiny_checkpoint, tmp_path):
    net = load(tiny_checkpoint)[KEY]["net"]
    with pytest.raises(CheckpointError, match="'_args_' is not allowed"):
        build_net({**net, "encoder": {**net["encoder"], "_args_": ["x"]}})
    ckpt = raw(tiny_checkpoint)
    ckpt[KEY]["net"]["encoder"]["seed"] = "${oc.env:HOME}"
    torch.save(ckpt, tmp_path / "interp.ckpt")
    with pytest.raises(CheckpointError, match="interpolation"):
        load(tmp_path / "interp.ckpt")


@pytest.mark.parametrize("first", [b"\x7f", b"\x80", b"", b"hello"])
def test_a_file_that_is_no_checkpoint_is_called_so(tmp_path, first):
    """Random bytes (whatever the first one, 0x80 included: pickle's opcode) are not a
    checkpoint at all; the message says so, not that the file holds pickled objects."""
    data = first + bytes(random.Random(0).randrange(256) for _ in range(300)) if first != b"" else b""
    (tmp_path / "random.ckpt").write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "random.ckpt")
    assert "random.ckpt: it is not a checkpoint at all" in str(e.value)
    assert "pickled" not in str(e.value) and "upgrade" not in str(e.value)


def test_missing_and_damaged_files(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.ckpt"):
        load(tmp_path / "nope.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(
        CheckpointError, match="cannot read checkpoint .*cut.ckpt: not a PyTorch checkpoint, or damaged"
    ):
        load(tmp_path / "cut.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*text.ckpt"):
        load(tmp_path / "text.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load(tmp_path / "other.ckpt")


def test_resume_and_test_from_the_plain_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    """Lightning's own uses of the checkpoint still work: resume (optimizer and scheduler
    state come back although the factories are not stored) and testing the best one, every
    torch.load with weights_only=True, the best checkpoint tested after fit included."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    before = raw(tiny_checkpoint)
    monkeypatch.setattr(torch, "load", spy)
    cfg = compose_train(
        tmp_path,
        [
            "data.corpus.num_docs={train: 16, val: 4, test: 4}",
            "data.corpus.segments_per_doc=4",
            "data.batch_size=4",
            "attention=localized",
            "debug=limit",
            "trainer.max_epochs=3",
            "logger=none",
            "callbacks.lr_monitor=null",
            "callbacks.rich_progress_bar=null",
            f"ckpt_path={tiny_checkpoint}",
        ],
    )
    metrics = train(cfg)
    after = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert after["epoch"] == before["epoch"] + 1 and after["global_step"] > before["global_step"]
    assert after["lr_schedulers"][0]["last_epoch"] == after["global_step"]  # scheduler continued, not restarted
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")  # this run's best, tested after fit
    expected = score_checkpoint(best, build(cfg)[0].splits["test"], "boundary")
    assert metrics["test/f1"] == pytest.approx(expected["f1"], abs=1e-6)
    assert len(calls) >= 4 and all(w is True for w in calls), calls  # resume + test, each checked and loaded


MOVED = """
import sys, torch
from segmenter.inference.checkpoint import load_net
from segmenter.models import registry
from tests.helpers import run_net
assert registry.BUILTIN["linear_chain_crf"].cls.__module__ == "segmenter.models.structured"
for path in sys.argv[1:]:
    net, _ = load_net(path)
    assert type(net.crf).__module__ == "segmenter.models.structured"
    with torch.inference_mode():
        print(run_net(net, [["la la la", "we sing", "la la la", "we sing"]]).logits.flatten().tolist())
"""


def test_moving_a_part_to_another_module_keeps_checkpoints_loading(tmp_path):
    """In a copy of the package, the CRF's module is renamed and only the registry's import
    follows it: a format-1 file (class paths) and a format-2 file (names) still load and
    give the same logits as here."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import ROOT

    old = ROOT / "tests" / "fixtures" / "compat" / "lyrics.ckpt"
    new = upgrade(old, tmp_path / "v2.ckpt")  # rewritten in the current format
    assert torch.load(new, weights_only=True)[KEY]["net"]["crf"] == {"type": "linear_chain_crf"}
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "segmenter", copy / "segmenter", ignore=shutil.ignore_patterns("__pycache__", "*.ckpt"))
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__", "fixtures"))
    models = copy / "segmenter" / "models"
    (models / "crf.py").rename(models / "structured.py")
    registry_py = models / "registry.py"
    text = registry_py.read_text()
    assert "from segmenter.models.crf import" in text
    registry_py.write_text(text.replace("from segmenter.models.crf import", "from segmenter.models.structured import"))

    def logits(cwd, pythonpath):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [sys.executable, "-c", MOVED, str(old), str(new)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    moved = logits(copy, copy)
    assert moved.count("\n") == 2
    here, _ = load_net(new)
    with torch.inference_mode():
        want = run_net(here, [["la la la", "we sing", "la la la", "we sing"]]).logits.flatten().tolist()
    assert moved.splitlines() == [str(want), str(want)]

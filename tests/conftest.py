"""Shared fixtures (helpers that are not fixtures live in tests/helpers.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from tests.helpers import SHARED_DATA, TINY_DATA, compose_train, write_songs

try:  # property tests (hypothesis): in CI the same examples every run, so a red run is reproducible;
    # elsewhere each run explores new ones (a failure found there is pinned with @example)
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        hypothesis_settings.load_profile("ci")
except ImportError:
    pass

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str) -> DictConfig:
        return compose_train(tmp_path, [*TINY_DATA, *overrides])

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained localized model (debug=limit, real configs): <run>/checkpoints/last.ckpt.
    Session-wide: predict and checkpoint tests share one training run."""
    from segmenter.training.train import train

    tmp = tmp_path_factory.mktemp("tiny_checkpoint")
    cfg = compose_train(
        tmp,
        [
            *TINY_DATA,
            "attention=localized",
            "debug=limit",
            "logger=none",
            "callbacks.lr_monitor=null",
            "callbacks.rich_progress_bar=null",
        ],
    )
    train(cfg)
    run = tmp / "run"
    (run / ".hydra").mkdir(exist_ok=True)  # as scripts/train.py leaves it (checkpoint upgrades read it)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def songs_jsonl(tmp_path) -> Path:
    return write_songs(tmp_path / "songs.jsonl")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """tiny_checkpoint's network exported by scripts/export.py's body (the onnx extra: skipped
    without it). Session-wide: the ONNX backend's and the server's tests share one export."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
    from segmenter.inference.export import run
    from tests.helpers import compose_config

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    return run(compose_config("export", [f"ckpt_path={tiny_checkpoint}", f"output={out}", "max_units=40", "overlap=8"]))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails: what loads a model must find it on disk."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

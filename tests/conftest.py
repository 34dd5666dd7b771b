"""Shared fixtures: the real Hydra configs, composed and shrunk to test size."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
ATTENTIONS = ("self", "localized", "boundary_aware")

os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_DATA = [
    "data.corpus.num_docs={train: 16, val: 4, test: 4}",
    "data.corpus.segments_per_doc=4",
    "data.batch_size=4",
]


def compose_train(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """Compose conf/train.yaml as the CLI would, with outputs under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig().set_config(cfg)  # resolves ${hydra:...} interpolations
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


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
    from segmenter.train import train

    tmp = tmp_path_factory.mktemp("tiny_checkpoint")
    cfg = compose_train(tmp, [*TINY_DATA, "attention=localized", "debug=limit", "logger=none",
                              "callbacks.lr_monitor=null", "callbacks.rich_progress_bar=null"])  # fmt: skip
    train(cfg)
    GlobalHydra.instance().clear()
    run = tmp / "run"
    (run / ".hydra").mkdir(exist_ok=True)  # as scripts/train.py leaves it (checkpoint upgrades read it)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run / "checkpoints" / "last.ckpt"


def write_songs(path: Path, *, num_songs: int = 24, seed: int = 0) -> Path:
    """Synthetic songs in the JSONL section format (label 0 = verse, 1 = chorus): verses of
    fresh random lines, and one chorus block that recurs (sometimes with an ad-lib added),
    as a chorus does. Each verse line is its own random words, so only recurrence tells the
    chorus apart."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]

    def line() -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(3, 7)))

    with open(path, "w", encoding="utf-8") as f:
        for n in range(num_songs):
            chorus = [line() for _ in range(rng.randint(2, 4))]
            lines, labels = [], []
            for _ in range(rng.randint(2, 3)):
                verse = [line() for _ in range(rng.randint(3, 6))]
                sung = [c if rng.random() < 0.8 else f"(yeah) {c}" for c in chorus]
                lines += verse + sung
                labels += [0] * len(verse) + [1] * len(sung)
            f.write(json.dumps({"id": f"song{n}", "lines": lines, "labels": labels}) + "\n")
    return path


@pytest.fixture
def songs_jsonl(tmp_path) -> Path:
    return write_songs(tmp_path / "songs.jsonl")

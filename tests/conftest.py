"""Shared fixtures: the real Hydra configs, composed and shrunk to test size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

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

"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import hydra
import pytest
from hydra.errors import ConfigCompositionException

from segmenter.train import build, instantiate_group
from tests.conftest import ATTENTIONS, CONF, TINY_DATA, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_exist():
    assert options("attention") == sorted(ATTENTIONS)
    for group in ("model", "data", "trainer", "logger", "callbacks", "paths", "hydra", "experiment", "debug", "encoder"):
        assert options(group), group
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"fdr", "overfit"} <= set(options("debug"))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_options_build_the_model(tiny_cfg, attention):
    cfg = tiny_cfg(f"attention={attention}")
    dm, model = build(cfg)
    assert model.net.num_classes == dm.num_classes == 2
    kinds = {type(b.attention).__name__ for b in model.net.blocks}
    assert len(kinds) == 1


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp"])
def test_trainer_options_compose(tiny_cfg, trainer):
    cfg = tiny_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_.endswith("Trainer")
    if trainer in ("default", "cpu"):
        hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_callback_and_logger_options_instantiate(tiny_cfg, group):
    for option in options(group):
        cfg = tiny_cfg(f"{group}={option}")
        objs = instantiate_group(cfg.get(group))
        assert option == "none" or objs


@pytest.mark.parametrize("option", ["fdr", "overfit", "limit"])
def test_debug_options_compose(tiny_cfg, option):
    cfg = tiny_cfg(f"debug={option}")
    hydra.utils.instantiate(cfg.trainer, logger=False)


def test_experiment_options_compose(tmp_path):
    for option in options("experiment"):
        compose_train(tmp_path, [f"experiment={option}"])
    small = compose_train(tmp_path, [*TINY_DATA, "experiment=small_builtin"])
    build(small)
    choi = compose_train(tmp_path, ["experiment=choi"])
    assert choi.data.corpus.split == "source_disjoint" and choi.model.net.content is False
    assert choi.model.class_weighting == "sqrt"
    assert choi.encoder._target_.endswith("MiniLMEncoder") and choi.trainer.max_time
    documents = compose_train(tmp_path, ["experiment=choi_document_split"])
    assert documents.data.corpus.split == "random" and documents.model.net.content is True


def test_unknown_keys_fail_loudly(tiny_cfg):
    with pytest.raises(ConfigCompositionException):
        tiny_cfg("attention=sliding")  # no such option
    with pytest.raises(ConfigCompositionException):
        tiny_cfg("attention.windw_size=5")  # typo of window_size


def test_shared_sizes_are_interpolated(tiny_cfg):
    cfg = tiny_cfg("model.net.dim=64", "attention=localized")
    assert cfg.attention.dim == cfg.encoder.dim == 64
    dm, model = build(cfg)
    assert model.net.blocks[0].attention.dim == 64


def test_parameter_counts_match_the_reference_size(tiny_cfg):
    counts = {}
    for attention in ATTENTIONS:
        _, model = build(tiny_cfg(f"attention={attention}"))
        counts[attention] = sum(p.numel() for p in model.parameters())
    assert counts["self"] == counts["localized"]
    assert 400_000 < counts["self"] < 500_000
    assert 1.05 < counts["boundary_aware"] / counts["self"] < 1.09

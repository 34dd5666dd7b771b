"""Every option of every config group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from segmenter.cli.config import attention_types, options
from segmenter.models.attention import BoundaryAwareAttention, LocalizedAttention, SelfAttention
from segmenter.training.train import build, instantiate_group
from tests.helpers import ATTENTIONS, CONF, TINY_DATA, compose_config, compose_train


def test_groups_exist():
    assert attention_types() == list(ATTENTIONS) == options("attention", conf=CONF)
    assert {"self", "localized", "boundary_aware"} <= set(ATTENTIONS)
    for group in (
        "model",
        "data",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "hydra",
        "experiment",
        "debug",
        "encoder",
    ):
        assert options(group), group
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"fdr", "overfit"} <= set(options("debug"))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_options_build_the_model(tiny_cfg, attention):
    """attention=<name> puts the class conf/attention/<name>.yaml names into every block,
    one module of its own per layer."""
    cfg = tiny_cfg(f"attention={attention}")
    dm, model = build(cfg)
    assert model.net.num_classes == dm.num_classes == 2
    named = hydra.utils.get_class(OmegaConf.load(CONF / "attention" / f"{attention}.yaml")._target_)
    assert [type(b.attention) for b in model.net.blocks] == [named] * cfg.model.net.num_layers
    assert len({id(b.attention) for b in model.net.blocks}) == cfg.model.net.num_layers


def test_tools_take_every_attention_type_from_conf_attention():
    """conf/benchmark.yaml and conf/predict_throughput.yaml name no attention type: the
    generated every_attention / attention_keys configs (segmenter.cli.config) spell them out."""
    bench = compose_config("benchmark", ["rows.localized.window_size=5", "~rows.self"])
    assert [r for r in bench.rows if r in ATTENTIONS] == [a for a in ATTENTIONS if a != "self"]
    for name in set(ATTENTIONS) - {"self"}:
        assert bench.rows[name]._target_ == OmegaConf.load(CONF / "attention" / f"{name}.yaml")._target_
    assert bench.rows.localized.window_size == 5 == bench.rows.masked_full.window_size
    throughput = compose_config("predict_throughput", ["checkpoints.localized=x.ckpt"])
    assert dict(throughput.checkpoints) == {**dict.fromkeys(ATTENTIONS), "localized": "x.ckpt"}
    assert throughput.attentions is None  # every type


@pytest.mark.parametrize(
    "attention,cls",
    [("self", SelfAttention), ("localized", LocalizedAttention), ("boundary_aware", BoundaryAwareAttention)],
)
def test_the_three_options_build_the_three_classes(tiny_cfg, attention, cls):
    _, model = build(tiny_cfg(f"attention={attention}"))
    assert all(type(b.attention) is cls for b in model.net.blocks)


@pytest.mark.parametrize("option", [o for o in options("data", conf=CONF) if o != "default"])
def test_data_options_extend_the_default(option):
    """Each data option is default.yaml plus its corpus and what differs; data=default alone
    leaves the corpus to give."""
    default = OmegaConf.load(CONF / "data" / "default.yaml")
    own = OmegaConf.load(CONF / "data" / f"{option}.yaml")
    assert list(own.defaults) == ["default", "_self_"] and "_target_" not in own and own.corpus._target_
    cfg = compose_train(
        Path("unused"), [f"data={option}", "data.corpus.path=x.jsonl"] if option == "jsonl" else [f"data={option}"]
    )
    assert cfg.data._target_ == default._target_ and cfg.data.split_file.endswith("splits.json")
    assert OmegaConf.is_missing(compose_train(Path("unused"), ["data=default"]).data, "corpus")


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


@pytest.mark.parametrize(
    "option,expected",
    [
        ("fdr", {"fast_dev_run": 1}),
        ("overfit", {"overfit_batches": 2, "max_epochs": 30}),
        ("limit", {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 2}),
    ],
)
def test_debug_options_set_the_trainer(tiny_cfg, option, expected):
    cfg = tiny_cfg(f"debug={option}")
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert {k: getattr(trainer, k) for k in expected} == expected
    if option == "overfit":
        assert cfg.callbacks.early_stopping is None
        assert not [c for c in instantiate_group(cfg.callbacks) if type(c).__name__ == "EarlyStopping"]


def test_experiment_options_compose(tmp_path):
    for option in options("experiment"):
        assert compose_train(tmp_path, [f"experiment={option}"]).tags, f"experiment={option} carries no tags"
    assert compose_train(tmp_path, []).tags == []
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
    for attention in ("self", "localized", "boundary_aware"):
        _, model = build(tiny_cfg(f"attention={attention}"))
        counts[attention] = sum(p.numel() for p in model.parameters())
    assert counts["self"] == counts["localized"]
    assert 400_000 < counts["self"] < 500_000
    assert 1.05 < counts["boundary_aware"] / counts["self"] < 1.09


@pytest.mark.parametrize("name", ["predict", "serve", "predict_throughput"])
def test_the_inference_settings_are_the_python_apis(name):
    """The scripts' `segmenter:` group starts from Segmenter's own defaults (one source,
    segmenter.inference.settings); the server batches more windows per pass on purpose."""
    import inspect

    from segmenter.inference.api import Segmenter

    cfg = compose_config(name, ["input=x", "segmenter.overlap=8"] if name == "predict" else [])
    settings = {k: v for k, v in cfg.segmenter.items() if k != "_target_"}
    init, load = (
        inspect.signature(Segmenter.__init__).parameters,
        inspect.signature(Segmenter.from_checkpoint).parameters,
    )
    api = {k: (init[k] if k in init else load[k]).default for k in settings}
    expected = {
        **api,
        **({"batch_size": 64} if name == "serve" else {}),
        **({"overlap": 8} if name == "predict" else {}),
    }
    assert settings == expected and set(settings) >= {"max_units", "overlap", "batch_size", "device", "cache_dir"}
    assert hydra.utils.get_method(cfg.segmenter._target_) == Segmenter.load

"""Training entry point: instantiate data, model, callbacks, loggers and trainer from
the config, fit, then test the best checkpoint."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from segmenter.checkpoint import CheckpointMetadata, net_config
from segmenter.data.datamodule import SegmentationDataModule
from segmenter.module import SegmenterModule

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def build(cfg: DictConfig) -> tuple[SegmentationDataModule, SegmenterModule]:
    """Data first: the number of classes, label names and class counts come from it."""
    datamodule: SegmentationDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    model: SegmenterModule = hydra.utils.instantiate(
        cfg.model,
        net={"num_classes": datamodule.num_classes},
        task=datamodule.task,
        label_names=list(datamodule.label_names),
        class_counts=datamodule.class_counts(),
    )
    return datamodule, model


def train(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    callbacks = instantiate_group(cfg.get("callbacks"))
    # Not a config option: every checkpoint must say how to rebuild its model (predict needs it).
    meta = CheckpointMetadata(
        net=net_config(cfg.model.net, num_classes=datamodule.num_classes),
        task=datamodule.task,
        label_names=datamodule.label_names,
    )
    callbacks.append(meta)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if cfg.get("train"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = dict(trainer.callback_metrics)

    if cfg.get("test"):
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if ckpt is None:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
        log.info("tested checkpoint: %s", ckpt)
        metrics.update(trainer.callback_metrics)

    return {k: float(v) for k, v in metrics.items()}

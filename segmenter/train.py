"""Training entry point: instantiate data, model, callbacks, loggers and trainer from
the config, fit, then test the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from segmenter.callbacks import log_hparams_with_metrics, run_hparams
from segmenter.checkpoint import CheckpointMetadata, net_config
from segmenter.data.datamodule import SegmentationDataModule
from segmenter.module import SegmenterModule
from segmenter.sweep import hydra_choices, save_metrics

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

    ckpt_path = resume_path(cfg.get("ckpt_path"), trainer)
    fit_start = time.perf_counter()
    if cfg.get("train"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - fit_start
    metrics = dict(trainer.callback_metrics)
    best = getattr(trainer.checkpoint_callback, "best_model_score", None)
    if best is not None:  # e.g. val/f1_best: the score of the checkpoint tested below
        metrics[f"{trainer.checkpoint_callback.monitor}_best"] = best

    if cfg.get("test"):
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if ckpt is None:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
        log.info("tested checkpoint: %s", ckpt)
        metrics.update(trainer.callback_metrics)

    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["model/params"] = float(sum(p.numel() for p in model.parameters()))
    metrics["time/fit_s"] = fit_seconds
    if trainer.is_global_zero:  # the record a sweep summary reads (segmenter/sweep.py)
        save_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    log_hparams_with_metrics(trainer, run_hparams(cfg, hydra_choices()), metrics)
    return metrics


def resume_path(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """``ckpt_path=last`` resumes the run whose folder this run writes into (give it
    with ``hydra.run.dir=<old run>``): Lightning picks the newest ``last*.ckpt`` of the
    checkpoint callback; unlike Lightning, a missing one is an error, not a fresh start."""
    if ckpt_path != "last":
        return ckpt_path
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    if not dirpath or not list(Path(dirpath).glob("last*.ckpt")):
        raise FileNotFoundError(
            f"ckpt_path=last but there is no last*.ckpt in {dirpath}: point hydra.run.dir at the run to resume"
            " (e.g. hydra.run.dir=outputs/runs/<run>) or give ckpt_path=<file.ckpt>"
        )
    return ckpt_path

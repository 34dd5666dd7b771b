"""Training entry point: instantiate data, model, callbacks, loggers and trainer from
the config, fit, then test the best checkpoint.

Every checkpoint this opens (the one resumed from, the best one tested after fit) is
checked by ``segmenter.checkpoint.load`` first (weights_only, format, weights digest,
finite weights) and handed to Lightning with ``weights_only=True``; a checkpoint path
taken from a checkpoint's own state must lie in the folder of the checkpoint that named
it (resume) or in this run's checkpoint folder (test)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from segmenter.callbacks import for_terminal, log_hparams_with_metrics, run_hparams
from segmenter.checkpoint import CheckpointError, CheckpointMetadata, check_state_paths, load, net_config, safe_globals
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


class _NoTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def one_line_per_event() -> None:
    """Lightning's messages once each: when the application has set up logging (Hydra's
    console and train.log handlers on the root logger), Lightning's own console handler is
    removed (it printed every INFO line a second time as "INFO: ..."); its advertisements
    and the LeafSpec deprecation warning it triggers in torch are dropped."""
    if logging.getLogger().handlers:
        lightning_log = logging.getLogger("lightning")
        for h in list(lightning_log.handlers):
            if type(h) is logging.StreamHandler:
                lightning_log.removeHandler(h)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")


def train(cfg: DictConfig) -> dict[str, float]:
    # First: a checkpoint to resume from is checked before anything is built or written.
    ckpt_path = resume_path(cfg.get("ckpt_path"), checkpoint_dirs(cfg))
    one_line_per_event()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    callbacks = for_terminal(instantiate_group(cfg.get("callbacks")), tty=sys.stdout.isatty())
    # Not a config option: every checkpoint must say how to rebuild its model (predict needs it).
    meta = CheckpointMetadata(
        net=net_config(cfg.model.net, num_classes=datamodule.num_classes),
        task=datamodule.task,
        label_names=datamodule.label_names,
    )
    callbacks.append(meta)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    fit_start = time.perf_counter()
    if cfg.get("train"):
        new_event_dirs = [Path(lg.log_dir) for lg in loggers if isinstance(lg, TensorBoardLogger) and not Path(lg.log_dir).exists()]
        try:
            with safe_globals():
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except BaseException:
            if trainer.global_step == 0:  # failed before its first step: leave no empty TensorBoard run behind
                for d in new_event_dirs:
                    shutil.rmtree(d, ignore_errors=True)
                    log.info("removed %s: the run failed before its first training step", d)
            raise
    fit_seconds = time.perf_counter() - fit_start
    metrics = dict(trainer.callback_metrics)
    best = getattr(trainer.checkpoint_callback, "best_model_score", None)
    if best is not None:  # e.g. val/f1_best: the score of the checkpoint tested below
        metrics[f"{trainer.checkpoint_callback.monitor}_best"] = best

    if cfg.get("test"):
        ckpt = best_checkpoint(trainer)
        if ckpt is None:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        with safe_globals():
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        log.info("tested checkpoint: %s", ckpt)
        metrics.update(trainer.callback_metrics)

    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["model/params"] = float(sum(p.numel() for p in model.parameters()))
    metrics["time/fit_s"] = fit_seconds
    if trainer.is_global_zero:  # the record a sweep summary reads (segmenter/sweep.py)
        save_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    log_hparams_with_metrics(trainer, run_hparams(cfg, hydra_choices()), metrics)
    return metrics


def checkpoint_dirs(cfg: DictConfig) -> list[str]:
    """The folders the configured ModelCheckpoint callbacks write to."""
    callbacks = cfg.get("callbacks") or {}
    return sorted(
        {str(c.dirpath) for c in callbacks.values() if isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith("ModelCheckpoint") and c.get("dirpath")}
    )


def resume_path(ckpt_path: str | None, dirs: list[str]) -> str | None:
    """The checkpoint to resume from, checked (``segmenter.checkpoint.load`` and
    ``check_state_paths``) before Lightning opens it. ``ckpt_path=last`` resumes the run
    whose folder this run writes into (give it with ``hydra.run.dir=<old run>``): the newest
    ``last*.ckpt`` of the checkpoint callback, as Lightning picks it; unlike Lightning, a
    missing one is an error, not a fresh start."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        candidates = [p for d in dirs for p in Path(d).glob("last*.ckpt")]
        if not candidates:
            raise FileNotFoundError(
                f"ckpt_path=last but there is no last*.ckpt in {', '.join(dirs) or 'a checkpoint folder'}: point hydra.run.dir at the run to resume"
                " (e.g. hydra.run.dir=outputs/runs/<run>) or give ckpt_path=<file.ckpt>"
            )
        ckpt_path = str(max(candidates, key=lambda p: p.stat().st_mtime))
    path = Path(ckpt_path)
    # A checkpoint's callback state names checkpoints of its own run only.
    check_state_paths(load(path), folder=path.resolve().parent, path=path)
    return str(path)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint of this run, to test after fit (None: none written), checked:
    inside this run's checkpoint folder (the path may come from a resumed checkpoint's state)
    and loadable by ``segmenter.checkpoint.load``."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") or None
    if best is None:
        return None
    folder = Path(callback.dirpath).resolve()
    if not Path(best).resolve().is_relative_to(folder):
        raise CheckpointError(
            f"the best checkpoint {best} (from the checkpoint callback's state) is outside this run's checkpoint "
            f"folder {folder}: refusing to open it"
        )
    load(best)
    return best

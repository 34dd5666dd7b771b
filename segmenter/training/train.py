"""One training run from a composed config (scripts/train.py): instantiate data, model,
callbacks, loggers and trainer, fit, test the best checkpoint, and record the run for
comparing runs: metrics.json (the sweep summary reads it) and TensorBoard's HPARAMS entry.

Every checkpoint this opens (the one resumed from, the best one tested after fit) is
checked by ``segmenter.inference.checkpoint.load`` first (weights_only, format, weights digest,
finite weights) and handed to Lightning with ``weights_only=True``; a checkpoint path
taken from a checkpoint's own state must lie in the folder of the checkpoint that named
it (resume) or in this run's checkpoint folder (test)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning import Callback, Trainer

# Private: Lightning has no public form of the flattening its loggers apply to hyperparameters,
# and this entry must match the one TensorBoardLogger.log_hyperparams writes.
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from segmenter.core.io import atomic_write
from segmenter.data.datamodule import SegmentationDataModule
from segmenter.features import Featurizer
from segmenter.inference.checkpoint import CheckpointError, check_state_paths, load, net_config, safe_globals, within
from segmenter.training.callbacks import CheckpointMetadata, LogProgress, monitored_checkpoint, tensorboard_loggers
from segmenter.training.module import SegmenterModule
from segmenter.training.sweep import METRICS_FILE

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
        subsets=datamodule.subsets(),
    )
    datamodule.featurizer = Featurizer.for_net(model.net)  # the network's inputs, made by the loaders
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
    # torchdata's StatefulDataLoader calls a torch API torch has deprecated, once per loader
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")


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
        featurizer=datamodule.featurizer.config(),
        units=datamodule.units,
    )
    callbacks.append(meta)
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers and any(isinstance(c, LearningRateMonitor) for c in callbacks):
        # Lightning refuses the monitor without a logger; logger=none means "no curves", not a crash.
        log.info("logger=none: no learning-rate curve (callbacks.lr_monitor needs a logger)")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # The summary is a callback of the config (callbacks.model_summary): Lightning is told not
    # to add its default one, else it logs that it skips it.
    own_summary = {"enable_model_summary": False} if any(isinstance(c, ModelSummary) for c in callbacks) else {}
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **own_summary
    )

    fit_start = time.perf_counter()
    if cfg.get("train"):
        new_event_dirs = [
            Path(lg.log_dir) for lg in loggers if isinstance(lg, TensorBoardLogger) and not Path(lg.log_dir).exists()
        ]
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
    monitored = monitored_checkpoint(trainer)
    best = getattr(monitored, "best_model_score", None)
    if best is not None:  # e.g. val/f1_best: the score of the checkpoint tested below
        metrics[f"{monitored.monitor}_best"] = best

    if cfg.get("test"):
        ckpt = best_checkpoint(trainer)
        if ckpt is None:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        with safe_globals():
            # verbose=False: Lightning's table prints every digit of a float32; ours rounds.
            results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False)
        if trainer.is_global_zero:
            log.info("test of %s:\n%s", ckpt or "the current weights", metrics_table(results[0] if results else {}))
        metrics.update(trainer.callback_metrics)

    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["model/params"] = float(sum(p.numel() for p in model.parameters()))
    metrics["time/fit_s"] = fit_seconds
    if trainer.is_global_zero:  # the record a sweep summary reads (segmenter/training/sweep.py)
        save_metrics(Path(cfg.paths.output_dir) / METRICS_FILE, metrics)
    log_hparams_with_metrics(trainer, run_hparams(cfg, hydra_choices()), metrics)
    if trainer.is_global_zero:
        log.info("%s", closing_line(Path(cfg.paths.output_dir), monitored))
    return metrics


def metrics_table(metrics: Mapping[str, float], digits: int = 4) -> str:
    """``name  value`` lines, sorted by name, values to ``digits`` significant digits."""
    if not metrics:
        return "  (no metrics)"
    width = max(len(k) for k in metrics)
    return "\n".join(f"  {k.ljust(width)}  {float(v):.{digits}g}" for k, v in sorted(metrics.items()))


def closing_line(run_dir: Path, monitored: Callback | None) -> str:
    """What a user needs after training: the run folder and its best checkpoint (and score)."""
    best = getattr(monitored, "best_model_path", "") or ""
    if not best:
        return f"run folder: {run_dir} (no best checkpoint was kept)"
    score = getattr(monitored, "best_model_score", None)
    scored = f", {monitored.monitor}={float(score):.4g}" if score is not None else ""
    return f"run folder: {run_dir}; best checkpoint: {best}{scored}"


def checkpoint_dirs(cfg: DictConfig) -> list[str]:
    """The folders the configured ModelCheckpoint callbacks write to."""
    callbacks = cfg.get("callbacks") or {}
    return sorted(
        {
            str(c.dirpath)
            for c in callbacks.values()
            if isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith("ModelCheckpoint") and c.get("dirpath")
        }
    )


def resume_path(ckpt_path: str | None, dirs: list[str]) -> str | None:
    """The checkpoint to resume from, checked (``segmenter.inference.checkpoint.load`` and
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
    and loadable by ``segmenter.inference.checkpoint.load``."""
    callback = monitored_checkpoint(trainer)
    best = getattr(callback, "best_model_path", "") or None
    if best is None:
        return None
    if not within(best, callback.dirpath):
        raise CheckpointError(
            f"the best checkpoint {best} (from the checkpoint callback's state) is outside this run's checkpoint "
            f"folder {Path(callback.dirpath).resolve()}: refusing to open it"
        )
    load(best)
    return best


# ----------------------------------------------------------------------------- the run's record


def hydra_choices() -> dict[str, str]:
    """The config group options of the running Hydra job ({} outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def save_metrics(path: Path, metrics: Mapping[str, float]) -> None:
    """A run's final metrics as JSON (non-finite values as null)."""
    clean = {k: (float(v) if math.isfinite(v) else None) for k, v in sorted(metrics.items())}
    atomic_write(Path(path), json.dumps(clean, indent=2) + "\n")


def for_terminal(callbacks: list[Callback], *, tty: bool) -> list[Callback]:
    """``callbacks`` with a Rich progress bar replaced by LogProgress when not on a terminal."""
    if tty:
        return callbacks
    return [LogProgress() if isinstance(c, RichProgressBar) else c for c in callbacks]


# -- HPARAMS ---------------------------------------------------------------------------
# The HPARAMS tab's metric columns: curves the run logs anyway (their last value is shown),
# so the tab adds no one-point charts to the Time Series and Scalars tabs.
HPARAM_METRICS = ("val/f1", "test/f1", "test/pk", "test/windowdiff")
# Final numbers with no curve of their own: columns of the HPARAMS table (as hparam values).
HPARAM_FINALS = {
    "val/f1_best": "final/val_f1_best",
    "train/units_per_sec": "final/units_per_sec",
    "time/fit_s": "final/fit_s",
    "model/params": "final/params",
}


def run_hparams(cfg: DictConfig, choices: Mapping[str, str]) -> dict[str, Any]:
    """What distinguishes runs of a sweep: the chosen config options and the model,
    attention, optimizer, data and trainer settings that sweeps change."""

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    net = {
        k: v for k, v in plain(cfg.model.net).items() if k not in ("encoder", "attention", "num_classes", "_target_")
    }
    attention = {k: v for k, v in plain(cfg.model.net.attention).items() if not k.startswith("_")}
    model = {k: plain(v) for k, v in cfg.model.items() if k not in ("net", "_target_")}
    return {
        **{g: choices[g] for g in ("data", "encoder", "attention", "trainer", "experiment") if g in choices},
        "tags": ",".join(str(t) for t in cfg.get("tags") or []),
        "seed": cfg.get("seed"),
        "net": net,
        "attn": attention,
        "model": model,
        "batch_size": cfg.data.get("batch_size"),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "max_steps": cfg.trainer.get("max_steps", -1),
    }


def log_hparams_with_metrics(trainer: Trainer, params: dict[str, Any], metrics: Mapping[str, float]) -> None:
    """One HPARAMS entry per run: its hyperparameters and final numbers (best val F1, speed,
    size) and, as metric columns, the curves val/f1 and test F1/Pk/WindowDiff, so TensorBoard
    can sort and compare a sweep's runs. Written with the HPARAMS plugin only: no scalars."""
    finals = {tag: float(metrics[k]) for k, tag in HPARAM_FINALS.items() if k in metrics and math.isfinite(metrics[k])}
    shown = {k: 0.0 for k in HPARAM_METRICS if k in metrics}  # names only: the values come from the curves
    for lg in tensorboard_loggers(trainer):
        flat = lg._sanitize_params(_flatten_dict(_convert_params({**params, **finals})))  # private: as above
        # Private: SummaryWriter has no public way to reach (and reopen) its event-file writer;
        # its public add_hparams writes into a separate sub-run folder instead.
        writer = lg.experiment._get_file_writer()
        for summary in hparams(flat, shown):
            writer.add_summary(summary)
        # Written after fit and test have closed the writer: flush and close it again, or
        # the entry waits in the writer's queue and a reader (or a killed job) misses it.
        lg.finalize("success")

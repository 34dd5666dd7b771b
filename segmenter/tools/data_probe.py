"""What runs inside the processes scripts/bench_data.py measures (segmenter/tools/data_scale.py):
the training runs' callback (``TrainingProbe``) and the timed data preparation
(``prepare_in_this_process``). Apart from data_scale so that the benchmark's own process
does not import Lightning."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from lightning import Callback, LightningModule, Trainer

from segmenter.cli.config import config_dir
from segmenter.core.io import atomic_write
from segmenter.evaluation.benchmark import resident_bytes


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (VmHWM: unlike ru_maxrss, not raised to the
    parent's by fork + exec)."""
    return resident_bytes()[1] / 2**20


class TrainingProbe(Callback):
    """Added to the measured training runs (``+callbacks.data_probe``): writes ``path`` (JSON)
    when training ends: the wall-clock time of the first training step, the units and
    seconds of the training loop with its data loading, and the peak resident set."""

    def __init__(self, *, path: str) -> None:
        self.path = path
        self.first_step_unix: float | None = None
        self.units, self.seconds = 0, 0.0
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_end = None  # an epoch's first batch waits on loader start-up: not counted

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_end is not None:  # this batch's loading, step and callbacks
            self.seconds += now - self._last_end
            self.units += int(batch["features"]["mask"].sum())
        self._last_end = now

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {
            "first_step_unix": self.first_step_unix,
            "loop_units": self.units,
            "loop_seconds": self.seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
        atomic_write(self.path, json.dumps(record) + "\n")


def prepare_in_this_process(overrides: Sequence[str], *, path: str) -> dict[str, float]:
    """Compose conf/train.yaml with ``overrides``, instantiate its DataModule and time
    ``prepare_data()`` + ``setup("fit")`` (imports excluded); the seconds and the peak
    resident set go to ``path`` (JSON) and are returned."""
    import hydra
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    start = time.perf_counter()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    record = {"prepare_s": time.perf_counter() - start, "prepare_peak_rss_mb": peak_rss_mb()}
    atomic_write(path, json.dumps(record) + "\n")
    return record


def warm_in_this_process(overrides: Sequence[str], *, path: str, chunk_size: int | None = None) -> dict[str, float]:
    """Compose conf/train.yaml with ``overrides`` (an encoder with frozen vectors, e.g.
    ``encoder=minilm``), prepare its DataModule and warm the vector cache on every unit of
    the corpus as the training callback does (``Featurizer.warm(datamodule.all_units())``),
    with a stand-in for MiniLM (zero vectors: what is measured is reading the units, the
    chunks and the cache, not the network, which would take hours on a CPU). The seconds of
    the warm-up, the units and the peak resident set go to ``path`` (JSON) and are returned."""
    import hydra
    import torch
    from hydra import compose, initialize_config_dir

    from segmenter.features import Featurizer
    from segmenter.features.featurizer import WARM_CHUNK

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    featurizer = Featurizer.for_net(hydra.utils.instantiate(cfg.encoder))
    vectors = featurizer.feature("minilm_vectors")
    if vectors is None:
        raise ValueError(f"encoder {cfg.encoder._target_} has no frozen vectors to warm (use encoder=minilm)")
    vectors._encode = lambda texts: torch.zeros(len(texts), vectors.dim)  # (n, D): the stand-in
    units = 0

    def counted():
        nonlocal units
        for unit in datamodule.all_units():
            units += 1
            yield unit

    start = time.perf_counter()
    featurizer.warm(counted(), chunk_size=chunk_size or WARM_CHUNK)
    record = {"warm_s": time.perf_counter() - start, "units": units, "warm_peak_rss_mb": peak_rss_mb()}
    atomic_write(path, json.dumps(record) + "\n")
    return record

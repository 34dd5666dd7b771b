"""Checks of a composed config before a script does anything with it: values the user
must give, types and ranges of the settings users change most, and data paths that
must exist. Each failure is a ``ConfigError`` naming the key, its value and what is
expected (scripts/*.py run these through ``segmenter.cli``: one line, exit status 2).

Only keys present in the config are checked, so one table serves every script."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_ABSENT = object()
# ??? values the training script fills in itself, not the user.
FILLED_BY_PROGRAM = {"model.net.num_classes"}
# What to give for a ??? value, by key.
MISSING_HINTS = {
    "ckpt_path": "a checkpoint written by scripts/train.py, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt",
    "input": "a .txt file, a folder of .txt files, a .jsonl file or - for standard input, e.g. input=doc.txt",
    "data.corpus.path": "a JSONL corpus file, e.g. data=jsonl data.corpus.path=songs.jsonl "
    "(or data.corpus.files={train: a.jsonl, val: b.jsonl, test: c.jsonl})",
}
# Data locations: key -> where the data comes from (shown when the path does not exist).
DATA_PATHS = {
    "data.corpus.path": "your JSONL corpus (docs/data.md: bring your own corpus)",
    "data.corpus.root": "the corpus folder; data=choi reads ${paths.shared_data_dir}/choi (default ../shared/data/choi "
    "next to the repository, set with paths.shared_data_dir=<folder holding choi/>): Choi's (2000) "
    "C99 test set, folders 1/ 2/ 3/ ... of *.ref files",
}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


@dataclass(frozen=True)
class Number:
    """A number (``whole``: an int) in [lo, hi]; ``none``: null allowed; ``words``: strings
    allowed too; ``flag``: a bool allowed too (fast_dev_run=true)."""

    lo: float = -math.inf
    hi: float = math.inf
    whole: bool = True
    none: bool = False
    words: tuple[str, ...] = ()
    flag: bool = False
    many: bool = False  # a list of such values is fine too (predict_throughput's threads=[1, 2])

    def check(self, key: str, value: Any) -> None:
        if value is None and self.none:
            return
        if self.many and isinstance(value, ListConfig):
            for i, v in enumerate(value):
                self.check(f"{key}[{i}]", v)
            return
        if isinstance(value, bool):
            if self.flag:
                return
        elif isinstance(value, str) and value in self.words:
            return
        elif isinstance(value, int) or (isinstance(value, float) and not self.whole and math.isfinite(value)):
            if self.lo <= value <= self.hi:
                return
        raise ConfigError(f"{key}={value!r}: expected {self.describe()}")

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.lo > -math.inf and self.hi < math.inf:
            kind += f" from {self.lo:g} to {self.hi:g}"
        elif self.lo > -math.inf:
            kind += f" >= {self.lo:g}"
        extras = [*(repr(w) for w in self.words), *(["true/false"] if self.flag else []), *(["null"] if self.none else [])]
        return kind + (f" (or {', '.join(extras)})" if extras else "")


INT1 = Number(lo=1)
FRACTION = Number(lo=0, hi=1, whole=False)
BATCHES = Number(lo=0, whole=False, none=True)  # limit_*_batches: a count or a fraction
# key -> rule, checked in this order (a key others interpolate comes first: its name is reported).
RULES: dict[str, Number] = {
    "seed": Number(lo=0, none=True),
    "trainer.max_epochs": Number(lo=-1, none=True),
    "trainer.min_epochs": Number(lo=0, none=True),
    "trainer.max_steps": Number(lo=-1),
    "trainer.log_every_n_steps": INT1,
    "trainer.check_val_every_n_epoch": Number(lo=1, none=True),
    "trainer.accumulate_grad_batches": INT1,
    "trainer.gradient_clip_val": Number(lo=0, whole=False, none=True),
    "trainer.fast_dev_run": Number(lo=0, flag=True),
    "trainer.limit_train_batches": BATCHES,
    "trainer.limit_val_batches": BATCHES,
    "trainer.limit_test_batches": BATCHES,
    "trainer.num_nodes": INT1,
    "data.batch_size": INT1,
    "data.num_workers": Number(lo=0),
    "data.max_units": Number(lo=2),
    "data.overlap": Number(lo=0),
    "model.net.dim": INT1,
    "model.net.num_layers": INT1,
    "model.net.ff_dim": INT1,
    "model.net.dropout": FRACTION,
    "model.optimizer.lr": Number(lo=0, whole=False),
    "model.aux_loss_weight": Number(lo=0, whole=False),
    "attention.num_heads": INT1,
    "attention.window_size": INT1,
    "attention.dropout": FRACTION,
    "encoder.num_buckets": INT1,
    "encoder.code_dim": INT1,
    "segmenter.max_units": INT1,
    "segmenter.overlap": Number(lo=0),
    "segmenter.batch_size": INT1,
    "threads": Number(lo=1, none=True, many=True),
}


def missing_keys(cfg: DictConfig) -> list[str]:
    """The ??? values the user has to give (the hydra node and program-filled ones aside;
    an interpolation of a ??? value, such as predict's segmenter.path: ${ckpt_path}, is not
    reported itself: the value it points at is)."""
    keys = sorted(k for k in _missing(cfg, "") if not k.startswith("hydra.") and k not in FILLED_BY_PROGRAM)
    if "data.corpus.path" in keys and OmegaConf.select(cfg, "data.corpus.files", default=None) is not None:
        keys.remove("data.corpus.path")  # the per-split files are given instead
    return keys


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first problem found: a missing value, a value of the wrong
    type or out of range (RULES), a data path that does not exist (DATA_PATHS)."""
    missing = missing_keys(cfg)
    if missing:
        hints = "; ".join(f"{k}: {MISSING_HINTS[k]}" for k in missing if k in MISSING_HINTS)
        raise ConfigError(
            f"missing value{'s' if len(missing) > 1 else ''} for {', '.join(missing)} (??? in the config): "
            f"give {'them' if len(missing) > 1 else 'it'} on the command line as key=value"
            + (f" ({hints})" if hints else "")
            + "; --help lists the settings"
        )
    for key, rule in RULES.items():
        value = _select(cfg, key)
        if value is not _ABSENT:
            rule.check(key, value)
    for key, origin in DATA_PATHS.items():
        value = _select(cfg, key)
        if isinstance(value, str) and not Path(value).exists():
            raise ConfigError(f"{key}={value}: not found. It should point at {origin}")
    files = _select(cfg, "data.corpus.files")
    if isinstance(files, DictConfig):
        for split, value in files.items():
            if isinstance(value, str) and not Path(value).exists():
                raise ConfigError(f"data.corpus.files.{split}={value}: not found")


def _missing(node: Any, prefix: str) -> list[str]:
    out = []
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for k in keys:
        full = f"{prefix}{k}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{k}]"
        if OmegaConf.is_missing(node, k):
            out.append(full)
        elif not OmegaConf.is_interpolation(node, k):
            child = node._get_node(k)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                out += _missing(child, full + ".")
    return out


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception as e:  # an interpolation that cannot be resolved
        raise ConfigError(f"{key}: {type(e).__name__}: {str(e).splitlines()[0]}") from e

"""The config tree (segmenter/conf/) as code sees it: where it is, which options its groups offer,
what composing it needs registered first, and the checks a composed config passes before
a script does anything with it.

- ``config_dir()``, ``options(group)``, ``attention_types()``: the options are the YAML
  files of a group's folder; tests and tools discover the attention types here, so a new
  attention type is a class plus ``conf/attention/<name>.yaml`` and nothing else.
- ``register()`` (run when the package is imported): the ``${uid:}`` resolver of
  conf/hydra/default.yaml, two generated configs that spell out every attention option
  (``every_attention``: each option under its own name, the benchmark's rows;
  ``attention_keys``: a null under every option's name, predict_throughput's checkpoints),
  and the ``segmenter`` group (``segmenter: default``: the inference settings with the
  Python API's defaults, segmenter.inference.settings).
- ``validate(cfg)``: keys added with ``+`` that have no place, alternatives settled (``files``
  given: ``path`` null), values the user must give, types and ranges of the settings users
  change most, the name of a shipped model, and data paths that must exist. Each failure is
  a ``ConfigError`` naming the key, its value and what is expected (scripts/*.py run these
  through ``segmenter.cli``: one line, exit status 2). Only keys present in the config are
  checked, so one table serves every script. The ranges are not written here: ``RULES``
  maps each key to the bound (segmenter.core.bounds.Number) that the code taking the
  setting declares and checks itself, so the CLI, the API, the server and the checkpoint
  loader give one verdict.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra.utils
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from segmenter.core.bounds import Number
from segmenter.inference import settings as inference_settings
from segmenter.pretrained import check_name as check_pretrained

# ----------------------------------------------------------------------------- the tree

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"  # segmenter/conf: shipped in the wheel


def config_dir() -> Path:
    """The config tree, segmenter/conf (inside the package, so an installed segmenter has it)."""
    return CONFIG_DIR


def options(group: str, *, conf: str | os.PathLike | None = None) -> list[str]:
    """The options of a config group: the stems of ``<conf>/<group>/*.yaml``, sorted."""
    return sorted(p.stem for p in (Path(conf) if conf else config_dir()).joinpath(group).glob("*.yaml"))


def attention_types(*, conf: str | os.PathLike | None = None) -> list[str]:
    """Every attention type: the options of the ``attention`` group (conf/attention/*.yaml)."""
    return options("attention", conf=conf)


# ----------------------------------------------------------------------------- registrations


def unique_id(nbytes: int = 3) -> str:
    """``${uid:}``: random hex (6 characters by default), drawn once per config (cached like
    Hydra's ``${now:}``, and copied with it into every job of a sweep). Run folders carry it:
    two runs started in the same second never share a folder."""
    return secrets.token_hex(int(nbytes))


def register() -> None:
    """What the configs need before Hydra composes them (idempotent)."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", unique_id, use_cache=True)
    names = attention_types()
    store = ConfigStore.instance()
    # `- every_attention@rows` in a defaults list: rows.<name> = conf/attention/<name>.yaml, for every name
    store.store(name="every_attention", node={"defaults": [{f"/attention@{n}": n} for n in names]})
    # `- attention_keys@checkpoints`: checkpoints.<name> = null for every name (set with checkpoints.<name>=...)
    store.store(name="attention_keys", node={n: None for n in names})
    # `- segmenter: default`: the inference settings of predict, serve and predict_throughput, with
    # the Python API's defaults (segmenter.inference.settings: one source for both)
    store.store(group="segmenter", name="default", node=inference_settings.config_node())


# ----------------------------------------------------------------------------- checks

_ABSENT = object()
# ??? values the training script fills in itself, not the user.
FILLED_BY_PROGRAM = {"model.net.num_classes"}
# What to give for a ??? value, by key.
MISSING_HINTS = {
    "ckpt_path": "a checkpoint written by scripts/train.py, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt",
    "input": "a .txt file, a folder of .txt files, a .jsonl file or - for standard input, e.g. input=doc.txt",
    "data.corpus": "a data option that names a corpus, e.g. data=builtin, data=choi, data=jsonl or data=wiki",
    "data.corpus.path": "a JSONL corpus file, e.g. data=jsonl data.corpus.path=songs.jsonl "
    "(or data.corpus.files={train: a.jsonl, val: b.jsonl, test: c.jsonl})",
}
# Data locations: key -> where the data comes from (shown when the path does not exist).
# data.corpus.path is read by several corpus classes: CORPUS_PATHS says what each expects.
DATA_PATHS = {
    "data.corpus.path": "the corpus (docs/data.md: bring your own corpus)",
    "data.corpus.root": "the corpus folder; data=choi reads ${paths.shared_data_dir}/choi (default ../shared/data/choi "
    "next to the repository, set with paths.shared_data_dir=<folder holding choi/>): Choi's (2000) "
    "C99 test set as distributed with the code of Koshorek et al. (2018), folders 1/ 2/ 3/ ... of *.ref files",
}


# What data.corpus.path should be, by the corpus class (data.corpus._target_'s last part).
CORPUS_PATHS = {
    "JsonlCorpus": 'your JSONL corpus, one {"id", "lines", "labels"} object per line '
    "(docs/data.md: bring your own corpus)",
    "SeparatorCorpus": "a Wiki-727K-format corpus: a folder tree of article files (read recursively) or one "
    "file, one sentence per line and `========,<level>,<title>.` section headers; data=wiki reads "
    "${paths.shared_data_dir}/wiki727k_sample by default (set paths.shared_data_dir=<folder holding "
    "wiki727k_sample/>); the full Wiki-727K is the release of Koshorek et al. (2018), unpacked as is "
    "(docs/data.md: where Choi and Wiki-727K come from)",
    "RstCorpus": "a folder of reStructuredText sources; data=python_docs reads CPython's, fetched once by "
    "`make python-docs` (docs/data.md)",
}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


# Settings of other libraries (Lightning's Trainer, torch's optimizer and threads, the seed):
# nothing of ours takes them, so their bounds are declared here, where they are checked.
SEED = Number(lo=0, none=True)
MAX_EPOCHS = Number(lo=-1, none=True)
MIN_EPOCHS = Number(lo=0, none=True)
MAX_STEPS = Number(lo=-1)
AT_LEAST_ONE = Number(lo=1)
EVERY_N_EPOCHS = Number(lo=1, none=True)
CLIP = Number(lo=0, whole=False, none=True)
FAST_DEV_RUN = Number(lo=0, flag=True)
BATCHES = Number(lo=0, whole=False, none=True)  # limit_*_batches: a count or a fraction
LEARNING_RATE = Number(lo=0, whole=False)
THREADS = Number(lo=1, none=True, many=True)  # predict_throughput's threads=[1, 2] too

# Config key -> the bound of the setting, where it is declared ("module:NAME"; imported when
# a config has the key, so a refusal in predict loads no training code). Checked in this order:
# a key others interpolate comes first, so its name is reported.
RULES: dict[str, str] = {
    "seed": f"{__name__}:SEED",
    "trainer.max_epochs": f"{__name__}:MAX_EPOCHS",
    "trainer.min_epochs": f"{__name__}:MIN_EPOCHS",
    "trainer.max_steps": f"{__name__}:MAX_STEPS",
    "trainer.log_every_n_steps": f"{__name__}:AT_LEAST_ONE",
    "trainer.check_val_every_n_epoch": f"{__name__}:EVERY_N_EPOCHS",
    "trainer.accumulate_grad_batches": f"{__name__}:AT_LEAST_ONE",
    "trainer.gradient_clip_val": f"{__name__}:CLIP",
    "trainer.fast_dev_run": f"{__name__}:FAST_DEV_RUN",
    "trainer.limit_train_batches": f"{__name__}:BATCHES",
    "trainer.limit_val_batches": f"{__name__}:BATCHES",
    "trainer.limit_test_batches": f"{__name__}:BATCHES",
    "trainer.num_nodes": f"{__name__}:AT_LEAST_ONE",
    "data.batch_size": "segmenter.data.datamodule:BATCH_SIZE",
    "data.num_workers": "segmenter.data.datamodule:NUM_WORKERS",
    "data.max_units": "segmenter.data.datamodule:MAX_UNITS",
    "data.overlap": "segmenter.core.windows:OVERLAP",
    "model.net.dim": "segmenter.models.net:DIM",
    "model.net.num_layers": "segmenter.models.net:NUM_LAYERS",
    "model.net.ff_dim": "segmenter.models.net:FF_DIM",
    "model.net.dropout": "segmenter.models.net:DROPOUT",
    "model.optimizer.lr": f"{__name__}:LEARNING_RATE",
    "model.aux_loss_weight": "segmenter.training.module:AUX_LOSS_WEIGHT",
    "attention.num_heads": "segmenter.models.attention:NUM_HEADS",
    "attention.window_size": "segmenter.models.attention:WINDOW_SIZE",
    "attention.dropout": "segmenter.models.attention:DROPOUT",
    "attention.block_size": "segmenter.models.attention:BLOCK_SIZE",
    "encoder.num_buckets": "segmenter.models.encoder:NUM_BUCKETS",
    "encoder.code_dim": "segmenter.models.encoder:CODE_DIM",
    "threshold": "segmenter.core.decisions:THRESHOLD",
    "num_segments": "segmenter.core.decisions:NUM_SEGMENTS",
    "min_segment_units": "segmenter.core.decisions:MIN_SEGMENT_UNITS",
    "length_prior": "segmenter.core.decisions:LENGTH_PRIOR",
    "weights": "segmenter.core.decisions:PRIOR_WEIGHTS",
    "penalties": "segmenter.core.decisions:PRIOR_PENALTIES",
    "margin": "segmenter.core.decisions:PRIOR_MARGIN",
    "max_segment_chars": "segmenter.core.limits:MAX_SEGMENT_CHARS",
    "max_segment_tokens": "segmenter.core.limits:MAX_SEGMENT_TOKENS",
    "segmenter.max_units": "segmenter.core.windows:WINDOW",
    "segmenter.overlap": "segmenter.core.windows:OVERLAP",
    "segmenter.batch_size": "segmenter.inference.api:BATCH_SIZE",
    "threads": f"{__name__}:THREADS",
}


def rule(key: str) -> Number:
    """The bound of config key ``key`` (RULES), from the module that declares it."""
    module, _, name = RULES[key].partition(":")
    return getattr(importlib.import_module(module), name)


def missing_keys(cfg: DictConfig) -> list[str]:
    """The ??? values the user has to give (the hydra node and program-filled ones aside;
    an interpolation of a ??? value, such as predict's segmenter.path: ${ckpt_path}, is not
    reported itself: the value it points at is)."""
    return sorted(k for k in _missing(cfg, "") if not k.startswith("hydra.") and k not in FILLED_BY_PROGRAM)


def settle_alternatives(cfg: DictConfig) -> None:
    """Where the user gave one of two alternatives, the other's ??? becomes null: a file
    corpus takes ``path`` (split by seed) or ``files`` (one per split), and its config asks
    for ``path`` (``???``) so that giving neither is reported."""
    if OmegaConf.select(cfg, "data.corpus.files", default=None) is not None and OmegaConf.is_missing(
        cfg.data.corpus, "path"
    ):
        cfg.data.corpus.path = None


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key under ``node`` (a config node or plain dict), dotted from ``prefix``:
    inner nodes and leaves, interpolations unresolved."""
    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    out = []
    for k, v in (tree or {}).items():
        full = f"{prefix}{k}"
        out.append(full)
        if isinstance(v, dict):
            out += dotted_keys(v, full + ".")
    return out


def unknown_key(key: str, candidates: list[str]) -> str:
    """The one line for a key the config does not have: the key and the nearest valid key
    (difflib), the hydra node left out unless the key is in it."""
    if not key.startswith("hydra."):
        candidates = [c for c in candidates if c != "hydra" and not c.startswith("hydra.")]
    near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not near:  # a key given without its node (window_size for attention.window_size)
        tails = {c: c.rsplit(".", 1)[-1] for c in candidates}
        near = [c for c in candidates if tails[c] in difflib.get_close_matches(key, tails.values(), n=1, cutoff=0.8)]
    hint = f"the nearest valid key is {near[0]}" if near else "no valid key is close to it"
    return f"unknown key {key}; {hint} (--help lists the settings)"


def _parameters(target: Any) -> list[str] | None:
    """The keyword arguments the part named ``target`` (a ``_target_``) takes; None where it
    takes any (``**kwargs``) or cannot be looked at here (its constructor checks them)."""
    if not isinstance(target, str) or "${" in target:
        return None
    try:
        params = inspect.signature(hydra.utils.get_object(target)).parameters.values()
    except Exception:  # not importable or no signature: instantiating it reports the problem
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _part_collection(node: Any) -> bool:
    """A node of named parts (callbacks): ``+callbacks.<name>._target_=...`` adds one."""
    children = OmegaConf.to_container(node, resolve=False).values() if isinstance(node, DictConfig) else ()
    return bool(children) and all(c is None or (isinstance(c, dict) and "_target_" in c) for c in children)


def check_added_keys(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """ConfigError for a ``+key=value`` override (Hydra adds any key it is given, and nothing
    would read a misspelled one) that the config has no place for. A key may be added as an
    argument its part's ``_target_`` takes (``+model.net.cohesion.radius=4``), as one of
    Hydra's own keys of a part (``_target_``, ``_partial_``), or as a new entry of a node of
    named parts (``+callbacks.ema._target_=...``). Config groups (``+group=option``) are
    Hydra's to check."""
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(overrides)):
        if not override.is_add() or override.package is not None or _is_group(override.key_or_group):
            continue
        key = override.key_or_group
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        prefix = parent_key + "." if parent_key else ""
        if isinstance(parent, DictConfig) and "_target_" in parent:
            if name.startswith("_") and name.endswith("_"):
                continue
            takes = _parameters(OmegaConf.to_container(parent, resolve=False)["_target_"])
            if takes is None or name in takes:
                continue
            candidates = [prefix + p for p in takes]
        elif _part_collection(parent):
            continue
        else:
            candidates = [k for k in dotted_keys(cfg) if k != key and not k.startswith(key + ".")]
        raise ConfigError(f"{override.input_line}: {unknown_key(key, candidates)}")


def _is_group(name: str) -> bool:
    """Whether ``name`` is a config group (a folder of conf/, or Hydra's own)."""
    return name == "hydra" or name.startswith("hydra/") or config_dir().joinpath(name).is_dir()


def validate(cfg: DictConfig, *, overrides: Sequence[str] = ()) -> None:
    """Raise ConfigError for the first problem found: a key added with ``+`` that the config
    has no place for (``check_added_keys``, of the command line's ``overrides``), a missing
    value, a value of the wrong type or out of range (RULES: the bounds declared by the code
    that takes each setting), an unknown shipped model, a data path that does not exist
    (DATA_PATHS). First settles alternatives (``settle_alternatives``): the config is what
    the script then runs with."""
    check_added_keys(cfg, overrides)
    settle_alternatives(cfg)
    missing = missing_keys(cfg)
    if missing:
        hints = "; ".join(f"{k}: {MISSING_HINTS[k]}" for k in missing if k in MISSING_HINTS)
        raise ConfigError(
            f"missing value{'s' if len(missing) > 1 else ''} for {', '.join(missing)} (??? in the config): "
            f"give {'them' if len(missing) > 1 else 'it'} on the command line as key=value"
            + (f" ({hints})" if hints else "")
            + "; --help lists the settings"
        )
    for key in RULES:
        value = _select(cfg, key)
        if value is not _ABSENT:
            try:
                rule(key).check(key, value)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    pretrained = _select(cfg, "pretrained")
    if pretrained not in (_ABSENT, None):
        # One shipped model (predict, serve, export), or a list of them (predict_throughput).
        for name in pretrained if isinstance(pretrained, ListConfig) else [pretrained]:
            try:
                check_pretrained(name)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    for key, origin in DATA_PATHS.items():
        value = _select(cfg, key)
        if isinstance(value, str) and not Path(value).exists():
            if key == "data.corpus.path":
                corpus = str(_select(cfg, "data.corpus._target_")).rsplit(".", 1)[-1]
                origin = CORPUS_PATHS.get(corpus, origin)
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
            child = node[k]  # neither missing nor an interpolation: reading it resolves nothing
            if isinstance(child, (DictConfig, ListConfig)):
                out += _missing(child, full + ".")
    return out


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception as e:  # an interpolation that cannot be resolved
        raise ConfigError(f"{key}: {type(e).__name__}: {str(e).splitlines()[0]}") from e

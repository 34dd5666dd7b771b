"""What a segmenter checkpoint carries, and how it is loaded safely.

Every checkpoint written by ``scripts/train.py`` holds, next to Lightning's own
entries, a ``"segmenter"`` entry of plain data (YAML-able: str, int, float, bool,
None, lists, dicts)::

    {"format_version": 1, "segmenter_version": "0.1.0",
     "net": {...},            # cfg.model.net, resolved, num_classes filled in:
                              # the encoder and attention _target_s and all sizes
     "task": "boundary", "label_names": ["inside", "boundary"],
     "weights_sha256": "..."} # digest of the state_dict's tensors, checked on load

(written by ``segmenter.callbacks.CheckpointMetadata``), so the model is rebuilt without
the training run's config folder. The whole file
is plain data (module.py keeps the optimizer factories out of the hyperparameters),
so it loads with ``torch.load(weights_only=True)``: unpickling cannot run code.
Rebuilding the net instantiates the ``_target_``s of the "net" entry, so those are
checked too: only ``torch.nn.Module`` classes defined in the segmenter package, and
no OmegaConf interpolations, are accepted; a stranger's checkpoint cannot name
``os.system`` there either. Sizes in the net entry are bounded (``SIZE_LIMITS``) and
paths (``cache_dir``) come from the loading side, never from the file. The weights'
digest catches damaged copies; non-finite weights are refused.

Class paths are part of the format: every ``_target_`` a checkpoint of segmenter 0.1.0
names (segmenter.models.{net,encoder,attention,crf,minilm}.<Class>) still imports from
that path (tests/test_compat.py loads checkpoints written before the restructure). A
class that moves must leave its old path importable or be added to a rename map here.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

import segmenter
from segmenter.data.document import check_label_names, check_task
from segmenter.io import atomic_file
from segmenter.models.net import SegmenterNet

log = logging.getLogger(__name__)

KEY = "segmenter"  # the checkpoint entry this module owns
FORMAT_VERSION = 1  # bump when the entry changes; load() says what to do with other versions
TRUSTED_PACKAGE = "segmenter"  # _target_s must be nn.Module classes defined under it
HYDRA_KEYS = {"_target_", "_partial_"}  # the only Hydra keys a net entry may use
DIGEST_KEY = "weights_sha256"  # in the "segmenter" entry: weights_digest(state_dict) at save time
# Largest value a net entry may give these keys (wherever they occur in it): a checkpoint
# cannot make loading allocate terabytes. Ten to a hundred times the sizes this project uses.
SIZE_LIMITS = {
    "dim": 16_384, "ff_dim": 65_536, "code_dim": 16_384, "num_buckets": 1 << 22, "num_layers": 256,
    "num_heads": 1_024, "window_size": 1 << 20, "radius": 4_096, "blocks": 4_096, "char_ngram": 64,
    "num_classes": 65_536, "batch_size": 1 << 16, "max_seq_length": 4_096,
    "surface_buckets": 1 << 16, "surface_ngram": 64, "buckets": 1 << 22, "words": 64, "stripe": 4_096, "block_size": 1 << 16, "query_block": 1 << 20,
}  # fmt: skip
# Keys naming places on disk: taken from the loading side's settings, never from the file.
PATH_KEYS = {"cache_dir"}
# How torch 2.3-2.13 word a weights_only refusal of a pickled object, and the name it gives.
_PICKLED = re.compile(
    r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|unrecognized function|Unsupported class|"
    r"classes allowlisted via `add_safe_globals` but got) <?(?:class )?'?([\w.<>]+)"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, damaged, unsafe or of an unknown format."""


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state_dict in sorted key order: key, dtype, shape
    and the raw bytes. Equal weights give equal digests on every machine (CPU bytes)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state_dict[{key!r}] is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing


def net_config(net: DictConfig | Mapping[str, Any], *, num_classes: int) -> dict[str, Any]:
    """``cfg.model.net`` as plain, resolved data with ``num_classes`` filled in."""
    plain = OmegaConf.to_container(net, resolve=True) if isinstance(net, DictConfig) else copy.deepcopy(dict(net))
    plain["num_classes"] = int(num_classes)
    return plain


def metadata(*, net: Mapping[str, Any], task: str, label_names: Sequence[str]) -> dict[str, Any]:
    """The checkpoint's "segmenter" entry (validated: plain data, known task, one name per class)."""
    check_task(task)
    check_label_names(label_names, net.get("num_classes"))
    meta = {
        "format_version": FORMAT_VERSION,
        "segmenter_version": segmenter.__version__,
        "net": copy.deepcopy(dict(net)),
        "task": task,
        "label_names": [str(n) for n in label_names],
    }
    _check_plain(meta, "segmenter")
    return meta


# ----------------------------------------------------------------------------- reading


def read(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (plain data and tensors: unpickling cannot
    run code), numeric numpy arrays allowed; CheckpointError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... by damage kind
        msg = str(e)
        if "Weights only load failed" in msg or _PICKLED.search(msg):
            unsafe = _PICKLED.search(msg)
            raise CheckpointError(
                f"{path} holds pickled Python objects, refusing to load it: unpickling them could run "
                "arbitrary code. Checkpoints written by segmenter before checkpoint "
                f"format {FORMAT_VERSION} (segmenter <= 0.1.0 without a 'segmenter' entry) look like "
                "this. If you trust the file, convert it once: python -c \"from segmenter.checkpoint "
                f"import upgrade; upgrade('{path}', '{path.with_suffix('.v1.ckpt')}')\" "
                f"(reads the run's .hydra/config.yaml), or retrain. It refers to {unsafe.group(1) if unsafe else 'a Python object'}."
            ) from e
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint, or damaged "
            f"(truncated copy?): {type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}"
        ) from e


def load(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (weights_only: plain data and tensors only), its
    "segmenter" entry checked, its weights checked against the stored digest and for
    non-finite values. Raises CheckpointError saying what is wrong and what to do."""
    path = Path(path)
    ckpt = read(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    meta = ckpt.get(KEY)
    if meta is None:
        written = ckpt.get("pytorch-lightning_version", "unknown")
        raise CheckpointError(
            f"{path} has no '{KEY}' entry: it was written by segmenter before checkpoint format "
            f"{FORMAT_VERSION} (segmenter <= 0.1.0, Lightning {written}) or by another program, and does "
            "not say how to rebuild its model. Convert it with segmenter.checkpoint.upgrade (needs the "
            "run's .hydra/config.yaml), or retrain with this version."
        )
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        by = meta.get("segmenter_version", "unknown") if isinstance(meta, dict) else "unknown"
        raise CheckpointError(
            f"{path} was written by segmenter {by} in checkpoint format {version!r}; this is segmenter "
            f"{segmenter.__version__}, which reads format {FORMAT_VERSION}. "
            + (
                "Upgrade segmenter (pip install -U segmenter) to read it."
                if isinstance(version, int) and version > FORMAT_VERSION
                else "Convert it with segmenter.checkpoint.upgrade, or retrain."
            )
        )
    for key in ("net", "task", "label_names"):
        if key not in meta:
            raise CheckpointError(f"{path}: '{KEY}' entry lacks {key!r}")
    try:
        _check_plain(meta, KEY)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    check_weights(ckpt, path)
    return ckpt


def check_weights(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """The state_dict's digest equals the one stored at save time, and every weight is finite.
    A checkpoint from before the digest (format 1 of segmenter 0.1.0) loads with a warning."""
    state = ckpt["state_dict"]
    stored = ckpt[KEY].get(DIGEST_KEY)
    if stored is None:
        log.warning(
            "%s has no weights digest (written before segmenter stored one): damage to its weights cannot "
            "be detected. Add one with: python -c \"from segmenter.checkpoint import upgrade; upgrade('%s', '%s')\"",
            path, path, Path(path).with_suffix(".v1.ckpt"),
        )  # fmt: skip
    else:
        actual = weights_digest(state)
        if actual != stored:
            raise CheckpointError(
                f"{path}: the weights are damaged: their SHA-256 digest {actual[:16]}... differs from the "
                f"{stored[:16]}... stored when the checkpoint was written. Copy the file again or use another checkpoint."
            )
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: weight {key!r} has {bad} non-finite values (NaN or inf): refusing to use it")


def build_net(net: Mapping[str, Any], *, where: str = "net", cache_dir: str | None = None) -> nn.Module:
    """Instantiate a checkpoint's net entry, after checking every ``_target_`` in it and
    bounding its sizes; every ``cache_dir`` in it is replaced by ``cache_dir`` (the loading
    side's setting; None: no cache on disk)."""
    _check_targets(net, where)
    _check_sizes(net, where)
    net = _local_paths(net, {"cache_dir": cache_dir})
    top = hydra.utils.get_class(net["_target_"])
    if not issubclass(top, SegmenterNet):
        raise CheckpointError(f"{where}._target_={net['_target_']!r} is not a SegmenterNet")
    return hydra.utils.instantiate(OmegaConf.create(dict(net)))


def net_state(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint's state_dict (the LightningModule's "net." prefix removed)."""
    return {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def load_net(path: str | Path, *, cache_dir: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(net with the checkpoint's weights, in eval mode; the "segmenter" entry).
    ``cache_dir``: where a MiniLM encoder may cache embeddings (None: memory only)."""
    ckpt = load(path)
    meta = ckpt[KEY]
    try:
        net = build_net(meta["net"], where=f"{path}: net", cache_dir=cache_dir)
    except CheckpointError:  # already says what is wrong
        raise
    except Exception as e:  # a class renamed or an argument removed since the checkpoint was written
        raise CheckpointError(
            f"{path}: cannot rebuild the model written by segmenter {meta.get('segmenter_version')}: "
            f"{type(e).__name__}: {e}"
        ) from e
    state = net_state(ckpt)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model it describes: {e}") from e
    if len(meta["label_names"]) != net.num_classes:
        raise CheckpointError(f"{path}: {len(meta['label_names'])} label names for {net.num_classes} classes")
    return net.eval(), meta


# ModelCheckpoint state entries naming checkpoint files (best_k_models: a {path: score} dict).
STATE_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path", "best_k_models")


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside ``folder`` once both are resolved (``..`` and links followed)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_state_paths(ckpt: Mapping[str, Any], *, folder: str | Path, path: str | Path) -> None:
    """Every checkpoint path in the callbacks' state (ModelCheckpoint's best_model_path,
    best_k_models...) lies in ``folder``: Lightning opens the best one after fit and
    deletes those that drop out of the top k, so a path elsewhere is refused."""
    folder = Path(folder).resolve()
    for name, state in (ckpt.get("callbacks") or {}).items():
        if not isinstance(state, Mapping):
            continue
        for key in STATE_PATH_KEYS:
            value = state.get(key)
            for p in (value if isinstance(value, Mapping) else [value]):
                if p in (None, ""):
                    continue
                if not isinstance(p, str) or not within(p, folder):
                    raise CheckpointError(
                        f"{path}: the state of callback {str(name)[:60]} names {key}={p!r}, outside the checkpoint's "
                        f"folder {folder}: refusing to resume from it (the file was altered or comes from elsewhere)"
                    )


def run_dir(ckpt_path: str | os.PathLike) -> Path:
    """The training run a checkpoint belongs to: <run> for <run>/checkpoints/x.ckpt
    (the folder holding the checkpoint otherwise)."""
    ckpt = Path(ckpt_path).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def run_config_file(ckpt_path: str | os.PathLike) -> Path:
    """The Hydra config snapshot of a checkpoint's training run."""
    return run_dir(ckpt_path) / ".hydra" / "config.yaml"


def run_config(ckpt_path: str | os.PathLike, *, reader: str) -> DictConfig:
    """The config of a checkpoint's training run, ``paths.output_dir`` pointing at the run
    folder (the saved value points at Hydra's runtime folder). ``reader``: who needs it, for
    the error when the snapshot is missing."""
    path = run_config_file(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"run config {path} not found next to checkpoint {ckpt_path} ({reader} reads the run's data settings)")
    cfg = OmegaConf.load(path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir(ckpt_path))
    return cfg


def run_cache_dir(cfg: DictConfig) -> str | None:
    """Where the run's MiniLM encoder cached its unit vectors (None: no such cache): the
    units training encoded need not be encoded again."""
    return OmegaConf.select(cfg, "encoder.cache_dir", default=None)


def upgrade(src: str | Path, dst: str | Path, *, config: str | Path | None = None) -> Path:
    """Convert an older checkpoint into a self-contained, plain one with a weights digest:
    one written before format 1 (pickled optimizer factories, no "segmenter" entry; its net
    entry is rebuilt from ``config``, by default the training run's ``.hydra/config.yaml``:
    <run>/checkpoints/x.ckpt -> <run>/.hydra/config.yaml), or a format-1 one without a digest.

    The source is read with ``weights_only=True`` too: each pickled object in it (an optimizer
    factory) comes back as an inert placeholder that is dropped, never called or imported,
    and a placeholder that would have to stay in the result is an error."""
    src, dst = Path(src), Path(dst)
    ckpt = _read_with_placeholders(src)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{src} is not a Lightning checkpoint (no 'state_dict' entry)")
    hp = dict(ckpt.get("hyper_parameters") or {})
    ckpt["hyper_parameters"] = {k: v for k, v in hp.items() if k not in ("optimizer", "scheduler", "net")}
    if not isinstance(ckpt.get(KEY), dict):
        config = Path(config) if config else run_config_file(src)
        if not config.is_file():
            raise CheckpointError(f"upgrade needs the training config of {src}; not found: {config}")
        cfg = OmegaConf.load(config)
        num_classes = ckpt["state_dict"]["net.head.weight"].shape[0]  # (C, D) head
        label_names = hp.get("label_names") or [str(i) for i in range(num_classes)]
        ckpt[KEY] = metadata(
            net=net_config(cfg.model.net, num_classes=num_classes), task=hp.get("task", "boundary"), label_names=list(label_names)
        )
    _check_no_placeholder(ckpt, str(src))
    ckpt[KEY][DIGEST_KEY] = weights_digest(ckpt["state_dict"])
    with atomic_file(dst, "wb") as f:
        torch.save(ckpt, f)
    load(dst)  # proves the result is plain (loads with weights_only=True) and its digest fits
    log.info("upgraded %s -> %s (checkpoint format %d, weights digest)", src, dst, FORMAT_VERSION)
    return dst


class _Placeholder:
    """Stands in for a pickled Python object while upgrading: holds its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


_GLOBAL_NAME = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _read_with_placeholders(path: Path, *, max_globals: int = 100) -> Any:
    """``torch.load(weights_only=True)``, each global the file names replaced by a placeholder
    class of that name (modules torch blocks, such as os, stay refused)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    stand_ins: list[tuple[type, str]] = []
    for _ in range(max_globals):
        try:
            with torch.serialization.safe_globals([*_numeric_array_globals(), *stand_ins]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            m = _GLOBAL_NAME.search(str(e))
            if not m or any(name == m.group(1) for _, name in stand_ins):
                raise CheckpointError(f"cannot upgrade {path}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}") from e
            stand_ins.append((type(m.group(1), (_Placeholder,), {}), m.group(1)))
    raise CheckpointError(f"cannot upgrade {path}: it names more than {max_globals} Python globals")


def _check_no_placeholder(obj: Any, where: str) -> None:
    if isinstance(obj, _Placeholder):
        raise CheckpointError(f"cannot upgrade: {where} is a pickled {type(obj).__name__} object, which a plain checkpoint cannot hold")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_no_placeholder(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_no_placeholder(v, f"{where}[{i}]")


# ----------------------------------------------------------------------------- checks


def safe_globals():
    """The context under which weights_only loading accepts numeric numpy arrays (Lightning's
    own torch.load calls in fit/test run under it too)."""
    return torch.serialization.safe_globals(_numeric_array_globals())


def _check_sizes(obj: Any, where: str) -> None:
    """Every key of SIZE_LIMITS holds whole numbers in [0, limit] (a list: each element)."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if k in SIZE_LIMITS:
                for x in v if isinstance(v, list) else [v]:
                    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= SIZE_LIMITS[k]:
                        raise CheckpointError(
                            f"{where}.{k}={v!r}: expected whole numbers from 0 to {SIZE_LIMITS[k]:,} (refusing to build it)"
                        )
            _check_sizes(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_sizes(v, f"{where}[{i}]")


def _local_paths(obj: Any, local: Mapping[str, Any]) -> Any:
    """A copy of ``obj`` with every key of PATH_KEYS set to ``local``'s value."""
    if isinstance(obj, Mapping):
        return {k: (local.get(k) if k in PATH_KEYS else _local_paths(v, local)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_local_paths(v, local) for v in obj]
    return obj


def _numeric_array_globals() -> list[Any]:
    """What unpickling a numeric numpy array needs (callbacks may store e.g. numpy's random
    state): the array constructor and numeric dtypes. An object array would need more and
    stays refused, so no Python object can come back from the file."""
    dtypes = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64")]
    return [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, *dtypes]


def _check_plain(obj: Any, where: str) -> None:
    """YAML-able data only, and no OmegaConf interpolation (resolvers could read the environment)."""
    if isinstance(obj, str):
        if "${" in obj:
            raise ValueError(f"{where}: interpolation {obj!r} in checkpoint data")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: non-string key {k!r}")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (bool, int, float))):
        raise ValueError(f"{where}: {type(obj).__name__} is not plain data")


def _check_targets(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for k in obj:
            if k.startswith("_") and k.endswith("_") and k not in HYDRA_KEYS:
                raise CheckpointError(f"{where}: Hydra key {k!r} is not allowed in a checkpoint")
        if "_target_" in obj:
            _check_target(obj["_target_"], f"{where}._target_")
        for k, v in obj.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_targets(v, f"{where}[{i}]")


def _check_target(target: Any, where: str) -> None:
    """Only nn.Module classes defined in the segmenter package, named by their own path
    (an alias such as segmenter.models.net.torch.load resolves elsewhere and is refused)."""
    if not isinstance(target, str) or not target.startswith(TRUSTED_PACKAGE + "."):
        raise CheckpointError(f"{where}={target!r}: only classes of the {TRUSTED_PACKAGE} package may be built")
    try:
        obj = hydra.utils.get_object(target)
    except Exception as e:
        raise CheckpointError(f"{where}={target!r} does not exist in segmenter {segmenter.__version__}: {e}") from e
    if not (
        isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and f"{obj.__module__}.{obj.__qualname__}" == target
        and obj.__module__.startswith(TRUSTED_PACKAGE + ".")
    ):
        raise CheckpointError(f"{where}={target!r} is not a torch.nn.Module class defined in {TRUSTED_PACKAGE}")

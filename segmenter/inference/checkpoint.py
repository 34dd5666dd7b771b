"""What a segmenter checkpoint carries, and how it is loaded safely.

Every checkpoint written by ``scripts/train.py`` holds, next to Lightning's own
entries, a ``"segmenter"`` entry of plain data (YAML-able: str, int, float, bool,
None, lists, dicts)::

    {"format_version": 2, "segmenter_version": "0.1.0",
     "net": {"type": "segmenter_net", "dim": 128, ...,      # every part by its registered
             "attention": {"type": "localized", ...}, ...},  # name, with its arguments
     "featurizer": [{"kind": "hashed", ...}],  # the inputs it was trained on
     "task": "boundary", "label_names": ["inside", "boundary"],
     "units": "sentences",  # what its training units were: the default for plain text
     "weights_sha256": "..."} # digest of the state_dict's tensors, checked on load

(written by ``segmenter.training.callbacks.CheckpointMetadata``), so the model is rebuilt without
the training run's config folder. The whole file is plain data (module.py keeps the
optimizer factories out of the hyperparameters), so it loads with
``torch.load(weights_only=True)``: unpickling cannot run code. Rebuilding the net builds
only parts registered in ``segmenter.models.registry``, with the sizes each part bounds
there; a stranger's checkpoint cannot name ``os.system``. Paths (``cache_dir``) come
from the loading side, never from the file. The weights' digest catches damaged copies;
non-finite weights are refused.

No class path is part of the format: moving a class changes an import in the registry.
Format 1 (segmenter 0.1.0) named classes by path; it is read through one table,
``FORMAT1_NAMES``, and its files keep loading (tests/inference/test_compat.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import nn

import segmenter
from segmenter.core.bounds import Number
from segmenter.core.document import DEFAULT_UNITS, UNITS, check_label_names, check_task, check_units
from segmenter.core.io import atomic_file
from segmenter.features.featurizer import Featurizer
from segmenter.models import registry
from segmenter.models.net import SegmenterNet

log = logging.getLogger(__name__)

KEY = "segmenter"  # the checkpoint entry this module owns
FORMAT_VERSION = 2  # bump when the entry changes; load() says what to do with other versions
DIGEST_KEY = "weights_sha256"  # in the "segmenter" entry: weights_digest(state_dict) at save time
TYPE_KEY = "type"  # in the net entry: a part's registered name (segmenter.models.registry)
# Format 1 named parts by class path; each path it ever wrote, and the part it means now.
# The one place old class paths live: a format-1 file is read through this table, not imported.
FORMAT1_NAMES = MappingProxyType(
    {
        "segmenter.models.net.SegmenterNet": "segmenter_net",
        "segmenter.models.encoder.HashedNgramEncoder": "hashed",
        "segmenter.models.minilm.MiniLMEncoder": "minilm",
        "segmenter.models.minilm.HybridEncoder": "hybrid",
        "segmenter.models.attention.SelfAttention": "self",
        "segmenter.models.attention.LocalizedAttention": "localized",
        "segmenter.models.attention.BoundaryAwareAttention": "boundary_aware",
        "segmenter.models.net.CohesionProfile": "cohesion_profile",
        "segmenter.models.net.SelfSimilarity": "self_similarity",
        "segmenter.models.net.LeadWords": "lead_words",  # removed since: refused saying why (registry.REMOVED)
        "segmenter.models.crf.LinearChainCRF": "linear_chain_crf",
    }
)
FORMAT1_PATH_KEYS = ("cache_dir",)  # format 1 stored the training side's paths; they are dropped
# How torch 2.3-2.13 word a weights_only refusal of a pickled object, and the name it gives.
_PICKLED = re.compile(
    r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|unrecognized function|Unsupported class|"
    r"classes allowlisted via `add_safe_globals` but got) <?(?:class )?'?([\w.<>]+)"
)


# How every file torch.save writes begins: a zip archive, or (torch < 1.6,
# _use_new_zipfile_serialization=False) a protocol-2 pickle of torch's magic number 0x1950a86a20f9469cfc6c.
_ZIP_HEAD = b"PK\x03\x04"
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


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
    """``cfg.model.net`` as a checkpoint's net entry: plain, resolved data, ``num_classes``
    filled in, each ``_target_`` replaced by its part's registered name and each path left out."""
    plain = OmegaConf.to_container(net, resolve=True) if isinstance(net, DictConfig) else copy.deepcopy(dict(net))
    plain["num_classes"] = int(num_classes)
    return _named(plain, "model.net")


def _named(obj: Any, where: str) -> Any:
    """A Hydra config of parts -> the same parts by registered name (ValueError: a class not registered)."""
    if isinstance(obj, Mapping):
        if "_target_" not in obj:
            return {k: _named(v, f"{where}.{k}") for k, v in obj.items()}
        cls = hydra.utils.get_class(obj["_target_"])
        try:
            name = registry.name_of(cls)
        except KeyError as e:
            raise ValueError(f"{where}: {e.args[0]}") from None
        part = registry.get(name)
        if bool(obj.get("_partial_", False)) != part.partial:
            raise ValueError(
                f"{where}: {name!r} is built {'once per layer' if part.partial else 'once'}, "
                f"so _partial_ must be {part.partial}; got {obj.get('_partial_', False)!r}"
            )
        args = {k: _named(v, f"{where}.{k}") for k, v in obj.items() if k not in ("_target_", "_partial_", *part.paths)}
        return {TYPE_KEY: name, **args}
    if isinstance(obj, list):
        return [_named(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def metadata(
    *,
    net: Mapping[str, Any],
    task: str,
    label_names: Sequence[str],
    featurizer: Sequence[Mapping[str, Any]] | None = None,
    units: str | None = None,
) -> dict[str, Any]:
    """The checkpoint's "segmenter" entry (validated: plain data, known task, one name per
    class). ``featurizer``: the settings of the featurizer the network was trained with
    (``Featurizer.config()``), checked against the one rebuilt on load. ``units``: what the
    training documents' units were (sentences | lines), the model's default for plain text
    (a checkpoint without it: sentences)."""
    check_task(task)
    if units is not None:
        check_units(units)
    check_label_names(label_names, net.get("num_classes"))
    meta = {
        "format_version": FORMAT_VERSION,
        "segmenter_version": segmenter.__version__,
        "net": copy.deepcopy(dict(net)),
        "task": task,
        "label_names": [str(n) for n in label_names],
    }
    if featurizer is not None:
        meta["featurizer"] = copy.deepcopy(list(featurizer))
    if units is not None:
        meta["units"] = units
    check_plain(meta, "segmenter")
    return meta


# ----------------------------------------------------------------------------- reading


def read(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (plain data and tensors: unpickling cannot
    run code), numeric numpy arrays allowed; CheckpointError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_HEAD))
    if not head.startswith(_ZIP_HEAD) and head != _LEGACY_HEAD:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is not a checkpoint at all (every file torch.save writes starts "
            "as a zip archive or, before torch 1.6, with torch's magic number; this one starts with the bytes "
            f"{head[:8].hex(' ') or 'none: it is empty'}). Give a .ckpt file that scripts/train.py wrote, "
            "or pretrained=<name> for a shipped model"
        )
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
                f"format 1 (segmenter <= 0.1.0 without a 'segmenter' entry) look like "
                'this. If you trust the file, convert it once: python -c "from segmenter.inference.checkpoint '
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
            f"1 (segmenter <= 0.1.0, Lightning {written}) or by another program, and does "
            "not say how to rebuild its model. Convert it with segmenter.inference.checkpoint.upgrade (needs the "
            "run's .hydra/config.yaml), or retrain with this version."
        )
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version not in (1, FORMAT_VERSION):
        by = meta.get("segmenter_version", "unknown") if isinstance(meta, dict) else "unknown"
        raise CheckpointError(
            f"{path} was written by segmenter {by} in checkpoint format {version!r}; this is segmenter "
            f"{segmenter.__version__}, which reads formats 1 to {FORMAT_VERSION}. "
            + (
                "Upgrade segmenter (pip install -U segmenter) to read it."
                if isinstance(version, int) and version > FORMAT_VERSION
                else "Convert it with segmenter.inference.checkpoint.upgrade, or retrain."
            )
        )
    for key in ("net", "task", "label_names"):
        if key not in meta:
            raise CheckpointError(f"{path}: '{KEY}' entry lacks {key!r}")
    try:
        check_plain(meta, KEY)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    check_weights(ckpt, path)
    if version == 1:  # in memory only: the file stays as it is
        ckpt[KEY] = {**meta, "format_version": FORMAT_VERSION, "net": from_format1(meta["net"], where=f"{path}: net")}
    return ckpt


def from_format1(net: Any, *, where: str = "net") -> Any:
    """A format-1 net entry (class paths in ``_target_``) as format 2 (registered names),
    through FORMAT1_NAMES only: a class path not in it is refused, never imported."""
    if isinstance(net, Mapping):
        for k in net:
            if k.startswith("_") and k.endswith("_") and k not in ("_target_", "_partial_"):
                raise CheckpointError(f"{where}: Hydra key {k!r} is not allowed in a checkpoint")
        if "_target_" not in net:
            return {k: from_format1(v, where=f"{where}.{k}") for k, v in net.items()}
        target = net["_target_"]
        if not isinstance(target, str) or target not in FORMAT1_NAMES:
            raise CheckpointError(
                f"{where}._target_={target!r} is not a part segmenter ever saved: refusing to build it"
            )
        args = {
            k: from_format1(v, where=f"{where}.{k}")
            for k, v in net.items()
            if k not in ("_target_", "_partial_", *FORMAT1_PATH_KEYS)
        }
        return {TYPE_KEY: FORMAT1_NAMES[target], **args}
    if isinstance(net, list):
        return [from_format1(v, where=f"{where}[{i}]") for i, v in enumerate(net)]
    return net


def check_weights(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """The state_dict's digest equals the one stored at save time, and every weight is finite.
    A checkpoint from before the digest (format 1 of segmenter 0.1.0) loads with a warning."""
    state = ckpt["state_dict"]
    stored = ckpt[KEY].get(DIGEST_KEY)
    if stored is None:
        log.warning(
            "%s has no weights digest (written before segmenter stored one): damage to its weights cannot "
            "be detected. Add one with: python -c \"from segmenter.inference.checkpoint import upgrade; upgrade('%s', '%s')\"",
            path,
            path,
            Path(path).with_suffix(".v1.ckpt"),
        )
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
            raise CheckpointError(
                f"{path}: weight {key!r} has {bad} non-finite values (NaN or inf): refusing to use it"
            )


def build_net(net: Mapping[str, Any], *, where: str = "net", cache_dir: str | None = None) -> nn.Module:
    """Build a checkpoint's net entry: each ``{"type": name, **kwargs}`` through the part
    registered as ``name``, after bounding its sizes (a format-1 entry is read through
    FORMAT1_NAMES first). Paths come from the loading side: ``cache_dir`` (None: no cache on
    disk) goes to every part that takes one."""
    if _has_key(net, "_target_"):
        net = from_format1(net, where=where)
    top = _build(net, where, {"cache_dir": cache_dir})
    if not isinstance(top, SegmenterNet):
        raise CheckpointError(f"{where}.{TYPE_KEY}={net.get(TYPE_KEY)!r} is not the segmenter network")
    return top


def _build(obj: Any, where: str, local: Mapping[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_build(v, f"{where}[{i}]", local) for i, v in enumerate(obj)]
    if not isinstance(obj, Mapping):
        return obj
    if TYPE_KEY not in obj:
        return {k: _build(v, f"{where}.{k}", local) for k, v in obj.items()}
    name = obj[TYPE_KEY]
    try:
        part = registry.get(name) if isinstance(name, str) else None
    except KeyError as e:
        raise CheckpointError(f"{where}.{TYPE_KEY}: {e.args[0]}: refusing to build it") from None
    if part is None:
        raise CheckpointError(f"{where}.{TYPE_KEY}={name!r}: expected a part's registered name")
    kwargs = {}
    for k, v in obj.items():
        if k == TYPE_KEY:
            continue
        if k.startswith("_") and k.endswith("_"):
            raise CheckpointError(f"{where}: Hydra key {k!r} is not allowed in a checkpoint")
        if k in part.paths:
            raise CheckpointError(f"{where}.{k}: a path, which comes from the loading side, never from the file")
        if k in part.removed:
            if v == part.removed[k]:  # the value that meant "off": the network is the same without it
                continue
            raise CheckpointError(f"{where}.{k}={v!r}: {registry.REMOVED[f'{name}.{k}']}: refusing to build it")
        if k in part.limits:
            _check_size(v, part.limits[k], f"{where}.{k}")
        kwargs[k] = _build(v, f"{where}.{k}", local)
    kwargs.update({k: local.get(k) for k in part.paths})
    return functools.partial(part.cls, **kwargs) if part.partial else part.cls(**kwargs)


def _check_size(value: Any, limit: Number | int, where: str) -> None:
    """``value`` within the part's declared bound (an int n: whole numbers from 0 to n; None:
    the argument's "none"); a list: each element."""
    bound = limit if isinstance(limit, Number) else Number(lo=0, hi=limit)
    many = isinstance(value, list)
    if (value is None and not many) or all(bound.allows(x) for x in (value if many else [value])):
        return
    raise CheckpointError(
        f"{where}={value!r}: expected {'a list, each element ' if many else ''}{bound.describe()} (refusing to build it)"
    )


def _has_key(obj: Any, key: str) -> bool:
    if isinstance(obj, Mapping):
        return key in obj or any(_has_key(v, key) for v in obj.values())
    return isinstance(obj, list) and any(_has_key(v, key) for v in obj)


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
    if meta.get("units", DEFAULT_UNITS) not in UNITS:
        raise CheckpointError(f"{path}: units={meta['units']!r} is not one of {UNITS}")
    saved, rebuilt = meta.get("featurizer"), Featurizer.for_net(net).config()
    if saved is not None and saved != rebuilt:  # format 1 did not store it
        raise CheckpointError(
            f"{path}: the network was trained on features {saved}, but this version of segmenter would give it "
            f"{rebuilt}: its outputs would be wrong. Use segmenter {meta.get('segmenter_version')} or retrain."
        )
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
            for p in value if isinstance(value, Mapping) else [value]:
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
        raise FileNotFoundError(
            f"run config {path} not found next to checkpoint {ckpt_path} ({reader} reads the run's data settings)"
        )
    cfg = OmegaConf.load(path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir(ckpt_path))
        _drop_removed_keys(cfg)
    return cfg


# Keys an older run's config may hold for options removed since (docs/pretrained.md#removed-options),
# by the ``_target_`` of the node that holds them. They changed only the training split, and the
# readers of a run's config (evaluate, the pretrained build) read its validation and test splits.
RUN_CONFIG_REMOVED = MappingProxyType({"segmenter.data.mixture.MixedCorpus": ("reorder", "seed")})


def _drop_removed_keys(node: Any) -> None:
    """Delete RUN_CONFIG_REMOVED's keys wherever they occur, resolving nothing (a run's
    config may hold interpolations and ??? that only some readers need)."""
    if isinstance(node, DictConfig):
        if "_target_" in node and not OmegaConf.is_interpolation(node, "_target_"):
            for key in RUN_CONFIG_REMOVED.get(node["_target_"], ()):
                if key in node:
                    log.info("run config: dropping %s (an option removed since the run was trained)", key)
                    del node[key]
        keys = list(node.keys())
    elif isinstance(node, ListConfig):
        keys = list(range(len(node)))
    else:
        return
    for k in keys:
        if not OmegaConf.is_missing(node, k) and not OmegaConf.is_interpolation(node, k):
            _drop_removed_keys(node[k])


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
            net=net_config(cfg.model.net, num_classes=num_classes),
            task=hp.get("task", "boundary"),
            label_names=list(label_names),
        )
    elif ckpt[KEY].get("format_version") == 1:
        ckpt[KEY] = {
            **ckpt[KEY],
            "format_version": FORMAT_VERSION,
            "net": from_format1(ckpt[KEY]["net"], where=f"{src}: net"),
        }
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
                raise CheckpointError(
                    f"cannot upgrade {path}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
                ) from e
            stand_ins.append((type(m.group(1), (_Placeholder,), {}), m.group(1)))
    raise CheckpointError(f"cannot upgrade {path}: it names more than {max_globals} Python globals")


def _check_no_placeholder(obj: Any, where: str) -> None:
    if isinstance(obj, _Placeholder):
        raise CheckpointError(
            f"cannot upgrade: {where} is a pickled {type(obj).__name__} object, which a plain checkpoint cannot hold"
        )
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


def _numeric_array_globals() -> list[Any]:
    """What unpickling a numeric numpy array needs (callbacks may store e.g. numpy's random
    state): the array constructor and numeric dtypes. An object array would need more and
    stays refused, so no Python object can come back from the file."""
    dtypes = [
        type(np.dtype(t))
        for t in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float16",
            "float32",
            "float64",
        )
    ]
    return [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, *dtypes]


def check_plain(obj: Any, where: str) -> None:
    """YAML-able data only, and no OmegaConf interpolation (resolvers could read the environment)."""
    if isinstance(obj, str):
        if "${" in obj:
            raise ValueError(f"{where}: interpolation {obj!r} in checkpoint data")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: non-string key {k!r}")
            check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (bool, int, float))):
        raise ValueError(f"{where}: {type(obj).__name__} is not plain data")

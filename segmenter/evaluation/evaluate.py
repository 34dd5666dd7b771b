"""Evaluate a trained checkpoint next to baselines on the same documents.

For each data subset (Choi: the segment-length range of the document's folder, e.g. 3-5)
and overall, one table of boundary F1, Pk and WindowDiff for the model and every baseline,
printed and written as markdown and JSON. Section labels (verse/chorus): macro F1 and F1 per
label, then boundary F1, Pk and WindowDiff of the label changes, next to the section
baselines (majority label, repetition rule); a model with a CRF is scored with its Viterbi
decoding and with per-unit argmax.

The documents are streamed: read from the corpus store (segmenter/data/store.py, as training
reads them) or the folder one at a time, predicted ``EVAL_CHUNK`` at a time, and scored into
metrics with summed states, so evaluating a split of any size never holds it.
"""

from __future__ import annotations

import filecmp
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import torch
from omegaconf import DictConfig, open_dict

from segmenter.cli.config import ConfigError
from segmenter.core import limits
from segmenter.core.document import BOUNDARY, SECTION, Document, boundary_labels
from segmenter.core.io import atomic_write
from segmenter.data.formats import iter_separator_files
from segmenter.data.splits import SPLIT_FILE, fingerprint, read_split_file
from segmenter.inference.api import Prediction, Segmenter, check_source
from segmenter.inference.checkpoint import run_cache_dir, run_config, run_config_file, run_dir
from segmenter.inference.settings import DEFAULTS, check_minilm_dtype
from segmenter.pretrained import checkpoint_path
from segmenter.training.metrics import build_metrics

log = logging.getLogger(__name__)

ALL = "all"
EVAL_CHUNK = 1024  # documents predicted in one batched call (their windows batched by length)
# evaluate.yaml's decision settings, passed to Segmenter.predict as they are
DECISIONS = ("threshold", "min_segment_units", "length_prior", "max_segment_chars", "max_segment_tokens", "tokenizer")
LIMITS = ("max_segment_chars", "max_segment_tokens", "tokenizer")


def unit_boundaries(pred: Prediction) -> list[int]:
    """A prediction's boundaries per unit of its document: where a length limit cut a unit
    into pieces (``Prediction.split_units``), the unit ends where its last piece does (a cut
    inside a unit has no place in the reference, which scores units)."""
    inner = {k for first, stop in pred.split_units for k in range(first, stop - 1)}
    return [b for k, b in enumerate(pred.boundaries) if k not in inner]


class Source(NamedTuple):
    """What is evaluated and what comes with it."""

    model: Segmenter
    data: DictConfig  # the data settings its documents come from (unless data= is given)
    split_file: Path | None  # the training run's record of its splits, to check them against
    out_dir: Path  # where the tables go (unless output_dir= is given)
    checkpoint: Path
    label: str  # how the tables name it


def load_run(ckpt_path: str | Path, *, minilm_dtype: str = DEFAULTS.minilm_dtype) -> Source:
    """A training run's checkpoint: the model rebuilt from the checkpoint alone (weights_only
    loading) reading the run's embedding cache, the run's data settings and split file;
    tables in <run>/eval."""
    cfg = run_config(ckpt_path, reader="evaluate")
    run = run_dir(ckpt_path)
    model = Segmenter.from_checkpoint(ckpt_path, cache_dir=run_cache_dir(cfg), minilm_dtype=minilm_dtype)
    return Source(model, cfg.data, run / SPLIT_FILE, run / "eval", Path(ckpt_path), f"checkpoint {ckpt_path}")


def load_checkpoint(ckpt_path: str | Path, cfg: DictConfig) -> Source:
    """A checkpoint: its training run's (``load_run``) where the run folder is beside it, else
    a checkpoint file alone (copied, or given a length prior: segmenter.inference.prior), whose
    documents come from ``data=``; its tables go beside it, in eval/."""
    path = Path(ckpt_path)
    if run_config_file(path).is_file():
        return load_run(path, minilm_dtype=cfg.get("minilm_dtype", DEFAULTS.minilm_dtype))
    if cfg.get("data") is None:
        raise ConfigError(
            f"ckpt_path={path} has no training run beside it ({run_config_file(path)}) to take its data from: "
            "name the documents with data=<option> (and split= or folder=)"
        )
    model = Segmenter.from_checkpoint(
        path,
        cache_dir=str(Path(cfg.paths.cache_dir) / "unit_embeddings"),
        minilm_dtype=cfg.get("minilm_dtype", DEFAULTS.minilm_dtype),
    )
    return Source(model, cfg.data, None, path.parent / "eval", path, f"checkpoint {path}")


def load_pretrained(name: str, cfg: DictConfig) -> Source:
    """A shipped model (segmenter.pretrained): no training run, so the documents come from
    ``data=`` and the tables go to outputs/eval/pretrained_<name>/."""
    if cfg.get("data") is None:
        raise ConfigError(
            f"pretrained={name} has no training run to take its data from: name the documents "
            f"with data=<option> (and split= or folder=), e.g. data=choi split=test"
        )
    out_dir = Path(cfg.paths.log_dir) / "eval" / f"pretrained_{name}"
    # Its MiniLM vectors cached where a training run's go (conf/encoder/minilm.yaml): computed once.
    model = Segmenter.from_pretrained(
        name,
        cache_dir=str(Path(cfg.paths.cache_dir) / "unit_embeddings"),
        minilm_dtype=cfg.get("minilm_dtype", DEFAULTS.minilm_dtype),
    )
    return Source(model, cfg.data, None, out_dir, checkpoint_path(name), f"pretrained={name}")


class Scores:
    """The metrics training logs (``build_metrics``) of one method on one group of documents,
    updated a document at a time; on boundary slots (``slots``: N - 1 per document) or per-unit
    labels. ``compute`` gives what ``score`` / ``score_labels`` give."""

    def __init__(self, task: str, label_names: Sequence[str], *, slots: bool) -> None:
        self.slots = slots
        self.metrics = build_metrics(task, len(label_names), label_names)

    def update(self, hyp: Sequence[int], ref: Sequence[int]) -> None:
        if self.slots:  # slots -> boundary-task labels of N units (the last unit is no slot)
            hyp, ref = [*hyp, 0], [*ref, 0]
        self.metrics.update(torch.tensor([list(hyp)]), torch.tensor([list(ref)]))  # (1, N) each

    def compute(self) -> dict[str, float]:
        out = {name: float(value) for name, value in self.metrics.compute().items()}
        if not self.slots:
            return out
        names = {"f1": "boundary_f1", "precision": "boundary_precision", "recall": "boundary_recall"}
        return {name: out[names.get(name, name)] for name in ("f1", "precision", "recall", "pk", "windowdiff")}


def score(pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, float]:
    """(hypothesis, reference) slot lists of documents -> F1, precision, recall, Pk, WindowDiff:
    the metrics training logs (``score_labels``), on boundary slots."""
    scores = Scores(BOUNDARY, ("inside", "boundary"), slots=True)
    for hyp, ref in pairs:
        scores.update(hyp, ref)
    return scores.compute()


def score_labels(
    pairs: Sequence[tuple[list[int], list[int]]], task: str, label_names: Sequence[str]
) -> dict[str, float]:
    """(hypothesis, reference) per-unit label lists of documents -> every metric training
    logs (``build_metrics``): for sections, f1 (macro), f1_<label>, pk, windowdiff, boundary_*."""
    scores = Scores(task, label_names, slots=False)
    for hyp, ref in pairs:
        scores.update(hyp, ref)
    return scores.compute()


def evaluate_documents(
    docs: Iterable[Document],
    task: str,
    methods: dict[str, Callable],
    label_names: Sequence[str] | None = None,
    *,
    chunk: int = EVAL_CHUNK,
    seen: Callable[[Document], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{subset: {method: metrics}}, ``all`` over every document. A method maps units to
    N - 1 boundary slots (boundary task) or to N labels (section task, with label_names); one
    with a ``batch`` method (the model) is given the units of ``chunk`` documents at a time.
    ``docs`` is read once, a chunk at a time, and scored as it comes (``seen`` is told of
    each document): a split of any size is never held."""
    if task == SECTION and label_names is None:
        raise ValueError("task=section needs label_names")
    names = ("inside", "boundary") if task == BOUNDARY else label_names

    def scores() -> dict[str, Scores]:
        return {name: Scores(task, names, slots=task == BOUNDARY) for name in methods}

    by_subset: dict[str, dict[str, Scores]] = {}
    overall, counts, total = scores(), {}, 0
    it = iter(docs)
    while batch := list(itertools.islice(it, chunk)):
        units = [d.units for d in batch]
        hyps = {
            name: (fn.batch(units) if hasattr(fn, "batch") else [fn(u) for u in units]) for name, fn in methods.items()
        }
        for i, d in enumerate(batch):
            ref = boundary_labels(d.labels, task)[:-1] if task == BOUNDARY else list(d.labels)
            subset = d.subset or ALL
            group = by_subset.setdefault(subset, scores())
            counts[subset] = counts.get(subset, 0) + 1
            total += 1
            for name in methods:
                hyp = list(hyps[name][i])
                group[name].update(hyp, ref)
                overall[name].update(hyp, ref)
            if seen is not None:
                seen(d)
    # Subsets in order, then every document (``all``) where there are several subsets or none is ``all``.
    groups = {k: (counts[k], by_subset[k]) for k in sorted(by_subset, key=_subset_order)}
    if len(groups) > 1 or ALL not in groups:
        groups[ALL] = (total, overall)
    return {
        subset: {"docs": n, **{name: s.compute() for name, s in group.items()}} for subset, (n, group) in groups.items()
    }


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf metric as null (strict JSON has no NaN), each one logged."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        log.warning("a metric is %s (no boundaries to score?): written as null", obj)
        return None
    return obj


def _subset_order(name: str):
    lo, _, hi = name.partition("-")
    return (0, int(lo), int(hi)) if lo.isdigit() and hi.isdigit() else (1, name)


def to_markdown(table: dict, title: str) -> str:
    lines = [f"### {title}", ""]
    first = next(m for row in table.values() for name, m in row.items() if name != "docs")
    if "boundary_f1" in first:  # section labels: macro F1 and per label, then the label changes
        per_label = [k for k in first if k.startswith("f1_")]
        head = ["macro F1 ↑", *(f"F1 {k[3:]} ↑" for k in per_label), "boundary F1 ↑", "Pk ↓", "WindowDiff ↓"]
        keys = ["f1", *per_label, "boundary_f1", "pk", "windowdiff"]
    else:
        head, keys = ["F1 ↑", "Pk ↓", "WindowDiff ↓"], ["f1", "pk", "windowdiff"]
    lines.append("| subset | docs | method | " + " | ".join(head) + " |")
    lines.append("|---|---:|---|" + "---:|" * len(head))
    for subset, row in table.items():
        for name, m in row.items():
            if name != "docs":
                lines.append(f"| {subset} | {row['docs']} | {name} | " + " | ".join(f"{m[k]:.1%}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def check_split(
    docs: Iterable[Document], split: str, split_file: Path, *, corpus: str, manifest: Path | None = None
) -> None:
    """ValueError unless ``docs`` are the ``split`` documents the run's split file records (a
    warning when the run has none). ``manifest``: the split file of the store ``docs`` come
    from; a run's split file that is a copy of it (training copies it) matches without
    reading a document. Otherwise ``docs`` are read once, their ids and fingerprint
    compared as they come."""
    if not split_file.is_file():
        log.warning("no split file %s: cannot check that the %s documents are the run's", split_file, split)
        return
    if manifest is not None and manifest.is_file() and filecmp.cmp(manifest, split_file, shallow=False):
        log.info("the %s documents are the run's: its split file %s is the store's", split, split_file)
        return
    found = read_split_file(split_file)
    expected = found["splits"].get(split)
    if expected is None:
        log.info("the run's split file %s has no %s split to check against", split_file, split)
        return
    n, same_ids = 0, True

    def compared(d: Document) -> Document:  # each document's id against the record, as it passes
        nonlocal n, same_ids
        same_ids = same_ids and n < len(expected) and expected[n] == d.id
        n += 1
        return d

    digest = fingerprint((compared(d) for d in docs), version=found.get("fingerprint_version", 1))
    if not same_ids or n != len(expected) or found.get("fingerprints", {}).get(split) != digest:
        raise ValueError(
            f"the {split} documents of data={corpus} differ from the run's {split_file} "
            f"({n} vs {len(expected)} documents): evaluate with the run's data settings"
        )
    log.info("%d %s documents match the run's split file %s", n, split, split_file)


def _bare(doc_id: str) -> str:
    """A document id without the corpus name a mixture puts before it (``wiki:12/34`` -> ``12/34``)."""
    return doc_id.split(":", 1)[-1]


def check_held_out(docs: Iterable[Document], split_file: Path, *, data: str) -> int:
    """ConfigError if any of ``docs`` is among the training documents the run's split file
    lists (ids compared with and without a mixture's corpus name); else the number of
    documents checked. For documents other than the run's own split (``data=`` given):
    another view of a held-out article (joined sections, fewer levels) keeps its id."""
    trained = read_split_file(split_file)["splits"].get("train", [])
    keys = set(trained) | {_bare(i) for i in trained}
    n, seen = 0, []
    for d in docs:
        n += 1
        if d.id in keys or _bare(d.id) in keys:
            seen.append(d.id)
    if seen:
        raise ConfigError(
            f"{len(seen)} of the {n} documents of {data} were trained on by this run, e.g. {seen[0]!r} "
            f"(training documents in {split_file}): evaluate on documents it held out"
        )
    log.warning(
        "the documents of %s are not the run's own split: evaluating them since none of their %d ids is "
        "among its %d training documents (%s). Ids only: documents drawn from shared sources are not compared",
        data,
        n,
        len(trained),
        split_file,
    )
    return n


class Selection(NamedTuple):
    """What an evaluation scores, each read when iterated: never held whole."""

    docs: Iterable[Document]  # the documents evaluated
    train: Iterable[Document]  # the training split (baselines fit on it)
    task: str
    name: str  # the tables' name: the split, or the folder's


def select_documents(cfg: DictConfig, source: Source) -> Selection:
    """The documents to evaluate, from ``folder`` (read a file at a time) or a split of the
    corpus's store (as training reads it), checked against the run's split file."""
    data_cfg = cfg.get("data") or source.data
    with open_dict(data_cfg):
        data_cfg.split_file = None  # evaluation never rewrites the run's split file
    datamodule = hydra.utils.instantiate(data_cfg)
    task = datamodule.corpus.task
    train = datamodule.documents("train")
    if cfg.get("folder"):
        docs = iter_separator_files(cfg.folder, root=cfg.folder, subset_by_folder=True)  # a file at a time
        return Selection(docs, train, task, Path(cfg.folder).name)
    split = cfg.split
    docs = datamodule.documents(split)
    if source.split_file is not None:  # None: a shipped model, no run whose splits they could differ from
        corpus = data_cfg.corpus._target_
        try:
            check_split(docs, split, source.split_file, corpus=corpus, manifest=datamodule.store.manifest)
        except ValueError as e:
            if cfg.get("data") is None:  # the run's own data settings, yet other documents: its store changed
                raise ConfigError(str(e)) from None
            check_held_out(docs, source.split_file, data=f"data={corpus} split={split}")
    return Selection(docs, train, task, split)


class ModelMethod:
    """The model as an evaluation method: ``batch`` predicts documents' units in one batched
    call (the predict path: windows of similar length share a batch; long documents are
    windowed and stitched); boundary slots (N - 1) or per-unit labels."""

    def __init__(self, model: Segmenter, *, task: str, structured: bool, steer: dict[str, Any]) -> None:
        self.model, self.task, self.structured, self.steer = model, task, structured, steer

    def batch(self, units: list[list[str]]) -> list[list[int]]:
        try:
            preds = self.model.predict(units, structured=self.structured, **self.steer)
        except ValueError as e:  # settings this model or these documents cannot meet
            raise ConfigError(str(e)) from None
        return [unit_boundaries(p)[:-1] if self.task == BOUNDARY else p.label_ids for p in preds]

    def __call__(self, units: list[str]) -> list[int]:
        return self.batch([units])[0]


def evaluate(cfg: DictConfig) -> dict:
    if cfg.get("folder") and not Path(cfg.folder).is_dir():
        raise ConfigError(
            f"folder={cfg.folder}: not a folder (give a folder of separator-format files, or split=test|val)"
        )
    try:
        check_source(cfg.get("ckpt_path"), cfg.get("pretrained"))
        dtype = check_minilm_dtype(cfg.get("minilm_dtype", DEFAULTS.minilm_dtype))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    source = load_pretrained(cfg.pretrained, cfg) if cfg.get("pretrained") else load_checkpoint(cfg.ckpt_path, cfg)
    model = source.model
    docs, train_docs, task, name = select_documents(cfg, source)
    model_name = f"segmenter ({type(model.net.blocks[0].attention).__name__})"
    decodings = {model_name: True}
    if getattr(model.net, "crf", None) is not None:  # with and without the CRF's Viterbi decoding
        decodings = {f"{model_name}, CRF": True, f"{model_name}, argmax": False}
    # The user's decisions (segmenter.core.decisions, segmenter.core.limits) instead of the
    # network's own labels, if any are set.
    steer = {k: cfg.get(k) for k in DECISIONS if cfg.get(k) is not None}
    # Their own tables: <run>/eval/<split>.md stays the network's, float32 (a model card embeds it).
    shown = {**steer, **({"minilm_dtype": dtype} if dtype != DEFAULTS.minilm_dtype else {})}
    if shown:
        decodings = {f"{model_name}, " + ", ".join(f"{k}={v}" for k, v in shown.items()): True}
        name += "".join(f"_{k}{v}" for k, v in shown.items())
    try:
        tokenizer = limits.limits(**{k: steer.get(k) for k in LIMITS}).count_tokens
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if "tokenizer" in steer:
        steer["tokenizer"] = tokenizer
    methods: dict[str, Any] = {
        method: ModelMethod(model, task=task, structured=structured, steer=steer)
        for method, structured in decodings.items()
    }
    for key, b in (cfg.get("baselines") or {}).items():
        if b is None:  # baselines.<key>=null drops it
            continue
        baseline = hydra.utils.instantiate(b)
        if task not in baseline.tasks:
            log.info("baseline %s is for %s, not task=%s: skipped", key, "/".join(baseline.tasks), task)
            continue
        baseline = baseline.fit(train_docs, task, label_names=model.label_names)
        methods[baseline.name] = baseline
    ids: list[str] = []  # for the JSON record: the ids alone are kept
    table = evaluate_documents(docs, task, methods, label_names=model.label_names, seen=lambda d: ids.append(d.id))
    title = f"{name}: {len(ids)} documents, {source.label}"
    markdown = to_markdown(table, title)
    out_dir = Path(cfg.output_dir) if cfg.get("output_dir") else source.out_dir
    atomic_write(out_dir / f"{name}.md", markdown)
    result = {"checkpoint": str(source.checkpoint), "documents": ids, "table": table}
    atomic_write(out_dir / f"{name}.json", json.dumps(_finite(result), indent=1, allow_nan=False))
    log.info("wrote %s and %s", out_dir / f"{name}.md", out_dir / f"{name}.json")
    print(markdown)  # the CLI's output
    return result

"""The predict command (scripts/predict.py, conf/predict.yaml): read the documents to
segment (.txt files, folders of them, JSONL or standard input), run them through the
Python API (``segmenter.inference.api.Segmenter``), and write the results: <id>.txt in the text form
(Choi separators) and predictions.jsonl, or the text form on standard output.

Everything is read and checked before anything is predicted, and predicted before anything
is written: a bad input leaves no file behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch

from segmenter.core import decisions, limits
from segmenter.core.document import UNITS, normalize_unit
from segmenter.core.io import atomic_write
from segmenter.core.spans import Span, joined
from segmenter.data.formats import ReaderError, decode_utf8, json_object, jsonl_lines, string_list
from segmenter.inference.api import Prediction, Segmenter, check_source
from segmenter.inference.checkpoint import run_dir

__all__ = ["InputError", "PredictionError", "Prediction", "Segmenter", "read_inputs", "run", "write_outputs"]

log = logging.getLogger(__name__)


class InputError(ValueError):
    """Input text that cannot be segmented: empty, not UTF-8, binary, malformed JSONL."""


class PredictionError(ValueError):
    """Predictions that cannot be written faithfully (non-finite probabilities)."""


# ----------------------------------------------------------------------------- files


@dataclass
class InputDoc:
    id: str  # names the output: a relative path without suffix
    units: list[str]
    source: str  # file (and line) it came from, for messages
    text: str | None = None  # the text the units came from (None: units given as lines: their text form)
    spans: list[Span] | None = None  # each unit's (start, end) in text


def _from_text(doc_id: str, text: str, source: str, *, splitter: Segmenter, units: str) -> InputDoc:
    found, spans = splitter.split_with_spans(text, units=units)
    return InputDoc(doc_id, found, source, text, spans)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text of a file's bytes (the corpus readers' decoding), or an error naming the file,
    line and problem; an empty file is an error too."""
    try:
        text = decode_utf8(data, name)
    except ReaderError as e:
        raise InputError(f"{e.path}: line {e.line}: {e.problem}") from None
    if not text.strip():
        raise InputError(f"{name}: empty file")
    return text


def read_inputs(source: str, *, splitter: Segmenter, units: str, stdin: Any = None) -> list[InputDoc]:
    """Documents of ``source``: "-" (stdin), a .txt file, a folder of .txt files, or a .jsonl
    file (one {"id", "text"} or {"id", "lines"} object per line). Everything is read and
    checked before anything is predicted or written."""
    if source == "-":
        text = decode_text((stdin or sys.stdin.buffer).read(), "<stdin>")
        docs = [_from_text("stdin", text, "<stdin>", splitter=splitter, units=units)]
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not files:
                raise InputError(f"{path}: folder has no .txt files")
            docs = [
                _from_text(
                    str(f.relative_to(path).with_suffix("")),
                    decode_text(f.read_bytes(), str(f)),
                    str(f),
                    splitter=splitter,
                    units=units,
                )
                for f in files
            ]
        elif path.suffix == ".jsonl":
            docs = _read_jsonl(path, splitter=splitter, units=units)
        else:
            text = decode_text(path.read_bytes(), str(path))
            docs = [_from_text(path.stem, text, str(path), splitter=splitter, units=units)]
    for d in docs:
        if not d.units:
            raise InputError(f"{d.source}: no units (units={units})")
    return docs


def _read_jsonl(path: Path, *, splitter: Segmenter, units: str) -> list[InputDoc]:
    docs, seen = [], set()
    for n, line in jsonl_lines(decode_text(path.read_bytes(), str(path))):
        where = f"{path}: line {n}"
        try:
            obj = json_object(path, n, line)
            if ("text" in obj) == ("lines" in obj):
                raise ReaderError(
                    path, n, "expected an object with either 'text' (a string) or 'lines' (a list of strings)"
                )
            doc_id = str(obj.get("id", f"{path.stem}-{n}"))
            safe = re.sub(r"[^\w.-]", "_", doc_id).lstrip(".") or f"{path.stem}-{n}"  # a file name, never a path
            if safe in seen:
                raise ReaderError(path, n, f"duplicate id {doc_id!r} (as a file name: {safe!r})")
            seen.add(safe)
            if "text" in obj:
                if not isinstance(obj["text"], str):
                    raise ReaderError(path, n, f"'text' must be a string, got {type(obj['text']).__name__}")
                doc = _from_text(safe, obj["text"], where, splitter=splitter, units=units)
            else:
                doc_units = [normalize_unit(u) for u in string_list(obj["lines"], path, n, "lines")]
                if any(not u for u in doc_units):
                    raise ReaderError(path, n, f"'lines' has an empty line (index {doc_units.index('')})")
                text, spans = joined(doc_units)
                doc = InputDoc(safe, doc_units, where, text, spans)
        except ReaderError as e:
            raise InputError(f"{where}: {e.problem}") from None
        docs.append(doc)
    if not docs:
        raise InputError(f"{path}: empty file")
    return docs


def to_jsonl(docs: Sequence[InputDoc], preds: Sequence[Prediction]) -> str:
    """The JSON form, strict JSON: a non-finite probability (which JSON cannot hold) is an
    error naming the document, never a bare NaN in the file."""
    lines = []
    for d, p in zip(docs, preds):
        try:
            lines.append(json.dumps(p.to_json(d.id), ensure_ascii=False, allow_nan=False) + "\n")
        except ValueError:
            bad = sum(not math.isfinite(x) for x in p.boundary_probs)
            raise PredictionError(
                f"{d.source}: the model gave {bad} non-finite boundary probabilities (NaN or inf); nothing written. "
                "Its weights or the input may be broken."
            ) from None
    return "".join(lines)


def write_outputs(docs: Sequence[InputDoc], preds: Sequence[Prediction], out_dir: Path) -> list[Path]:
    """<out_dir>/<id>.txt (text form) per document and <out_dir>/predictions.jsonl (JSON form)."""
    jsonl = to_jsonl(docs, preds)  # before any file: a failure leaves nothing behind
    written = []
    for doc, pred in zip(docs, preds):
        path = out_dir / f"{doc.id}.txt"
        atomic_write(path, pred.to_text())
        written.append(path)
    path = out_dir / "predictions.jsonl"
    atomic_write(path, jsonl)
    return [*written, path]


def default_output_dir(ckpt_path: str | os.PathLike, source: str) -> Path:
    """Beside the run: <run>/predictions/<input name>/ for <run>/checkpoints/x.ckpt."""

    return run_dir(ckpt_path) / "predictions" / Path(source.rstrip("/")).stem


# ----------------------------------------------------------------------------- command line


def check_output_dir(out: Path) -> None:
    """Fail before any work when results cannot go to ``out``: an existing file, a path through
    a file, or a folder without write permission (creates nothing)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output={out}: exists and is not a folder (output names the folder the results go to)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"output={out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output={out}: no permission to create files in {parent}")


def run(cfg: Any) -> None:
    """scripts/predict.py's body. Raises InputError, CheckpointError or PredictionError for
    the user's mistakes (segmenter.cli turns them into one line and exit status 2), before
    anything is written."""

    if cfg.units is not None and cfg.units not in UNITS:
        raise InputError(f"units={cfg.units!r} is not one of {UNITS}")
    try:
        check_source(cfg.get("ckpt_path"), cfg.get("pretrained"))  # before the output folder is derived from it
    except ValueError as e:
        raise InputError(str(e)) from None
    decide = {
        "threshold": cfg.get("threshold"),
        "num_segments": cfg.get("num_segments"),
        "min_segment_units": 1 if cfg.get("min_segment_units") is None else cfg.min_segment_units,
    }
    bound = {
        "max_segment_chars": cfg.get("max_segment_chars"),
        "max_segment_tokens": cfg.get("max_segment_tokens"),
        "tokenizer": cfg.get("tokenizer"),
    }
    try:  # settings that can never work fail before any work
        decisions.check(0, **decide)
        decisions.LENGTH_PRIOR.check("length_prior", cfg.get("length_prior"))
        bound["tokenizer"] = limits.limits(**bound, min_segment_units=decide["min_segment_units"]).count_tokens
    except ValueError as e:
        raise InputError(str(e)) from None
    out = None
    if cfg.input != "-":
        if cfg.output:
            out = Path(cfg.output)
        elif cfg.get("pretrained"):
            out = Path("outputs") / "predictions" / cfg.pretrained / Path(str(cfg.input).rstrip("/")).stem
        else:
            out = default_output_dir(cfg.ckpt_path, str(cfg.input))
        check_output_dir(out)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    seg: Segmenter = hydra.utils.instantiate(
        cfg.segmenter, ckpt_path=cfg.ckpt_path, pretrained=cfg.pretrained
    )  # CheckpointError comes wrapped by Hydra
    try:  # a prior this model does not have
        decisions.prior_weight(seg.calibration.length_prior, cfg.get("length_prior"))
    except ValueError as e:
        raise InputError(str(e)) from None
    docs = read_inputs(str(cfg.input), splitter=seg, units=seg.resolve_units(cfg.units))
    try:
        decisions.check_documents([len(d.units) for d in docs], names=[d.source for d in docs], **decide)
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        preds = seg.predict(
            [d.units for d in docs],
            **decide,
            **bound,
            length_prior=cfg.get("length_prior"),
            texts=[d.text for d in docs],
            unit_spans=[d.spans for d in docs],
            names=[d.source for d in docs],
        )
    except ValueError as e:  # limits that cannot hold for one document (e.g. with min_segment_units)
        raise InputError(str(e)) from None
    n = sum(len(d.units) for d in docs)
    if out is None:
        to_jsonl(docs, preds)  # the same check as for files: no NaN behind the text form
        sys.stdout.write(preds[0].to_text())
        sys.stdout.flush()
        log.info("segmented %d units into %d segments", n, len(preds[0].segments))
        return
    try:
        written = write_outputs(docs, preds, out)
    except OSError as e:  # disk full, read-only file system, a file where a folder must go...
        raise PredictionError(f"cannot write the results to output={out}: {type(e).__name__}: {e}") from e
    log.info("segmented %d documents (%d units); wrote %d files to %s", len(docs), n, len(written), out)

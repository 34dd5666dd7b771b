"""Segment new text with a trained checkpoint.

Python::

    from segmenter import Segmenter
    seg = Segmenter.from_checkpoint("outputs/runs/<run>/checkpoints/last.ckpt")
    segments = seg.segment(text)                    # [[unit, ...], ...]
    pred = seg.segment(text, return_probs=True)     # Prediction: units, labels, boundary_probs, segments
    many = seg.segment_many(texts)                  # batched

Plain text becomes units by sentence (pysbd) or by line. Documents are run through
the network in batches under ``torch.inference_mode``; a document longer than
``max_units`` is cut into overlapping windows (segmenter.data.windows, the same
implementation training uses) whose outputs are stitched back, each unit predicted
once, from the window where it is most central. Every window keeps its units'
positions in the whole document, so with localized attention the stitched result
equals a run on the whole document as soon as ``overlap`` covers the receptive field
(2 * (reach + layers * window_size // 2) units: the cohesion profile reaches
``net.cohesion.reach`` units, 10 by default, each layer window_size // 2).

The command line (scripts/predict.py, conf/predict.yaml) reads .txt files, folders
of them, JSONL or standard input, and writes the results with ``write_outputs``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segmenter.data.document import BOUNDARY, boundary_labels, group_segments
from segmenter.data.readers import ReaderError, decode_utf8
from segmenter.data.windows import stitch, window_spans
from segmenter.io import atomic_write

log = logging.getLogger(__name__)

UNITS = ("sentences", "lines")
SEPARATOR = "=========="  # Choi's segment separator line: the text form reads back with data=choi


class InputError(ValueError):
    """Input text that cannot be segmented: empty, not UTF-8, binary, malformed JSONL."""


class PredictionError(ValueError):
    """Predictions that cannot be written faithfully (non-finite probabilities)."""


@dataclass
class Prediction:
    units: list[str]
    labels: list[int]  # predicted class of each unit
    label_names: list[str]  # names of the classes
    boundary_probs: list[float]  # P(unit i ends a segment); 0 for the last unit (not a slot)
    boundaries: list[int]  # 1 where a predicted segment ends (never the last unit)

    @property
    def segments(self) -> list[list[str]]:
        return group_segments(self.units, self.boundaries)

    def to_json(self, doc_id: str) -> dict[str, Any]:
        return {
            "id": doc_id,
            "units": self.units,
            "labels": [self.label_names[k] for k in self.labels],
            "boundary_probs": [round(p, 6) for p in self.boundary_probs],
            "boundaries": self.boundaries,
        }

    def to_text(self) -> str:
        """Choi style: a separator line before every segment and one at the end."""
        lines = []
        for seg in self.segments:
            lines += [SEPARATOR, *seg]
        return "\n".join([*lines, SEPARATOR]) + "\n"


class Segmenter:
    def __init__(
        self,
        *,
        net: nn.Module,
        task: str = BOUNDARY,
        label_names: Sequence[str] = ("inside", "boundary"),
        max_units: int = 512,
        overlap: int = 64,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        language: str = "en",
    ) -> None:
        if max_units < 1 or not 0 <= overlap < max_units:
            raise ValueError(f"need max_units >= 1 and 0 <= overlap < max_units, got max_units={max_units}, overlap={overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if len(label_names) != net.num_classes:
            raise ValueError(f"{len(label_names)} label_names {list(label_names)} for num_classes={net.num_classes}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.task, self.label_names = task, list(label_names)
        self.max_units, self.overlap, self.batch_size, self.language = max_units, overlap, batch_size, language

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, cache_dir: str | None = None, **kwargs: Any) -> Segmenter:
        """A segmenter from a checkpoint written by scripts/train.py; ``kwargs`` are the
        inference settings (max_units, overlap, batch_size, device, language). ``cache_dir``:
        where a MiniLM encoder caches embeddings (this side's setting, never the checkpoint's;
        None: memory only)."""
        from segmenter.checkpoint import load_net

        net, meta = load_net(path, cache_dir=cache_dir)
        attention = (meta["net"].get("attention") or {}).get("_target_", "?")
        log.info("loaded %s (written by segmenter %s; %s)", path, meta["segmenter_version"], attention)
        return cls(net=net, task=meta["task"], label_names=meta["label_names"], **kwargs)

    # -- text -> units --------------------------------------------------------------------
    @cached_property
    def _sentence_splitter(self):
        import pysbd

        return pysbd.Segmenter(language=self.language, clean=False)

    def split(self, text: str, *, units: str = "sentences") -> list[str]:
        """Units of a text. ``lines``: every non-blank line, stripped. ``sentences``: pysbd's
        sentences of each paragraph (blank-line separated); a single line break inside a
        paragraph is a space (hard-wrapped text), so only punctuation ends a sentence and a
        sentence never runs across a blank line. Whitespace inside a unit is collapsed: a unit
        is one line of the text form."""
        if units not in UNITS:
            raise ValueError(f"units={units!r} is not one of {UNITS}")
        if units == "lines":
            return [line.strip() for line in text.splitlines() if line.strip()]
        out = []
        progress = Progress("splitting into sentences", total=len(text), unit="characters")
        for chunk in _chunks(text):
            out += [" ".join(s.split()) for s in self._sentence_splitter.segment(" ".join(chunk.split())) if s.strip()]
            progress.advance(len(chunk))
        return out

    # -- units -> predictions ---------------------------------------------------------------
    def logits(self, docs: Sequence[Sequence[str]]) -> list[Tensor]:
        """(n_i, C) logits of every document, windows run in batches and stitched."""
        spans = [window_spans(len(d), size=self.max_units, overlap=self.overlap) if d else [] for d in docs]
        items = [(i, s, e) for i, sp in enumerate(spans) for s, e in sp]
        items.sort(key=lambda it: it[2] - it[1])  # similar lengths share a batch: little padding
        outs: dict[tuple[int, int], Tensor] = {}
        progress = Progress("predicting", total=len(items), unit="windows")
        with torch.inference_mode():
            for b in range(0, len(items), self.batch_size):
                progress.advance(min(self.batch_size, len(items) - b), done=b)
                batch = items[b : b + self.batch_size]
                start = torch.tensor([s for _, s, _ in batch], device=self.device)
                out = self.net([docs[i][s:e] for i, s, e in batch], start=start)
                logits = out.logits.float().cpu()  # (B, T, C)
                for k, (i, s, e) in enumerate(batch):
                    outs[i, s] = logits[k, : e - s]  # (e - s, C)
        c = self.net.num_classes
        return [stitch([outs[i, s] for s, _ in sp], sp) if sp else torch.empty(0, c) for i, sp in enumerate(spans)]

    def predict(self, docs: Sequence[Sequence[str]], *, structured: bool = True) -> list[Prediction]:
        """Predictions for documents already cut into units. ``structured=False``: each
        unit's argmax even where the network has a CRF (to compare the two decodings)."""
        return [self._decode(list(d), lg, structured=structured) for d, lg in zip(docs, self.logits(docs))]

    def _decode(self, units: list[str], logits: Tensor, *, structured: bool = True) -> Prediction:
        probs = logits.softmax(dim=-1)  # (n, C)
        if len(units):  # the CRF's best label sequence for the whole (stitched) document, else argmax
            mask = torch.ones(1, len(units), dtype=torch.bool)
            labels = self.net.decode(logits[None], mask, structured=structured)[0].tolist()
        else:
            labels = []
        if self.task == BOUNDARY:
            p_end = probs[:, 1]  # (n,) class 1 = "ends a segment"
        else:  # section labels: a boundary where the label changes, P = 1 - sum_c p_i(c) p_{i+1}(c)
            p_end = torch.cat((1 - (probs[:-1] * probs[1:]).sum(-1), probs.new_zeros(min(1, len(units)))))
        p_end = p_end.clone()
        if len(units):
            p_end[-1] = 0.0  # the document end is not a boundary slot
        return Prediction(units, labels, self.label_names, p_end.tolist(), boundary_labels(labels, self.task))

    # -- the public API ---------------------------------------------------------------------
    def segment(self, text: str, *, units: str = "sentences", return_probs: bool = False) -> list[list[str]] | Prediction:
        """The segments of ``text`` (lists of units); with ``return_probs`` the whole
        Prediction (units, labels, boundary_probs, boundaries, .segments)."""
        return self.segment_many([text], units=units, return_probs=return_probs)[0]

    def segment_many(
        self, texts: Iterable[str], *, units: str = "sentences", return_probs: bool = False
    ) -> list[list[list[str]]] | list[Prediction]:
        """``segment`` for many texts, run through the network in batches."""
        preds = self.predict([self.split(t, units=units) for t in texts])
        return preds if return_probs else [p.segments for p in preds]


class Progress:
    """Progress of a long step as log lines (stderr in scripts/predict.py): one every
    ``every`` seconds once the step has run that long; short steps say nothing."""

    every = 5.0  # seconds

    def __init__(self, what: str, *, total: int, unit: str) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def advance(self, n: int, *, done: int | None = None) -> None:
        self.done = self.done + n if done is None else done
        now = time.monotonic()
        if now - self.last >= self.every and self.total:
            self.last = now
            log.info("%s: %s/%s %s (%.0f%%, %.0f s)", self.what, f"{self.done:,}", f"{self.total:,}", self.unit,
                     100 * self.done / self.total, now - self.start)  # fmt: skip


_LINE_END = re.compile(r"[.!?][\"')\]]*\s*$")  # a line that ends like a sentence


def _chunks(text: str, size: int = 2000) -> Iterable[str]:
    """Pieces of ``text`` for the sentence splitter, cut only where a sentence surely ends:
    at blank lines (paragraphs), and inside a long paragraph at the end of a line ending in
    . ! or ? once the piece has ``size`` characters. pysbd's time grows faster than
    linearly with the length of one call, so a long text without blank lines must not
    reach it in one piece."""
    for para in re.split(r"\n\s*\n", text):
        piece: list[str] = []
        n = 0
        for line in para.splitlines():
            piece.append(line)
            n += len(line)
            if n >= size and _LINE_END.search(line):
                yield "\n".join(piece)
                piece, n = [], 0
        if "".join(piece).strip():
            yield "\n".join(piece)


# ----------------------------------------------------------------------------- files


@dataclass
class InputDoc:
    id: str  # names the output: a relative path without suffix
    units: list[str]
    source: str  # file (and line) it came from, for messages


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text of a file's bytes (the readers' decoding), or an error naming the file,
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
        import sys

        docs = [InputDoc("stdin", splitter.split(decode_text((stdin or sys.stdin.buffer).read(), "<stdin>"), units=units), "<stdin>")]
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not files:
                raise InputError(f"{path}: folder has no .txt files")
            docs = [InputDoc(str(f.relative_to(path).with_suffix("")), splitter.split(decode_text(f.read_bytes(), str(f)), units=units), str(f)) for f in files]
        elif path.suffix == ".jsonl":
            docs = _read_jsonl(path, splitter=splitter, units=units)
        else:
            docs = [InputDoc(path.stem, splitter.split(decode_text(path.read_bytes(), str(path)), units=units), str(path))]
    for d in docs:
        if not d.units:
            raise InputError(f"{d.source}: no units (units={units})")
    return docs


def _read_jsonl(path: Path, *, splitter: Segmenter, units: str) -> list[InputDoc]:
    docs, seen = [], set()
    for n, line in enumerate(decode_text(path.read_bytes(), str(path)).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict) or ("text" in obj) == ("lines" in obj):
            raise InputError(f"{where}: expected an object with either 'text' (a string) or 'lines' (a list of strings)")
        doc_id = str(obj.get("id", f"{path.stem}-{n}"))
        safe = re.sub(r"[^\w.-]", "_", doc_id).lstrip(".") or f"{path.stem}-{n}"  # a file name, never a path
        if safe in seen:
            raise InputError(f"{where}: duplicate id {doc_id!r} (as a file name: {safe!r})")
        seen.add(safe)
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise InputError(f"{where}: 'text' must be a string, got {type(obj['text']).__name__}")
            doc_units = splitter.split(obj["text"], units=units)
        else:
            lines = obj["lines"]
            if not isinstance(lines, list) or not all(isinstance(u, str) for u in lines):
                raise InputError(f"{where}: 'lines' must be a list of strings")
            doc_units = [" ".join(u.split()) for u in lines]
            if any(not u for u in doc_units):
                raise InputError(f"{where}: 'lines' has an empty line (index {doc_units.index('')})")
        docs.append(InputDoc(safe, doc_units, where))
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
    from segmenter.checkpoint import run_dir

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
    import sys

    import hydra

    if cfg.units not in UNITS:
        raise InputError(f"units={cfg.units!r} is not one of {UNITS}")
    out = None
    if cfg.input != "-":
        out = Path(cfg.output) if cfg.output else default_output_dir(cfg.ckpt_path, str(cfg.input))
        check_output_dir(out)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    seg: Segmenter = hydra.utils.instantiate(cfg.segmenter)  # CheckpointError comes wrapped by Hydra
    docs = read_inputs(str(cfg.input), splitter=seg, units=cfg.units)
    preds = seg.predict([d.units for d in docs])
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

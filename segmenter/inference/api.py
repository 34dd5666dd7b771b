"""The Python API: segment new text with a trained checkpoint.

    from segmenter import Segmenter
    seg = Segmenter.from_checkpoint("outputs/runs/<run>/checkpoints/last.ckpt")
    segments = seg.segment(text)                    # [[unit, ...], ...]
    pred = seg.segment(text, return_probs=True)     # Prediction: units, labels (names), label_ids, boundary_probs, segments
    many = seg.segment_many(texts)                  # batched
    seg = Segmenter.from_pretrained("topic")        # a shipped model (segmenter.pretrained)
    seg = Segmenter.from_pretrained("topic", backend="onnx")  # onnxruntime runs the network
    seg.segment(text, num_segments=5)               # or threshold=0.5, min_segment_units=3
    seg.segment(text, max_segment_chars=800)        # chunks that never pass a limit (or max_segment_tokens=, tokenizer=)
    pred.spans                                      # (start, end) of each segment in text

Probabilities are calibrated where the checkpoint holds a calibrator (segmenter.inference.calibration:
fitted on the validation split after training), so ``threshold=`` means what it says; the
user's decisions (threshold, num_segments, min_segment_units) are segmenter.core.decisions, the
length limits (max_segment_chars, max_segment_tokens) segmenter.core.limits. Every unit keeps
its span in the text (segmenter.core.spans), so every segment has one: ``Prediction.spans``.

Plain text becomes units by sentence (pysbd) or by line: by default as the model's training
documents were (``Segmenter.units``: the checkpoint's "units", sentences for a checkpoint
that does not say); a caller's ``units=`` overrides it, with one info line. Documents are run through
the network in batches under ``torch.inference_mode``; a document longer than
``max_units`` is cut into overlapping windows (segmenter.core.windows, the same
implementation training uses) whose outputs are stitched back, each unit predicted
once, from the window where it is most central. Every window keeps its units'
positions in the whole document, so with localized attention the stitched result
equals a run on the whole document as soon as ``overlap`` covers the receptive field
(2 * (reach + layers * window_size // 2) units: the cohesion profile reaches
``net.cohesion.reach`` units, 10 by default, each layer window_size // 2).

Labels become boundaries by the task's rule (segmenter.core.document). The command line
around this API (files in, files out) is segmenter/inference/predict.py.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from segmenter.core import decisions, limits
from segmenter.core.bounds import Number
from segmenter.core.document import (
    BOUNDARY,
    DEFAULT_UNITS,
    SECTION,
    boundary_labels,
    boundary_probs,
    check_label_names,
    check_task,
    check_units,
    group_segments,
    normalize_unit,
)
from segmenter.core.progress import Progress
from segmenter.core.spans import Span, align, joined, line_spans, segment_spans
from segmenter.core.windows import check_window, stitch, window_spans
from segmenter.features import Featurizer
from segmenter.inference import calibration
from segmenter.inference.calibration import Calibration
from segmenter.inference.checkpoint import load_net
from segmenter.inference.onnx_backend import OnnxNet, backend_net
from segmenter.inference.settings import DEFAULTS, check_minilm_dtype, check_splitter
from segmenter.pretrained import MODEL_UNITS, MODELS, checkpoint_path

log = logging.getLogger(__name__)

SEPARATOR = "=========="  # Choi's segment separator line (a section model adds the label): read back by data=choi
# Frozen sentence vectors a Segmenter keeps in memory at most (the least recently used go
# first): 20,000 MiniLM vectors are 31 MB, however many documents a server sees.
CACHE_ENTRIES = 20_000
BATCH_SIZE = Number(lo=1)  # windows per forward pass (the command line's segmenter.batch_size too)


@dataclass
class Prediction:
    units: list[str]
    label_ids: list[int]  # predicted class of each unit: an index into label_names
    label_names: list[str]  # names of the classes
    boundary_probs: list[float]  # P(unit i ends a segment); 0 for the last unit (not a slot)
    boundaries: list[int]  # 1 where a predicted segment ends (never the last unit)
    task: str = BOUNDARY  # section: each segment has a label (its units'), written in the text form
    # (start, end) of each unit in the text it came from (segmenter.core.spans); None: units
    # given as a list, whose text is their text form (joined by line breaks)
    unit_spans: list[Span] | None = None
    # [first, stop) ranges of ``units`` that are pieces of one unit that was over a length limit
    # on its own (segmenter.core.limits); their inner boundary probabilities are 0
    split_units: list[tuple[int, int]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Each unit's predicted label by name (``label_names[label_ids[i]]``), as the JSONL
        output and the HTTP API give them."""
        return [self.label_names[k] for k in self.label_ids]

    @property
    def segments(self) -> list[list[str]]:
        return group_segments(self.units, self.boundaries)

    @property
    def spans(self) -> list[Span]:
        """One (start, end) per segment: ``text[start:end]`` is the segment as it stands in
        the text, its units in order with the text between them (whitespace between two
        segments belongs to neither)."""
        unit_spans = self.unit_spans if self.unit_spans is not None else joined(self.units)[1]
        return segment_spans(unit_spans, self.boundaries)

    def to_json(self, doc_id: str) -> dict[str, Any]:
        return {
            "id": doc_id,
            "units": self.units,
            "labels": self.labels,
            "boundary_probs": [round(p, 6) for p in self.boundary_probs],
            "boundaries": self.boundaries,
            "spans": [list(span) for span in self.spans],
            "split_units": [list(r) for r in self.split_units],
        }

    def to_text(self) -> str:
        """Choi style: a separator line before every segment and one at the end. A section
        model's separator names the segment's label (``========== chorus``); the separator
        reader (data=choi, segmenter.data.formats) reads both back."""
        lines, start = [], 0
        for seg in self.segments:
            label = f" {self.labels[start]}" if self.task == SECTION else ""  # one label per segment
            lines += [SEPARATOR + label, *seg]
            start += len(seg)
        return "\n".join([*lines, SEPARATOR]) + "\n"


class Segmenter:
    def __init__(
        self,
        *,
        net: nn.Module | OnnxNet,
        task: str = BOUNDARY,
        label_names: Sequence[str] = ("inside", "boundary"),
        max_units: int = DEFAULTS.max_units,
        overlap: int = DEFAULTS.overlap,
        batch_size: int = DEFAULTS.batch_size,
        device: str | torch.device = DEFAULTS.device,
        language: str = DEFAULTS.language,
        splitter: str = DEFAULTS.splitter,
        calibration: Calibration | None = None,
        featurizer: Featurizer | None = None,
        units: str = DEFAULT_UNITS,
    ) -> None:
        """The inference settings (max_units, overlap, batch_size, device, language, splitter) default to
        ``segmenter.inference.settings.DEFAULTS``, as the scripts' do. ``calibration``: maps the
        network's probabilities to calibrated ones (a checkpoint's own, by ``from_checkpoint``);
        None: the network's probabilities as they are.
        ``featurizer``: turns units into the network's tensors; None: the network's own
        (``Featurizer.for_net(net)``, its frozen-vector cache bounded by CACHE_ENTRIES).
        ``units``: how plain text becomes units when a call does not say (sentences | lines)."""
        check_window(max_units, overlap, size_name="max_units")
        self.units, self.splitter = check_units(units), check_splitter(splitter)
        BATCH_SIZE.check("batch_size", batch_size)
        check_task(task)
        check_label_names(label_names, net.num_classes)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.task, self.label_names = task, list(label_names)
        self.max_units, self.overlap, self.batch_size, self.language = max_units, overlap, batch_size, language
        self.calibration = calibration or Calibration()
        self.featurizer = featurizer or Featurizer.for_net(net, cache_entries=CACHE_ENTRIES)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        units: str | None = None,
        cache_dir: str | None = DEFAULTS.cache_dir,
        cache_entries: int | None = CACHE_ENTRIES,
        minilm_dtype: str = DEFAULTS.minilm_dtype,
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """A segmenter from a checkpoint written by scripts/train.py; ``kwargs`` are the
        inference settings (max_units, overlap, batch_size, device, language, splitter). ``units``: how
        plain text becomes units; None: as the model was trained (the checkpoint's "units",
        sentences where it does not say). ``cache_dir``:
        where a MiniLM encoder caches embeddings (this side's setting, never the checkpoint's;
        None: memory only); ``cache_entries``: how many it keeps in memory at most (the least
        recently used go first; None: no bound), so a long-running process stays flat.
        ``minilm_dtype``: what a frozen MiniLM encodes in, ``float32`` (exact) or ``bfloat16``
        (about twice as fast on CPUs with native bfloat16; segmenter.features.FrozenVectors).
        ``backend``: what runs the network, ``"torch"`` or ``"onnx"`` (onnxruntime on the CPU:
        the graph at ``onnx_path``, exported there first if missing; without ``onnx_path``,
        exported once into a cache; segmenter.inference.onnx_backend)."""
        return cls._load(
            path,
            units=units,
            cache_dir=cache_dir,
            cache_entries=cache_entries,
            minilm_dtype=minilm_dtype,
            backend=backend,
            onnx_path=onnx_path,
            **kwargs,
        )

    @classmethod
    def _load(
        cls,
        path: str | os.PathLike,
        *,
        units: str | None,
        model_units: str = DEFAULT_UNITS,
        cache_dir: str | None,
        cache_entries: int | None,
        minilm_dtype: str = DEFAULTS.minilm_dtype,
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """``from_checkpoint``; ``model_units``: the model's units where the checkpoint does not
        say (a shipped model's, from segmenter.pretrained)."""
        check_minilm_dtype(minilm_dtype)
        net, meta = load_net(path, cache_dir=cache_dir)
        kwargs.setdefault("featurizer", Featurizer.for_net(net, cache_entries=cache_entries, minilm_dtype=minilm_dtype))
        net = backend_net(backend, net, meta, onnx_path=onnx_path, cache_dir=cache_dir)
        attention = (meta["net"].get("attention") or {}).get("type", "?")
        cal = calibration.read(meta)
        own = meta.get("units", model_units)
        log.info(
            "loaded %s (written by segmenter %s; %s; units: %s; calibration: %s; backend: %s)",
            path,
            meta["segmenter_version"],
            attention,
            own,
            cal.method,
            backend,
        )
        seg = cls(net=net, task=meta["task"], label_names=meta["label_names"], calibration=cal, units=own, **kwargs)
        seg.units = seg.resolve_units(units)
        return seg

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        *,
        units: str | None = None,
        cache_dir: str | None = DEFAULTS.cache_dir,
        cache_entries: int | None = CACHE_ENTRIES,
        minilm_dtype: str = DEFAULTS.minilm_dtype,
        **kwargs: Any,
    ) -> Segmenter:
        """A segmenter from a graph of scripts/export.py alone, run by onnxruntime: the file
        holds the task, label names, calibration, the model's units and windowing (``units``
        and ``kwargs`` override them, as for ``from_checkpoint``)."""
        check_minilm_dtype(minilm_dtype)
        net = OnnxNet.load(path, cache_dir=cache_dir)
        kwargs = {**net.settings(), **kwargs}
        kwargs.setdefault("featurizer", Featurizer.for_net(net, cache_entries=cache_entries, minilm_dtype=minilm_dtype))
        own = net.entry["checkpoint"].get("units", DEFAULT_UNITS)
        log.info(
            "loaded %s (exported by segmenter %s; units: %s; backend: onnx)", path, net.entry["segmenter_version"], own
        )
        seg = cls(net=net, units=own, **kwargs)
        seg.units = seg.resolve_units(units)
        return seg

    @classmethod
    def from_pretrained(cls, name: str, *, units: str | None = None, **kwargs: Any) -> Segmenter:
        """A model shipped inside the package (``python -m segmenter.pretrained`` lists them:
        ``topic``, ``lyrics``); ``units`` and ``kwargs`` as for ``from_checkpoint`` (the
        default units: the model's, topic sentences, lyrics lines)."""
        path = checkpoint_path(name)
        cache_dir, cache_entries = kwargs.pop("cache_dir", None), kwargs.pop("cache_entries", CACHE_ENTRIES)
        return cls._load(
            path, units=units, model_units=MODEL_UNITS[name], cache_dir=cache_dir, cache_entries=cache_entries, **kwargs
        )

    @classmethod
    def load(
        cls, *, ckpt_path: str | os.PathLike | None = None, pretrained: str | None = None, **kwargs: Any
    ) -> Segmenter:
        """``from_checkpoint(ckpt_path)`` or ``from_pretrained(pretrained)``: exactly one of
        them (the command-line scripts' ``ckpt_path=`` / ``pretrained=``)."""
        check_source(ckpt_path, pretrained)
        check_splitter(kwargs.get("splitter", DEFAULTS.splitter))  # before the model loads
        return (
            cls.from_checkpoint(ckpt_path, **kwargs)
            if pretrained is None
            else cls.from_pretrained(pretrained, **kwargs)
        )

    # -- text -> units --------------------------------------------------------------------
    def resolve_units(self, units: str | None) -> str:
        """The units to split text into: ``units``, or the model's own (``self.units``) when
        None. A caller's choice that differs from the model's gets one info line."""
        if units is None:
            return self.units
        check_units(units)
        if units != self.units:
            log.info(
                "units=%s given: this model was trained on %s (its default); splitting by %s", units, self.units, units
            )
        return units

    @cached_property
    def _sentence_splitter(self) -> Callable[[str], Iterable[str]]:
        return sentence_splitter(self.splitter, language=self.language)

    def split(self, text: str, *, units: str | None = None) -> list[str]:
        """Units of a text (``units`` None: the model's own, ``self.units``; nothing logged: a
        caller's choice is reported by ``resolve_units``). ``lines``: every non-blank line, stripped. ``sentences``: the splitter's
        sentences of each paragraph (blank-line separated); a single line break inside a
        paragraph is a space (hard-wrapped text), so only punctuation ends a sentence and a
        sentence never runs across a blank line. Whitespace inside a unit is collapsed: a unit
        is one line of the text form."""
        units = check_units(self.units if units is None else units)
        if units == "lines":
            return [line.strip() for line in text.splitlines() if line.strip()]
        out = []
        progress = Progress("splitting into sentences", total=len(text), unit="characters", log=log)
        for chunk in _chunks(text):
            out += [normalize_unit(s) for s in self._sentence_splitter(" ".join(chunk.split())) if s.strip()]
            progress.advance(len(chunk))
        return out

    def split_with_spans(self, text: str, *, units: str | None = None) -> tuple[list[str], list[Span]]:
        """``split``'s units and the (start, end) of each in ``text``: ``text[start:end]`` is
        the unit with its whitespace as the text has it (segmenter.core.spans)."""
        units = check_units(self.units if units is None else units)
        if units == "lines":
            spans = line_spans(text)
            return [text[s:e] for s, e in spans], spans
        found = self.split(text, units=units)
        return found, align(text, found)

    # -- units -> predictions ---------------------------------------------------------------
    def logits(self, docs: Sequence[Sequence[str]]) -> list[Tensor]:
        """(n_i, C) logits of every document, windows run in batches and stitched."""
        spans = [window_spans(len(d), size=self.max_units, overlap=self.overlap) if d else [] for d in docs]
        items = [(i, s, e) for i, sp in enumerate(spans) for s, e in sp]
        items.sort(key=lambda it: it[2] - it[1])  # similar lengths share a batch: little padding
        outs: dict[tuple[int, int], Tensor] = {}
        progress = Progress("predicting", total=len(items), unit="windows", log=log)
        with torch.inference_mode():
            for b in range(0, len(items), self.batch_size):
                progress.advance(min(self.batch_size, len(items) - b), done=b)
                batch = items[b : b + self.batch_size]
                start = torch.tensor([s for _, s, _ in batch], device=self.device)
                feats = self.featurizer.batch([docs[i][s:e] for i, s, e in batch])
                out = self.net({k: v.to(self.device) for k, v in feats.items()}, start=start)
                logits = out.logits.float().cpu()  # (B, T, C)
                for k, (i, s, e) in enumerate(batch):
                    outs[i, s] = logits[k, : e - s]  # (e - s, C)
        c = self.net.num_classes
        return [stitch([outs[i, s] for s, _ in sp], sp) if sp else torch.empty(0, c) for i, sp in enumerate(spans)]

    def predict(
        self,
        docs: Sequence[Sequence[str]],
        *,
        structured: bool = True,
        threshold: float | None = None,
        num_segments: int | None = None,
        min_segment_units: int = 1,
        max_segment_chars: int | None = None,
        max_segment_tokens: int | None = None,
        tokenizer: Any = None,
        length_prior: bool | float | None = None,
        texts: Sequence[str] | None = None,
        unit_spans: Sequence[Sequence[Span] | None] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Predictions for documents already cut into units. ``structured=False``: each
        unit's argmax even where the network has a CRF (to compare the two decodings).
        ``threshold``, ``num_segments``, ``min_segment_units``: decide the segments from the
        calibrated boundary probabilities instead of the network's own labels
        (segmenter.core.decisions); ``max_segment_chars``, ``max_segment_tokens`` with
        ``tokenizer``: no segment longer (segmenter.core.limits); checked before any work.
        ``length_prior``: the model's fitted prior on segment lengths (``decisions.LengthPrior``)
        on (true, or a weight > 0) or off (false, 0); None: as the model's fit decided.
        ``texts`` and ``unit_spans``: the text of each document and its units' spans in it
        (``split_with_spans``); None: the units' text form (joined by line breaks). ``names``:
        what an error calls each document (default: "document <i>")."""
        steer = {"threshold": threshold, "num_segments": num_segments, "min_segment_units": min_segment_units}
        names = list(names) if names is not None else [f"document {i}" for i in range(len(docs))]
        decisions.check_documents([len(d) for d in docs], names=names, **steer)
        decisions.prior_weight(self.calibration.length_prior, length_prior)  # asks for a prior the model has
        bound = limits.limits(
            max_segment_chars=max_segment_chars,
            max_segment_tokens=max_segment_tokens,
            tokenizer=tokenizer,
            min_segment_units=min_segment_units,
        )
        if (texts is None) != (unit_spans is None) or (texts is not None and len(texts) != len(docs)):
            raise ValueError(f"give texts= and unit_spans= together, one per document ({len(docs)} documents)")
        preds = []
        for i, (d, lg) in enumerate(zip(docs, self.logits(docs))):
            try:
                preds.append(
                    self.decide(
                        list(d),
                        lg,
                        structured=structured,
                        **steer,
                        max_segment_chars=max_segment_chars,
                        max_segment_tokens=max_segment_tokens,
                        tokenizer=bound.count_tokens,
                        length_prior=length_prior,
                        text=None if texts is None else texts[i],
                        unit_spans=None if unit_spans is None or unit_spans[i] is None else list(unit_spans[i]),
                    )
                )
            except ValueError as e:  # limits that cannot hold for this document: say which
                raise ValueError(f"{names[i]}: {e}") from None
        return preds

    def decide(
        self,
        units: list[str],
        logits: Tensor,
        *,
        structured: bool = True,
        threshold: float | None = None,
        num_segments: int | None = None,
        min_segment_units: int = 1,
        max_segment_chars: int | None = None,
        max_segment_tokens: int | None = None,
        tokenizer: Any = None,
        length_prior: bool | float | None = None,
        text: str | None = None,
        unit_spans: list[Span] | None = None,
    ) -> Prediction:
        """One document's Prediction from its (n, C) ``logits`` (``logits()``), with the
        decisions of ``predict``: the server runs many requests' documents through the
        network at once, then decides each with its own request's settings. ``text`` and
        ``unit_spans``: where the units stand in their text (None: their text form).

        With a length limit the segments are the most probable segmentation whose every
        segment holds the limits (segmenter.core.limits; ``threshold`` and ``num_segments``
        as they say; without them, the network's own labels, with a length prior that is on,
        wherever no limit binds); a unit
        over a limit on its own is cut into pieces, which replace it in ``units``
        (``Prediction.split_units`` says where). With a length prior (``length_prior``) the
        same programme adds each segment's length score (segmenter.core.decisions)."""
        n = len(units)
        if (text is None) != (unit_spans is None) or (unit_spans is not None and len(unit_spans) != n):
            raise ValueError(f"give text= and unit_spans= together, one span per unit ({n} units)")
        bound = limits.limits(
            max_segment_chars=max_segment_chars,
            max_segment_tokens=max_segment_tokens,
            tokenizer=tokenizer,
            min_segment_units=min_segment_units,
        )
        mask = torch.ones(1, n, dtype=torch.bool)
        if n:  # the CRF's best label sequence for the whole (stitched) document, else argmax
            labels = self.net.decode(logits[None], mask, structured=structured)[0].tolist()
            label_probs = self.net.unit_probs(logits[None], mask, structured=structured)[
                0
            ]  # (n, C): marginals or softmax
            probs = self.calibration.probs(label_probs.clamp(min=1e-12).log())  # (n, C) calibrated
        else:
            labels, label_probs = [], logits.softmax(dim=-1)
            probs = label_probs
        p_end = boundary_probs(probs, self.task).tolist()  # (n,): 0 at the document end
        ends = boundary_labels(labels, self.task)
        default = [i for i, e in enumerate(ends) if e]  # the network's own cuts
        # Where the network's labels turn, on the calibrated scale: the programme measures every
        # cut's score from there, so that it cuts where the labels do unless told otherwise.
        point = self.calibration.decision_point(probs.shape[-1]) if self.task == BOUNDARY else 0.5
        prior = self.calibration.length_prior
        weight = decisions.prior_weight(prior, length_prior)  # None: no prior

        def costs(size: int):  # the prior's per-segment scores for ``size`` units (None: no prior)
            return None if weight is None else prior.costs(size, weight=weight, min_units=min_segment_units or 1)

        cuts, split_units = None, []
        if bound.bounded and n:
            decisions.check(n, threshold=threshold, num_segments=num_segments, min_segment_units=min_segment_units)
            if text is None:
                text, unit_spans = joined(units)
            pieces, origin = limits.split_long_units(text, unit_spans, bound)
            split_units = _piece_ranges(origin)
            if split_units:  # the pieces replace their unit; a cut between two of them has probability 0
                last = [k == len(origin) - 1 or origin[k + 1] != o for k, o in enumerate(origin)]
                count = Counter(origin)
                # A piece reads as its unit did: a line keeps the text's own spacing (units=lines),
                # a sentence has its whitespace collapsed (normalize_unit).
                raw = [units[o] == text[slice(*unit_spans[o])] for o in range(len(units))]
                units = [
                    units[o] if count[o] == 1 else text[s:e] if raw[o] else normalize_unit(text[s:e])
                    for o, (s, e) in zip(origin, pieces)
                ]
                index = torch.tensor(origin)
                probs, label_probs = probs[index], label_probs[index]  # (n', C): each piece with its unit's
                p_end = [p_end[o] if is_last else 0.0 for o, is_last in zip(origin, last)]
                # the network's cut after a unit is the cut after its last piece
                ends_at = {o: k for k, (o, is_last) in enumerate(zip(origin, last)) if is_last}
                default = [ends_at[c] for c in default]
                unit_spans, n = pieces, len(pieces)
            cuts = limits.best_cuts(
                p_end,
                text,
                unit_spans,
                bound,
                num_segments=num_segments,
                threshold=threshold,
                candidates=default,
                decision_point=point,
                prior=costs(n),
            )
        elif threshold is not None or num_segments is not None or (min_segment_units or 1) > 1 or weight is not None:
            cuts = decisions.cuts(
                p_end,
                default,
                threshold=threshold,
                num_segments=num_segments,
                min_segment_units=min_segment_units,
                decision_point=point,
                prior=costs(n),
            )
        if cuts is not None:
            ends = [0] * n
            for c in cuts:
                ends[c] = 1
            # A segment's label comes from its units' label probabilities as the network gives them
            # (the CRF's marginals), as its own labels do. Not the calibrated ones: calibration moves
            # the decision point (the lyrics model's isotonic map sends P(chorus) 0.58 to 0.47), so
            # chorus lines in a forced segment would turn verse.
            labels = ends if self.task == BOUNDARY else segment_labels(label_probs, ends)
        return Prediction(
            units, labels, self.label_names, p_end, ends, self.task, unit_spans=unit_spans, split_units=split_units
        )

    # -- the public API ---------------------------------------------------------------------
    def segment(
        self,
        text: str,
        *,
        units: str | None = None,
        return_probs: bool = False,
        threshold: float | None = None,
        num_segments: int | None = None,
        min_segment_units: int = 1,
        max_segment_chars: int | None = None,
        max_segment_tokens: int | None = None,
        tokenizer: Any = None,
        length_prior: bool | float | None = None,
    ) -> list[list[str]] | Prediction:
        """The segments of ``text`` (lists of units); with ``return_probs`` the whole
        Prediction (units, labels, boundary_probs, boundaries, .segments, .spans into
        ``text``). ``units``: how the text becomes units, sentences | lines; None: as the
        model was trained (``self.units``). threshold, num_segments, min_segment_units,
        max_segment_chars, max_segment_tokens, tokenizer, length_prior: as for ``predict``."""
        decide = {
            "threshold": threshold,
            "num_segments": num_segments,
            "min_segment_units": min_segment_units,
            "max_segment_chars": max_segment_chars,
            "max_segment_tokens": max_segment_tokens,
            "tokenizer": tokenizer,
            "length_prior": length_prior,
        }
        return self.segment_many([text], units=units, return_probs=return_probs, **decide)[0]

    def segment_many(
        self,
        texts: Iterable[str],
        *,
        units: str | None = None,
        return_probs: bool = False,
        threshold: float | None = None,
        num_segments: int | None = None,
        min_segment_units: int = 1,
        max_segment_chars: int | None = None,
        max_segment_tokens: int | None = None,
        tokenizer: Any = None,
        length_prior: bool | float | None = None,
    ) -> list[list[list[str]]] | list[Prediction]:
        """``segment`` for many texts, run through the network in batches."""
        decide = {
            "threshold": threshold,
            "num_segments": num_segments,
            "min_segment_units": min_segment_units,
            "max_segment_chars": max_segment_chars,
            "max_segment_tokens": max_segment_tokens,
            "tokenizer": tokenizer,
            "length_prior": length_prior,
        }
        limits.check(  # settings that can never hold fail before the sentence splitter runs
            max_segment_chars=max_segment_chars,
            max_segment_tokens=max_segment_tokens,
            tokenizer=tokenizer,
            min_segment_units=min_segment_units,
        )
        texts = list(texts)
        units = self.resolve_units(units)
        split = [self.split_with_spans(t, units=units) for t in texts]
        preds = self.predict([u for u, _ in split], texts=texts, unit_spans=[sp for _, sp in split], **decide)
        return preds if return_probs else [p.segments for p in preds]


def check_source(ckpt_path: str | os.PathLike | None, pretrained: str | None) -> None:
    """ValueError unless exactly one of a checkpoint and a shipped model is named (the
    scripts' ``ckpt_path=`` / ``pretrained=``)."""
    if (ckpt_path is None) == (pretrained is None):
        raise ValueError(
            f"give ckpt_path= (a checkpoint) or pretrained= (one of {sorted(MODELS)}), "
            f"not {'both' if pretrained else 'neither'}: ckpt_path={ckpt_path}, pretrained={pretrained}"
        )


def _piece_ranges(origin: Sequence[int]) -> list[tuple[int, int]]:
    """[first, stop) ranges of positions that share an origin, for origins with more than one."""
    ranges, first = [], 0
    for k in range(1, len(origin) + 1):
        if k == len(origin) or origin[k] != origin[first]:
            if k - first > 1:
                ranges.append((first, k))
            first = k
    return ranges


def segment_labels(probs: Tensor, ends: Sequence[int]) -> list[int]:
    """Section labels consistent with chosen segment ends: each segment takes the label with
    the largest summed probability over its units. probs (n, C)."""
    labels, start = [], 0
    for i, end in enumerate(ends):
        if end or i == len(ends) - 1:
            label = int(probs[start : i + 1].sum(dim=0).argmax())
            labels += [label] * (i + 1 - start)
            start = i + 1
    return labels


def sentence_splitter(name: str, *, language: str = DEFAULTS.language) -> Callable[[str], Iterable[str]]:
    """text -> its sentences, by splitter ``name`` (one of SPLITTERS; imported when first
    needed: only units=sentences splits)."""
    if check_splitter(name) == "sentencex":
        from sentencex import segment

        return lambda text: segment(language, text)
    import pysbd

    return pysbd.Segmenter(language=language, clean=False).segment


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

"""Fit a segment-length prior for a checkpoint's decisions on validation documents and store it
with its calibration (scripts/fit_prior.py, segmenter/conf/fit_prior.yaml).

A model trained on segments of 6-10 units cuts prose whose sections are 20-40 units long into
pieces of the lengths it trained on. The decisions' programme (segmenter.core.programme) can
add, per segment, a weighted log-probability of its length in units under a log-normal
(segmenter.core.decisions.LengthPrior). Here:

1. mu and sigma are the mean and standard deviation of log length over the reference segments
   of the validation documents (``data=`` and ``split=``, by default the run's own);
2. the network runs once over those documents; each pair of a weight of ``weights`` and a
   per-cut penalty of ``penalties`` decides them again, and the pair with the lowest mean Pk
   is kept (ties: the smaller weight, then the penalty nearest 0);
3. ``by_default``: whether decisions use the prior when the caller does not say (``length_prior=``):
   ``auto`` switches it on when it beats no prior on those documents by more than ``margin``
   (a Pk fraction), else leaves it off; ``true``/``false`` decide;
4. the prior is written into the checkpoint's calibration entry (segmenter.inference.calibration;
   the weights and their digest are untouched), or into a copy at ``output=``.

The weights table (validation Pk of every weight) is stored with it and logged.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from segmenter.core.decisions import PRIOR_MARGIN, PRIOR_PENALTY, PRIOR_WEIGHT, LengthPrior
from segmenter.core.document import BOUNDARY, Document, boundary_labels
from segmenter.inference import calibration
from segmenter.inference.api import Segmenter

log = logging.getLogger(__name__)

ON = ("auto", True, False)


def segment_lengths(docs: list[Document]) -> list[int]:
    """The length in units of every reference segment of ``docs`` (boundary task)."""
    lengths = []
    for d in docs:
        ends = [i for i, e in enumerate(boundary_labels(d.labels, BOUNDARY)[:-1]) if e]
        bounds = [-1, *ends, len(d.units) - 1]
        lengths += [b - a for a, b in zip(bounds, bounds[1:])]
    return lengths


def fit(
    model: Segmenter,
    docs: list[Document],
    *,
    weights: list[float],
    penalties: Sequence[float] = (0.0,),
    by_default: str | bool = "auto",
    margin: float = 0.01,
    fitted_on: str = "",
) -> LengthPrior:
    """The prior for ``model`` fitted on ``docs`` (module docstring); ``model`` is left as it was."""
    from segmenter.evaluation.evaluate import score  # the Pk evaluate reports

    if model.task != BOUNDARY:
        raise ValueError(f"a length prior is fitted for boundary models; this one's task is {model.task!r}")
    if not docs:
        raise ValueError("no documents to fit a length prior on")
    if by_default not in ON:
        raise ValueError(f"by_default={by_default!r}: expected one of {ON}")
    PRIOR_MARGIN.check("margin", margin)
    if not weights or not penalties:
        raise ValueError(f"weights={list(weights)}, penalties={list(penalties)}: give the values to try")
    for i, w in enumerate(weights):
        PRIOR_WEIGHT.check(f"weights[{i}]", w)
    for i, c in enumerate(penalties):
        PRIOR_PENALTY.check(f"penalties[{i}]", c)
    shape = LengthPrior.fit(segment_lengths(docs), fitted_on=fitted_on)
    logits = model.logits([d.units for d in docs])
    refs = [boundary_labels(d.labels, BOUNDARY)[:-1] for d in docs]
    own = model.calibration
    pk: dict[str, float] = {}
    found: dict[str, tuple[float, float]] = {}

    def measure(prior: LengthPrior | None, setting: bool) -> float:
        model.calibration = replace(own, length_prior=prior)
        preds = [model.decide(list(d.units), lg, length_prior=setting) for d, lg in zip(docs, logits)]
        return score([(p.boundaries[:-1], r) for p, r in zip(preds, refs)])["pk"]

    try:
        pk["none"] = measure(None, False)
        log.info("no length prior: validation Pk %.2f%%", 100 * pk["none"])
        for w in sorted(set(map(float, weights))):
            for c in sorted(set(map(float, penalties)), key=abs):
                key = f"{w:g},{c:g}"
                pk[key], found[key] = measure(replace(shape, weight=w, cut_penalty=c), True), (w, c)
                log.info("length prior weight %g, cut penalty %g: validation Pk %.2f%%", w, c, 100 * pk[key])
    finally:
        model.calibration = own
    best = min(found, key=lambda k: (pk[k], found[k][0], abs(found[k][1])))
    better = pk["none"] - pk[best] > margin
    switched = better if by_default == "auto" else bool(by_default)
    log.info(
        "length prior: mu %.3f (median %.1f units), sigma %.3f over %d segments; weight, cut penalty %s "
        "(Pk %.2f%% against %.2f%% without); %s by default",
        shape.mu,
        math.exp(shape.mu),
        shape.sigma,
        shape.segments,
        best,
        100 * pk[best],
        100 * pk["none"],
        "on" if switched else "off",
    )
    weight, penalty = found[best]
    return replace(shape, weight=weight, cut_penalty=penalty, on=switched, pk=pk)


def _data_overrides() -> str:
    """The command line's data settings (`` (data=wiki data.corpus.join_sections=2)``), or
    nothing outside a Hydra app: what the stored prior says it was fitted on."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    given = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].split(".")[0] in ("data", "folder")]
    return f" ({' '.join(given)})" if given else ""


def run(cfg: Any) -> LengthPrior:
    """scripts/fit_prior.py's body: the user's mistakes are ConfigErrors (one line, exit status 2)."""
    from segmenter.cli.config import ConfigError
    from segmenter.evaluation.evaluate import load_checkpoint, select_documents

    path = Path(cfg.ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file")
    source = load_checkpoint(path, cfg)  # the run's validation data, or data=
    docs, _, task, name = select_documents(cfg, source)
    data_name = cfg.get("fitted_on") or f"{name} split" + _data_overrides()
    try:
        prior = fit(
            source.model,
            docs,
            weights=list(cfg.weights),
            penalties=list(cfg.penalties),
            by_default=cfg.by_default,
            margin=cfg.margin,
            fitted_on=data_name,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out = Path(cfg.output) if cfg.get("output") else path
    if out != path:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
    calibration.write(out, replace(source.model.calibration, length_prior=prior))
    log.info("wrote the length prior into %s", out)
    return prior

"""What a length limit costs a perfect model: the reference boundaries, decided under the
limits by the same dynamic programme as a model's probabilities (segmenter.core.limits).

A model that knew every true boundary (p = 1 there, 0 elsewhere) and had to keep each
segment within ``max_segment_tokens`` would still cut inside every longer section, and Pk
counts those cuts. The Pk of that oracle is the least a limit costs any model:

    python -m segmenter.evaluation.oracle --data wiki --max-segment-tokens 256 --tokenizer minilm
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from segmenter.core import limits
from segmenter.core.document import BOUNDARY, Document, boundary_slots
from segmenter.core.spans import joined
from segmenter.training.metrics import pk, window_diff

log = logging.getLogger(__name__)


def oracle_cuts(units: Sequence[str], reference: Sequence[int], lim: limits.SegmentLimits) -> list[int]:
    """The cuts (units after which a segment ends) of the reference boundary slots
    ``reference`` (N - 1) under ``lim``: every reference cut kept where the limits allow,
    the fewest extra cuts where they do not."""
    text, spans = joined(units)
    spans, owner = limits.split_long_units(text, spans, lim)
    p = [0.0] * len(spans)
    for piece, unit in enumerate(owner):  # a boundary after a unit is after its last piece
        last = piece + 1 == len(owner) or owner[piece + 1] != unit
        if last and unit < len(reference) and reference[unit]:
            p[piece] = 1.0
    cuts = limits.best_cuts(p, text, spans, lim, threshold=0.5)
    # back to units: a cut inside a unit (between its pieces) has no place in the reference
    return sorted({owner[c] for c in cuts if c + 1 == len(owner) or owner[c + 1] != owner[c]})


def measure(docs: Iterable[Document], lim: limits.SegmentLimits) -> dict[str, float]:
    """Mean Pk and WindowDiff of the oracle over ``docs``, and its cuts against the reference's."""
    pks, wds, extra, reference_cuts = [], [], 0, 0
    for doc in docs:
        ref = boundary_slots(torch.as_tensor(doc.labels), BOUNDARY)  # (N - 1,)
        hyp = torch.zeros_like(ref)
        for c in oracle_cuts(doc.units, ref.tolist(), lim):
            if c < len(hyp):
                hyp[c] = 1
        pks.append(pk(hyp, ref))
        wds.append(window_diff(hyp, ref))
        extra += int(hyp.sum() - (hyp * ref).sum())
        reference_cuts += int(ref.sum())
    return {
        "documents": len(pks),
        "pk": sum(pks) / len(pks),
        "windowdiff": sum(wds) / len(wds),
        "reference_cuts": reference_cuts,
        "extra_cuts": extra,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="wiki", help="a data config (segmenter/conf/data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-segment-tokens", type=int)
    parser.add_argument("--max-segment-chars", type=int)
    parser.add_argument("--tokenizer", default="minilm")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.corpus.join_sections=2")
    args = parser.parse_args(argv)
    import hydra
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base=None):
        cfg = compose("train", overrides=[f"data={args.data}", "data.split_file=null", *args.overrides])
    docs = hydra.utils.instantiate(cfg.data).documents(args.split)
    lim = limits.limits(
        max_segment_chars=args.max_segment_chars,
        max_segment_tokens=args.max_segment_tokens,
        tokenizer=args.tokenizer if args.max_segment_tokens else None,
    )
    print(json.dumps(measure(docs, lim)))


if __name__ == "__main__":
    main()

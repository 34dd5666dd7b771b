"""Make a shipped model from a training run: the calibrated best checkpoint, slimmed to what
prediction needs, and its card.

    python scripts/train.py experiment=pretrained_topic hydra.run.dir=outputs/pretrained/topic
    python scripts/evaluate.py ckpt_path=outputs/pretrained/topic/checkpoints/<best>.ckpt split=val
    python scripts/evaluate.py ckpt_path=outputs/pretrained/topic/checkpoints/<best>.ckpt
    python -m segmenter.pretrained.build topic outputs/pretrained/topic
    python scripts/fit_prior.py ckpt_path=segmenter/pretrained/topic.ckpt data=wiki data.corpus.join_sections=2
    python -m segmenter.pretrained.build --card topic outputs/pretrained/topic

The build fits the calibrator on the run's validation split (with this version's
``segmenter.inference.calibration``) and stores it in the checkpoint. The card embeds the
evaluation tables the run's ``eval/`` folder holds (scripts/evaluate.py writes them, baselines
beside the model) and the calibration stored in the checkpoint, with the length prior that
scripts/fit_prior.py stores there (``--card`` writes the card again from the checkpoint as it is).
"""

from __future__ import annotations

import logging
import math
import re
import sys
from pathlib import Path

import hydra
import torch

from segmenter.core.decisions import LengthPrior
from segmenter.core.document import IGNORE
from segmenter.core.io import atomic_file, atomic_write
from segmenter.features import Featurizer
from segmenter.inference import calibration
from segmenter.inference.checkpoint import KEY, load, load_net, run_cache_dir, run_config
from segmenter.pretrained import MODEL_UNITS, MODELS, _here

log = logging.getLogger(__name__)

KEEP = ("state_dict", KEY, "epoch", "global_step", "pytorch-lightning_version")  # what prediction reads

ABOUT = {
    "topic": {
        "data": "Every topic-segmentation corpus in `../shared/data` plus the built-in one, mixed "
        "(`data=topic_mix`), with segments of many lengths: Choi's source-disjoint split (2,000 training "
        "documents drawn from the Brown texts that occur in none of the test documents of folders 1-3), the "
        "training part (80%, seed 0) of the 567-article Wiki-727K sample counted twice as it is and twice with "
        "every two adjacent sections joined (`wiki_joined`: the same articles, so no validation or test article "
        "is trained on), and the built-in corpus drawn from CPython's documentation with 3-30 sentences a segment.",
        "licence": "Choi's data set: Brown-corpus text, for research use. Wiki-727K: Wikipedia text, CC BY-SA. "
        "Built-in corpus: CPython's documentation (PSF licence). The weights are released with the project (MIT).",
        "command": "python scripts/train.py experiment=pretrained_topic hydra.run.dir=outputs/pretrained/topic",
        "selection": "Of three seeds of that command (42, 1, 2; `seed=`), the one with the lowest mean Pk on the "
        "Wikipedia validation articles as they are and with sections joined (seed 42: 36.1% and 32.8%; seed 1: "
        "39.4% and 34.1%; seed 2: 40.7% and 34.7%). On 454 training articles the seed moves held-out Wikipedia "
        "Pk by several points (docs/pretrained.md). Trained with OMP_NUM_THREADS=1. The command is not "
        "bit-reproducible across machines.",
    },
    "lyrics": {
        "data": "The training songs of the reference lyrics system (`../shared/data/lyrics/train.jsonl`, "
        "623 songs, 28,732 lines), selected on its validation songs (`val.jsonl`, 125 songs).",
        "licence": "Lyrics belong to their authors, used here for research (the data set's repository "
        "`JoseLuna12/lyric-segmentation-ml` is MIT). The weights are released with the project (MIT).",
        "command": "python scripts/train.py experiment=pretrained_lyrics hydra.run.dir=outputs/pretrained/lyrics",
    },
}


def best_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (ModelCheckpoint keeps one epoch_*.ckpt beside last.ckpt)."""
    found = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    if len(found) != 1:
        raise ValueError(f"{run}/checkpoints holds {len(found)} best checkpoints ({[p.name for p in found]}); need one")
    return found[0]


def calibrate(ckpt_path: Path) -> calibration.Calibration:
    """Fit the calibrator on the run's validation split with this version's code and store
    it in the checkpoint (what the training callback does at the end of fit, again: a run
    trained before a calibration method existed gets it here)."""
    cfg = run_config(ckpt_path, reader="the build")
    cfg.data.split_file = None  # never rewrite the run's split file
    net, _ = load_net(ckpt_path, cache_dir=run_cache_dir(cfg))
    datamodule = hydra.utils.instantiate(cfg.data, featurizer=Featurizer.for_net(net))
    datamodule.setup()
    return calibration.calibrate_checkpoint(ckpt_path, net, datamodule.val_dataloader(), ignore_index=IGNORE)


def card_text(name: str, run: Path, ckpt: dict, size: int) -> str:
    about, meta = ABOUT[name], ckpt[KEY]
    cal = calibration.read(meta)
    net = meta["net"]
    attention = (net.get("attention") or {}).get("type", "?")
    encoder = (net.get("encoder") or {}).get("type", "?")
    lines = [
        f"# `{name}`: {MODELS[name]}",
        "",
        f"- Labels: {', '.join(meta['label_names'])} ({meta['task']} task); units: {MODEL_UNITS[name]}.",
        f"- Network: {attention}, {encoder}, width {net.get('dim')}, {net.get('num_layers')} layers; "
        f"segmenter {meta['segmenter_version']}; epoch {ckpt.get('epoch')} (the best on validation).",
        f"- Size: {size / 1e6:.2f} MB (`{name}.ckpt`, weights and config; loads with `weights_only`).",
        f"- Data: {about['data']}",
        f"- Licence: {about['licence']}",
        f"- Rebuild: `{about['command']}`, then the evaluations below and "
        f"`python -m segmenter.pretrained.build {name} outputs/pretrained/{name}`"
        + (
            f"; then `python scripts/fit_prior.py ckpt_path=segmenter/pretrained/{name}.ckpt` on the documents "
            f"the length prior below names, and `python -m segmenter.pretrained.build --card {name} "
            f"outputs/pretrained/{name}`."
            if cal.length_prior is not None
            else "."
        ),
        *([f"- Selection: {about['selection']}"] if "selection" in about else []),
        "",
        "## Calibration",
        "",
        (
            f"Isotonic regression of P({meta['label_names'][1]}) ({len(cal.x)} breakpoints)"
            if cal.method == "isotonic"
            else f"p = softmax(z / T + b), T = {cal.temperature:.3f}, b = {[round(b, 3) for b in cal.bias]}"
        )
        + f", fitted on the validation split ({cal.units:,} units) after training; z: the "
        + ("CRF's marginals" if net.get("crf") else "softmax")
        + " of the best checkpoint. "
        f"Expected calibration error (top label, {cal.bins} bins): {cal.ece_before:.4f} before; "
        f"**{cal.ece_heldout:.4f}** cross-fitted (fitted on half the validation documents, measured on the "
        f"other half, both ways round); {cal.ece_after:.4f} on the units it was fitted on.",
        "",
        *(prior_text(cal.length_prior) if cal.length_prior is not None else []),
    ]
    for split in ("val", "test"):
        table = run / "eval" / f"{split}.md"
        if table.is_file():
            lines += [
                f"## Evaluation: `python scripts/evaluate.py ckpt_path=<best checkpoint> split={split}`",
                "",
                in_rebuild_folder(table.read_text(encoding="utf-8").strip(), name),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def prior_text(prior: LengthPrior) -> list[str]:
    """The card's section on a fitted segment-length prior (scripts/fit_prior.py)."""
    best = f"{prior.weight:g},{prior.cut_penalty:g}"
    return [
        "## Length prior",
        "",
        f"A log-normal over segment lengths in units (median {math.exp(prior.mu):.1f} units, sigma {prior.sigma:.3f} "
        f"of log length, from {prior.segments:,} segments), weight {prior.weight:g} and cut penalty "
        f"{prior.cut_penalty:g} chosen by Pk on the {prior.fitted_on} ({100 * prior.pk[best]:.1f}% against "
        f"{100 * prior.pk['none']:.1f}% without); **{'on' if prior.on else 'off'}** by default "
        f"(`length_prior=true` / `false` switches it; `python scripts/fit_prior.py` fits it). The tables below "
        "are the network's labels, as `scripts/evaluate.py` scores the run's checkpoint (`length_prior=false`).",
        "",
    ]


def in_rebuild_folder(table: str, name: str) -> str:
    """``table`` with the checkpoint it names moved into the folder of the card's rebuild
    command (outputs/pretrained/<name>): the run may have been anywhere (a sweep's job
    folder), and the card's reader follows the rebuild command."""
    return re.sub(r"(checkpoint )\S+?(/checkpoints/[^/\s]+\.ckpt)", rf"\g<1>outputs/pretrained/{name}\g<2>", table)


def build(name: str, run: str | Path, *, out_dir: Path | None = None) -> Path:
    if name not in ABOUT:
        raise ValueError(f"no pretrained model {name!r}; the shipped ones are {sorted(ABOUT)}")
    run, out_dir = Path(run), out_dir or _here()
    src = best_checkpoint(run)
    cal = calibrate(src)
    log.info("calibrated %s (%s): ECE %.4f before, %.4f cross-fitted", src, cal.method, cal.ece_before, cal.ece_heldout)
    full = load(src)
    slim = {k: full[k] for k in KEEP if k in full}
    dst = out_dir / f"{name}.ckpt"
    with atomic_file(dst, "wb") as f:
        torch.save(slim, f)
    load(dst)  # the slim file is a valid checkpoint: digest, weights, plain data
    atomic_write(out_dir / f"{name}.md", card_text(name, run, slim, dst.stat().st_size))
    log.info("wrote %s (%.2f MB) and its card from %s", dst, dst.stat().st_size / 1e6, src)
    return dst


def write_card(name: str, run: str | Path, *, out_dir: Path | None = None) -> Path:
    """The card of the shipped ``name`` written again from its checkpoint as it is: after
    scripts/fit_prior.py has stored a length prior in it, the card says so."""
    if name not in ABOUT:
        raise ValueError(f"no pretrained model {name!r}; the shipped ones are {sorted(ABOUT)}")
    dst = (out_dir or _here()) / f"{name}.ckpt"
    card = dst.with_suffix(".md")
    atomic_write(card, card_text(name, Path(run), load(dst), dst.stat().st_size))
    log.info("wrote the card %s from %s", card, dst)
    return card


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:]
    card_only = args[:1] == ["--card"]
    if len(args) != 3 if card_only else len(args) != 2:
        sys.exit("usage: python -m segmenter.pretrained.build [--card] <topic|lyrics> <run folder>")
    (write_card if card_only else build)(*args[-2:])

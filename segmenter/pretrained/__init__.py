"""Models shipped inside the package, loadable offline right after installation.

    from segmenter import Segmenter
    seg = Segmenter.from_pretrained("topic")     # English topic segmentation of sentences
    seg = Segmenter.from_pretrained("lyrics")    # verse/chorus labels of song lines

    python -m segmenter.pretrained               # the models and their cards

Each model is ``<name>.ckpt`` (a segmenter checkpoint: weights, the network's config,
calibration; loaded with ``weights_only``) beside its card ``<name>.md`` (data, the command
that rebuilds it, validation metrics, size, licence). ``segmenter.pretrained.build`` makes
both from a training run.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

MODELS = {
    "topic": "English topic segmentation of sentences (MiniLM vectors, localized attention)",
    "lyrics": "verse/chorus labels of song lines (self-similarity view, CRF)",
}
# The units each was trained on: its default for plain text. The shipped checkpoints predate
# the checkpoint's own "units" entry; where one holds it, it must agree (tests/inference).
MODEL_UNITS = {"topic": "sentences", "lyrics": "lines"}


def _here() -> Path:
    return Path(str(files(__name__)))


def check_name(name: str) -> None:
    """ValueError naming ``name`` and the shipped models unless it is one of them (the
    scripts check ``pretrained=`` with it before anything loads)."""
    if name not in MODELS:
        raise ValueError(
            f"pretrained={name!r}: no such shipped model; the shipped ones are {', '.join(sorted(MODELS))} "
            "(python -m segmenter.pretrained describes them)"
        )


def checkpoint_path(name: str) -> Path:
    """The shipped checkpoint of model ``name``; ValueError listing the names for an unknown
    one, FileNotFoundError if the package was installed without it."""
    check_name(name)
    path = _here() / f"{name}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"pretrained model {name!r} is missing from the installed package: {path}")
    return path


def card(name: str) -> str:
    """The model card (markdown) of model ``name``."""
    checkpoint_path(name)
    return (_here() / f"{name}.md").read_text(encoding="utf-8")

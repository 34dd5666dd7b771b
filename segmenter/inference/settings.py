"""How a ``Segmenter`` runs its network (not what the network learned), and the defaults of
those settings: one source for the Python API (``Segmenter``'s keyword defaults) and for
the scripts' ``segmenter`` config group (``- segmenter: default`` in conf/predict.yaml,
serve.yaml, predict_throughput.yaml; registered by ``segmenter.cli.config.register``), so
``segmenter.max_units=...`` on the command line and ``Segmenter(max_units=...)`` start from
the same value. Plain Python: ``import segmenter`` registers the group without loading torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TARGET = "segmenter.inference.api.Segmenter.load"  # the scripts pass ckpt_path= or pretrained=


@dataclass(frozen=True)
class InferenceSettings:
    # Longest window the network sees; longer documents are windowed and stitched.
    max_units: int = 512
    # Units shared by neighbouring windows; stitching is exact for localized attention when
    # overlap >= 2 * (cohesion reach + num_layers * (window_size // 2)), 44 at the defaults.
    overlap: int = 64
    batch_size: int = 32  # windows per forward pass
    device: str = "cpu"  # or cuda
    language: str = "en"  # the sentence splitter's language, for units=sentences
    # What splits plain text into sentences: sentencex (compiled, hundreds of times faster than
    # pysbd on a CPU, as many of Wiki-727K's sentences found exactly: docs/predict.md) or pysbd.
    splitter: str = "sentencex"
    # MiniLM encoders: where embeddings are cached (None: memory only; never the checkpoint's).
    cache_dir: str | None = None
    # ... and what a frozen MiniLM encodes in: float32 (exact) or bfloat16 (about twice as fast
    # on a CPU with native bfloat16, AVX-512 BF16 or AMX; emulated without, not measured
    # there; docs/encoders.md).
    minilm_dtype: str = "float32"


DEFAULTS = InferenceSettings()
SPLITTERS = ("sentencex", "pysbd")
MINILM_DTYPES = ("float32", "bfloat16")


def check_splitter(name: str) -> str:
    """``name`` if it is a sentence splitter (SPLITTERS), else a ValueError naming them."""
    if name not in SPLITTERS:
        raise ValueError(f"splitter={name!r} is not one of {SPLITTERS}")
    return name


def check_minilm_dtype(name: str) -> str:
    """``name`` if a frozen MiniLM can encode in it (MINILM_DTYPES), else a ValueError naming them."""
    if name not in MINILM_DTYPES:
        raise ValueError(f"minilm_dtype={name!r} is not one of {MINILM_DTYPES}")
    return name


def config_node() -> dict[str, Any]:
    """The ``segmenter`` config group's ``default`` option: the target and every default."""
    return {"_target_": TARGET, **dataclasses.asdict(DEFAULTS)}

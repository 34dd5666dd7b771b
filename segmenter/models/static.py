"""Static sentence embeddings: each unit's vector is the mean of fixed word-piece vectors.

``minilm-static`` ships inside the package: model2vec's distillation of the shipped
all-MiniLM-L6-v2 (every word piece passed through MiniLM once, PCA to 256 dimensions, Zipf
weighting; ``make static-encoder`` rebuilds it, segmenter.pretrained.distill). Encoding is a
table lookup and a mean, tens of times faster than running MiniLM on a CPU, and needs
neither torch at encoding time nor a cache. Like frozen MiniLM, only a projection to the
model width trains; the cohesion view compares the vectors themselves.

A checkpoint names the static model (``model``): a shipped name, or a model2vec folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from segmenter.core.bounds import Number
from segmenter.features.featurizer import StaticVectors, UnitFeature
from segmenter.models.encoder import ProjectedVectors

SHIPPED = ("minilm-static",)  # in segmenter/pretrained/encoders/
# Word pieces kept per unit (segmenter.core.bounds): checked here and by the checkpoint loader.
MAX_LENGTH = Number(lo=1, hi=1 << 20)


def static_model_dir(model: str | Path) -> Path:
    """The folder of static model ``model``: a shipped name or a model2vec folder; a
    FileNotFoundError naming both kinds for anything else."""
    from segmenter.pretrained import _here

    path = _here() / "encoders" / str(model) if str(model) in SHIPPED else Path(model)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"encoder.model={str(model)!r}: not a shipped static model ({', '.join(SHIPPED)}) nor a model2vec "
            f"folder with config.json and model.safetensors ({path})"
        )
    return path


class StaticEncoder(ProjectedVectors):
    key = "static_vectors"

    def __init__(self, *, dim: int, model: str = "minilm-static", max_length: int = 512) -> None:
        """dim: the model width the vectors are projected to. model: a shipped static model
        (``minilm-static``) or a model2vec folder. max_length: word pieces kept per unit."""
        MAX_LENGTH.check("max_length", max_length)
        self.model_dir = static_model_dir(model)
        width = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))["hidden_dim"]
        super().__init__(dim=dim, width=width)
        self.model, self.max_length = str(model), max_length

    def unit_features(self, **settings) -> list[UnitFeature]:
        return [StaticVectors(model_dir=self.model_dir, max_length=self.max_length)]

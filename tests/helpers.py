"""What tests share besides fixtures: the real Hydra configs composed as the scripts compose
them (shrunk to test size), attention modules built from conf/attention/*.yaml, and
synthetic data. Test modules import from here; tests/conftest.py holds only fixtures."""

from __future__ import annotations

import functools
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from segmenter.cli.config import attention_types
from segmenter.evaluation.evaluate import score_labels
from segmenter.features import Featurizer
from segmenter.inference.api import Segmenter
from segmenter.training.train import build

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "segmenter" / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))

# Every attention type, discovered from conf/attention/*.yaml: tests that hold for all of
# them are parametrized over this, so a new type is tested without editing a test.
ATTENTIONS = tuple(attention_types(conf=CONF))

TINY_DATA = [
    "data.corpus.num_docs={train: 16, val: 4, test: 4}",
    "data.corpus.segments_per_doc=4",
    "data.batch_size=4",
]


def compose_config(
    config_name: str, overrides: list[str] = (), *, conf: Path = CONF, hydra_config: bool = False
) -> DictConfig:
    """Compose ``<conf>/<config_name>.yaml`` with ``overrides`` as the scripts would (GlobalHydra
    is left clear). ``hydra_config``: keep the hydra node and make it current, so
    ``${hydra:...}`` interpolations resolve."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)
            if hydra_config:
                HydraConfig().set_config(cfg)
    finally:
        GlobalHydra.instance().clear()
    return cfg


def compose_train(tmp_path: Path, overrides: list[str] = (), *, conf: Path = CONF) -> DictConfig:
    """Compose conf/train.yaml as the CLI would, with outputs under tmp_path."""
    cfg = compose_config("train", overrides, conf=conf, hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


@functools.cache
def _attention_config(name: str, dim: int, num_heads: int) -> dict[str, Any]:
    cfg = compose_config("train", [f"attention={name}", f"model.net.dim={dim}", f"attention.num_heads={num_heads}"])
    return OmegaConf.to_container(cfg.attention, resolve=True)


def build_attention(name: str, *, dim: int = 32, num_heads: int = 4, **settings: Any) -> nn.Module:
    """One attention module as the network gets it: conf/attention/<name>.yaml composed
    (``attention=<name>``) and instantiated, ``settings`` overriding its values."""
    factory = hydra.utils.instantiate({**_attention_config(name, dim, num_heads), **settings})
    return factory()


def score_checkpoint(ckpt: Path, docs: list, task: str) -> dict[str, float]:
    """The test metrics of ``ckpt`` on ``docs``, computed apart from Lightning: the API's
    predictions (whole documents), scored by evaluate's metric path."""
    seg = Segmenter.from_checkpoint(ckpt, max_units=max(len(d) for d in docs), overlap=0)  # whole documents
    preds = seg.predict([d.units for d in docs])
    return score_labels([(p.label_ids, d.labels) for p, d in zip(preds, docs)], task, seg.label_names)


def write_songs(path: Path, *, num_songs: int = 24, seed: int = 0) -> Path:
    """Synthetic songs in the JSONL section format (label 0 = verse, 1 = chorus): verses of
    fresh random lines, and one chorus block that recurs (sometimes with an ad-lib added),
    as a chorus does. Each verse line is its own random words, so only recurrence tells the
    chorus apart."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]

    def line() -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(3, 7)))

    with open(path, "w", encoding="utf-8") as f:
        for n in range(num_songs):
            chorus = [line() for _ in range(rng.randint(2, 4))]
            lines, labels = [], []
            for _ in range(rng.randint(2, 3)):
                verse = [line() for _ in range(rng.randint(3, 6))]
                sung = [c if rng.random() < 0.8 else f"(yeah) {c}" for c in chorus]
                lines += verse + sung
                labels += [0] * len(verse) + [1] * len(sung)
            f.write(json.dumps({"id": f"song{n}", "lines": lines, "labels": labels}) + "\n")
    return path


# A small network for single-step tests (tests/training/test_precision.py, tests/test_gpu.py).
TINY_MODEL = ["model.net.dim=32", "model.net.num_layers=2", "model.net.ff_dim=32", "model.net.cohesion.radius=2"]


def one_step(cfg, *, accelerator: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Parameters before and after one training step, and the step's loss."""
    datamodule, model = build(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    after = {n: p.detach().cpu() for n, p in model.named_parameters()}
    return before, after, float(trainer.callback_metrics["train/loss"])


# ----------------------------------------------------------------------------- small data

TEXT = (
    "The cat sat on the mat. It purred all afternoon in the sun. Cats like warm places.\n\n"
    "Stocks fell sharply on Monday. Investors worried about rising interest rates. "
    "The central bank said it would act.\n\n"
    "The recipe needs two eggs. Beat them with sugar until pale. Fold in the flour gently.\n"
)
# Choi's separator format: three segments of 2, 1 and 3 units.
CHOI = """==========
a one .
a two .
==========
b one .
==========
c one .
c two .
c three .
==========
"""
# Boundary slots (hypothesis, reference): a first document where Pk and WindowDiff agree,
# then one where they differ (a double boundary).
AGREE = ([0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0])
DIFFER = ([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    """A file with ``text`` (str: encoded with ``encoding``; bytes: as is), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def jsonl(tmp_path: Path, rows: list, name: str = "d.jsonl") -> Path:
    """A JSONL file of ``rows`` (dicts as JSON, strings as they are)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return write(tmp_path / name, "\n".join(lines) + "\n")


def predict_cfg(*overrides: str) -> DictConfig:
    """conf/predict.yaml composed as scripts/predict.py would."""
    return compose_config("predict", list(overrides))


def run_net(net: nn.Module, docs: list[list[str]], **kwargs: Any):
    """``net`` on documents of unit strings: featurized by its own featurizer first, as the
    data pipeline and ``Segmenter`` do."""
    return net(Featurizer.for_net(net).batch(docs), **kwargs)


def one_hot_by_first_seen(feats) -> torch.Tensor:
    """Stand-in for a hashed encoder's ``frozen_units``: a one-hot vector (of 8) per distinct
    unit (distinct bags of hashed ids), numbered by first appearance in the batch."""
    bags = torch.split(feats["hashed_ids"], feats["hashed_sizes"].tolist())
    ids: dict[tuple[int, ...], int] = {}
    return torch.eye(8)[[ids.setdefault(tuple(b.tolist()), len(ids)) for b in bags]]  # (N, 8)


def entry_config(script: str) -> str:
    """The config_name ``scripts/<script>.py`` hands to segmenter.cli.main, itself or through
    the command of segmenter.cli.commands it wraps (``from segmenter.cli.commands import <name>``)."""
    text = (ROOT / "scripts" / f"{script}.py").read_text(encoding="utf-8")
    if "from segmenter.cli.commands import " in text:
        command = text.split("from segmenter.cli.commands import ", 1)[1].split()[0]
        text = (ROOT / "segmenter" / "cli" / "commands.py").read_text(encoding="utf-8")
        text = "segmenter.cli." + text.split(f"\ndef {command}(", 1)[0].rsplit("@", 1)[1]
    found = re.search(r'segmenter\.cli\.main\(config_name="(\w+)"', text)
    assert found, f"scripts/{script}.py: no segmenter.cli.main(config_name=...)"
    return found.group(1)


WIKI_ARTICLES = {
    "12/34/56/1234567": [
        "========,1,preface.",
        "Alpha is a village in the north.",
        "It has a church.",
        "========,2,History.",
        "========,3,Early history.",
        "The village was founded in 1200.",
        "***LIST***.",
        "It grew slowly.",
        "========,2,Geography.",
        "The village lies on a river.",
    ],
    "12/34/57/1234571": [
        "========,1,preface.",
        "========,2,Career.",
        "Beta played football for ten years.",
        "He then became a coach.",
        "She trained three teams.",
        "========,2,Personal life.",
        "Beta lives in a small town.",
    ],
    "98/76/54/9876543": [
        "========,1,preface.",
        "Gamma is a river.",
        "========,2,Course.",
        "It flows to the sea.",
        "========,3,Tributaries.",
        "Two small streams join it.",
        "========,4,Names.",
        "Their names are old.",
    ],
}


def write_wiki_pool(folder: Path) -> Path:
    """Three small articles in Wiki-727K's format and layout (levels 1 to 4, an empty
    preface and section, a removed list) under ``folder``."""
    for rel, lines in WIKI_ARTICLES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tamper_cache_entry(path: Path, *, row: int, dim: int) -> None:
    """Change the first value of entry ``row``'s vector in an embedding-cache shard file
    (segmenter.models.embedding_cache), its checksum left as it was."""
    from segmenter.models.embedding_cache import HEADER

    data = bytearray(path.read_bytes())
    n = HEADER.unpack(bytes(data[: HEADER.size]))[3]
    at = HEADER.size + n * (8 + 32 + 4) + row * dim * 2  # past prefixes, keys, checksums: float16 vectors
    value = np.frombuffer(bytes(data[at : at + 2]), dtype="<f2")[0]
    data[at : at + 2] = np.asarray([value + 1], dtype="<f2").tobytes()
    path.write_bytes(bytes(data))


def cli_status(cfg) -> int:
    """scripts/predict.py's body under the scripts' error policy, in-process: the exit status."""
    from segmenter.cli.app import run_task
    from segmenter.inference.predict import run

    try:
        run_task(run, cfg)
    except SystemExit as e:
        return e.code
    return 0

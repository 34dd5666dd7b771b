"""Extending segmenter without editing it, as the README's recipes do.

- A fourth attention type is a class plus a YAML: written here into a throwaway config
  folder (the repository's conf/ is not touched), it is discovered, composed, keeps the
  attention contract and trains, in process and through scripts/train.py's --config-dir.
  Registered under the ``segmenter.parts`` entry point of its package (here a throwaway
  distribution on sys.path), its checkpoints name it and load.
- A new corpus is a reader class plus a short YAML extending data/default.yaml."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from segmenter import Segmenter
from segmenter.cli.config import attention_types, options
from segmenter.core.document import BOUNDARY, Document, segments_to_document
from segmenter.data.corpora import FileCorpus
from segmenter.data.formats import list_files, read_text
from segmenter.inference.checkpoint import build_net, net_config
from segmenter.models.attention import Attention, AttentionOutput, InspectableAttention
from segmenter.models.registry import Part
from segmenter.training.train import train
from tests.helpers import CONF, ROOT, TINY_DATA, compose_train


class MeanPoolAttention(nn.Module):
    """A throwaway attention: every unit receives the mean of the document's real units,
    projected. Padding never reaches a real unit."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        m = mask[..., None].to(x.dtype)  # (B, T, 1)
        mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)  # (B, 1, D)
        return AttentionOutput(self.proj(mean).expand_as(x), None)  # (B, T, D)


# Its registration: built once per layer, as every attention is.
MEAN_POOL = Part(MeanPoolAttention, partial=True, limits={"dim": 16_384})


def install_plugin(folder) -> str:
    """A distribution that registers MEAN_POOL as the part "mean_pool", as a user's package
    would in its pyproject.toml; importlib.metadata finds it on sys.path. Returns the folder."""
    info = folder / "mean_pool_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-pool-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[segmenter.parts]\nmean_pool = tests.test_extending:MEAN_POOL\n")
    return str(folder)


# All a user writes besides the class: conf/attention/mean_pool.yaml.
YAML = """# Every unit sees the mean of its document (a test's throwaway attention).
_target_: tests.test_extending.MeanPoolAttention
_partial_: true   # the network builds one per layer
dim: ${model.net.dim}
"""
RUN = [
    "debug=fdr",
    "logger=none",
    "callbacks.lr_monitor=null",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def test_a_fourth_attention_is_a_class_plus_a_yaml(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(install_plugin(tmp_path / "site"))
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "attention" / "mean_pool.yaml").write_text(YAML)
    assert attention_types(conf=conf) == sorted([*attention_types(conf=CONF), "mean_pool"])

    cfg = compose_train(tmp_path, [*TINY_DATA, "attention=mean_pool", *RUN], conf=conf)
    module = hydra.utils.instantiate(cfg.attention)()  # as the network builds each layer's
    assert isinstance(module, Attention) and not isinstance(module, InspectableAttention)
    x, mask = torch.randn(2, 5, cfg.model.net.dim), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert module(x, mask).y.shape == x.shape

    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1", "test/pk"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    # A checkpoint's net entry names the part by its registered name, and builds from it.
    entry = net_config(cfg.model.net, num_classes=2)
    assert entry["attention"] == {"type": "mean_pool", "dim": cfg.model.net.dim}
    seg = Segmenter(net=build_net(entry).eval(), task="boundary", label_names=["inside", "boundary"])
    assert isinstance(seg.net.blocks[0].attention, MeanPoolAttention) and len(seg.predict([["a b", "c d", "e f"]])) == 1


def test_an_unregistered_part_is_refused_before_training(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "attention" / "mean_pool.yaml").write_text(YAML)
    cfg = compose_train(tmp_path, [*TINY_DATA, "attention=mean_pool", *RUN], conf=conf)
    with pytest.raises(
        ValueError,
        match=r"model.net.attention: tests.test_extending.MeanPoolAttention is not a registered part.*segmenter.parts",
    ):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_fourth_attention_from_the_command_line(tmp_path):
    """The same through the documented command: the YAML in a folder of its own, given to
    scripts/train.py with Hydra's --config-dir (the class importable: here PYTHONPATH)."""
    extra = tmp_path / "my_conf"
    (extra / "attention").mkdir(parents=True)
    (extra / "attention" / "mean_pool.yaml").write_text(YAML)
    cmd = [
        sys.executable,
        "scripts/train.py",
        "--config-dir",
        str(extra),
        "attention=mean_pool",
        *RUN,
        *TINY_DATA,
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([str(ROOT), install_plugin(tmp_path / "site")]),
    }
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert saved.model.net.attention._target_ == "tests.test_extending.MeanPoolAttention"
    assert "test/f1" in json.loads((tmp_path / "run" / "metrics.json").read_text())


class BlankLineCorpus(FileCorpus):
    """Plain text files: one unit per line, a blank line between segments."""

    task = BOUNDARY
    label_names = ("inside", "boundary")

    def read(self, paths) -> list[Document]:
        docs = []
        for f in list_files(paths):
            segments = [block.splitlines() for block in read_text(f).split("\n\n") if block.strip()]
            docs.append(segments_to_document(f.name, segments))
        return docs


# All a user writes besides the class: conf/data/blank_lines.yaml.
CORPUS_YAML = """# Plain text, a blank line between segments: data=blank_lines data.corpus.path=<folder>
defaults:
  - default
  - _self_
corpus:
  _target_: tests.test_extending.BlankLineCorpus
  path: ???
"""


def test_a_new_corpus_is_a_reader_class_plus_a_yaml(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "data" / "blank_lines.yaml").write_text(CORPUS_YAML)
    assert "blank_lines" in options("data", conf=conf)
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(10):
        segments = [[f"topic {i}{s} line {n} about thing {i * s + n}" for n in range(3)] for s in range(3)]
        (texts / f"doc{i}.txt").write_text("\n\n".join("\n".join(seg) for seg in segments) + "\n")
    cfg = compose_train(
        tmp_path, ["data=blank_lines", f"data.corpus.path={texts}", "data.batch_size=2", *RUN], conf=conf
    )
    assert cfg.data.split_file.endswith("splits.json") and cfg.data._target_.endswith("SegmentationDataModule")
    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1", "test/pk"} <= set(metrics)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    assert sorted(id for ids in splits.values() for id in ids) == sorted(f"doc{i}.txt" for i in range(10))

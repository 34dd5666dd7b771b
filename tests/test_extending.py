"""Extending segmenter without editing it, as the README's recipes do.

- A fourth attention type is a class plus a YAML: written here into a throwaway config
  folder (the repository's conf/ is not touched), it is discovered, composed, keeps the
  attention contract and trains, in process and through scripts/train.py's --config-dir.
- A new corpus is a reader class plus a short YAML extending data/default.yaml."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import hydra
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from segmenter.config import attention_types, options
from segmenter.data.corpora import FileCorpus
from segmenter.data.document import BOUNDARY, Document, segments_to_document
from segmenter.data.formats import list_files, read_text
from segmenter.models.attention import Attention, AttentionOutput, InspectableAttention
from segmenter.train import train
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


# All a user writes besides the class: conf/attention/mean_pool.yaml.
YAML = """# Every unit sees the mean of its document (a test's throwaway attention).
_target_: tests.test_extending.MeanPoolAttention
_partial_: true   # the network builds one per layer
dim: ${model.net.dim}
"""
RUN = ["debug=fdr", "logger=none", "callbacks.lr_monitor=null", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def test_a_fourth_attention_is_a_class_plus_a_yaml(tmp_path):
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


def test_the_fourth_attention_from_the_command_line(tmp_path):
    """The same through the documented command: the YAML in a folder of its own, given to
    scripts/train.py with Hydra's --config-dir (the class importable: here PYTHONPATH)."""
    extra = tmp_path / "my_conf"
    (extra / "attention").mkdir(parents=True)
    (extra / "attention" / "mean_pool.yaml").write_text(YAML)
    cmd = [sys.executable, "scripts/train.py", "--config-dir", str(extra), "attention=mean_pool", *RUN, *TINY_DATA,
           f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
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
    cfg = compose_train(tmp_path, ["data=blank_lines", f"data.corpus.path={texts}", "data.batch_size=2", *RUN], conf=conf)
    assert cfg.data.split_file.endswith("splits.json") and cfg.data._target_.endswith("SegmentationDataModule")
    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1", "test/pk"} <= set(metrics)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    assert sorted(id for ids in splits.values() for id in ids) == sorted(f"doc{i}.txt" for i in range(10))

"""Distributed training: two-process DDP (gloo on CPU) through the real command line;
its validation metrics cover the whole validation set exactly once, so they equal a
single-process evaluation of the same checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from segmenter.data.datamodule import SegmentationDataModule
from segmenter.training.train import build
from tests.helpers import ROOT, compose_train

# An odd number of validation documents, two per batch: rank 0 gets documents 0, 2, 4
# (two batches), rank 1 gets 1, 3 (one batch). A padding sampler would evaluate one
# document twice.
DATA = ["data.corpus.num_docs={train: 8, val: 5, test: 5}", "data.corpus.segments_per_doc=4", "data.batch_size=2"]
# Two corpora, validated apart as well (val/a/..., val/b/...): rank 0 gets a0, a2 and b0,
# rank 1 a1 and a3, so one process never sees corpus b and still has to sync its metrics.
MIXTURE = [
    "data=default",
    "data.batch_size=2",
    "data.corpus={_target_: segmenter.data.mixture.MixedCorpus, corpora: {"
    "a: {_target_: segmenter.data.builtin.BuiltinCorpus, num_docs: {train: 8, val: 4, test: 2}, segments_per_doc: 4, seed: 0, cache_dir: '${paths.cache_dir}'}, "
    "b: {_target_: segmenter.data.builtin.BuiltinCorpus, num_docs: {train: 4, val: 1, test: 2}, segments_per_doc: 4, seed: 1, cache_dir: '${paths.cache_dir}'}}}",
]
SMALL = [
    "attention=localized",
    "model.net.dim=32",
    "model.net.num_layers=2",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.num_sanity_val_steps=0",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "test=false",
]


def test_eval_sampler_covers_every_document_once(tiny_cfg):
    dm: SegmentationDataModule = build(tiny_cfg(*DATA))[0]
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.val_dataloader()
        seen.append([doc_id for batch in loader for doc_id in batch["ids"]])
    assert len(seen[0]) == 3 and len(seen[1]) == 2  # off by one, nothing repeated
    assert sorted(seen[0] + seen[1]) == sorted(d.id for d in dm.splits["val"])
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0)
    assert dm.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (DATA, ()),
        (MIXTURE, ("val/a/f1", "val/a/pk", "val/b/f1", "val/b/pk", "val/b/windowdiff")),
    ],
    ids=["one corpus", "two corpora"],
)
def test_two_process_ddp_matches_single_process_evaluation(
    tmp_path, data, keys
):  # ~16 s each on 2 cores: in the default suite
    run_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "scripts/train.py",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *data,
        *SMALL,
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    log = (run_dir / "train.log").read_text()
    assert (
        "world_size: 2" in log or "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    )
    ddp = json.loads((run_dir / "metrics.json").read_text())

    # The same checkpoint, evaluated by one process over the whole validation set.
    cfg = compose_train(tmp_path / "single", [*data, *SMALL])
    datamodule, model = build(cfg)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (single,) = trainer.validate(model, datamodule=datamodule, ckpt_path=str(run_dir / "checkpoints" / "last.ckpt"))
    assert ddp["val/f1"] == pytest.approx(single["val/f1"], abs=1e-7)
    for key in ("val/pk", "val/windowdiff", "val/boundary_f1", *keys):  # the segmentation metrics (per corpus)
        assert key in single and key in ddp, key
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
    assert torch.isfinite(torch.tensor(list(single.values()))).all()

"""Training end to end: fast_dev_run per attention type, and the README's main command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segmenter.inference.api import Segmenter
from segmenter.training.callbacks import monitored_checkpoint
from segmenter.training.train import build, train
from tests.helpers import ATTENTIONS, ROOT, TINY_DATA, compose_train, score_checkpoint


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_fast_dev_run(tiny_cfg, attention):
    metrics = train(tiny_cfg(f"attention={attention}", "debug=fdr"))
    assert {"train/loss", "val/loss", "val/f1", "test/f1"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


def test_boundary_aware_logs_its_auxiliary_loss(tiny_cfg):
    metrics = train(tiny_cfg("attention=boundary_aware", "debug=fdr", "model.aux_loss_weight=0.5"))
    assert "train/aux_loss" in metrics and metrics["train/aux_loss"] > 0


def test_checkpoint_and_best_model_test(tiny_cfg, tmp_path):
    # logger=none with the default callbacks: the learning-rate monitor, which needs a logger, is left out
    cfg = tiny_cfg("attention=localized", "debug=limit", "logger=none", "callbacks.rich_progress_bar=null")
    metrics = train(cfg)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2  # the best epoch (save_top_k=1) and the last
    # The test metrics are those of the best checkpoint, recomputed apart from Lightning.
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    test_docs = build(cfg)[0].splits["test"]
    expected = score_checkpoint(best, test_docs, "boundary")
    assert {k: metrics[f"test/{k}"] for k in ("f1", "pk", "windowdiff")} == pytest.approx(
        {k: expected[k] for k in ("f1", "pk", "windowdiff")}, abs=1e-6
    )
    # last.ckpt is the last epoch whether or not val/f1 improved in it (resume must not go back)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == cfg.trainer.max_epochs - 1


def test_the_tested_checkpoint_does_not_depend_on_the_callback_order(tmp_path):
    """train.py tests the monitored checkpoint's best, wherever conf/callbacks lists it
    (Lightning's trainer.checkpoint_callback is the first ModelCheckpoint listed)."""
    best = ModelCheckpoint(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor="val/f1", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    for order in ([best, last], [last, best]):
        trainer = Trainer(callbacks=order, logger=False, enable_progress_bar=False, enable_model_summary=False)
        assert monitored_checkpoint(trainer) is best
    assert trainer.checkpoint_callback is last  # what the order alone would have picked


def test_main_command_writes_val_f1_to_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "scripts/train.py",
        "attention=localized",
        "trainer.max_epochs=2",
        "debug=limit",
        "trainer.log_every_n_steps=1",
        "callbacks.rich_progress_bar=null",
        *TINY_DATA,
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = list(run_dir.glob("tensorboard/**/events.out.tfevents.*"))
    assert events, f"no TensorBoard events under {run_dir}"
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"val/f1", "val/loss", "train/loss", "test/f1"} <= tags
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert list((run_dir / "checkpoints").glob("*.ckpt"))


def test_section_labels_train_end_to_end(tmp_path, songs_jsonl):
    """data=jsonl with section labels (verse/chorus), as the README shows it: macro F1 and
    one F1 per label name are logged as metric objects, through validation and test."""
    cfg = compose_train(
        tmp_path,
        [
            "data=jsonl",
            f"data.corpus.path={songs_jsonl}",
            "debug=limit",
            "logger=none",
            "callbacks.lr_monitor=null",
            "callbacks.rich_progress_bar=null",
        ],
    )
    metrics = train(cfg)
    for stage in ("val", "test"):
        assert {f"{stage}/f1", f"{stage}/f1_verse", f"{stage}/f1_chorus", f"{stage}/pk"} <= set(metrics)
    # test/ is the best checkpoint's macro F1, F1 per label and Pk, recomputed apart from Lightning
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    # trained on the songs' lines: a song given as plain text is split by lines unless told otherwise
    assert Segmenter.from_checkpoint(best).units == "lines"
    expected = score_checkpoint(best, build(cfg)[0].splits["test"], "section")
    for k in ("f1", "f1_verse", "f1_chorus", "pk"):
        assert metrics[f"test/{k}"] == pytest.approx(expected[k], abs=1e-6), k
    # macro F1 is the mean of the per-class scores it shares its counts with
    assert metrics["test/f1"] == pytest.approx((metrics["test/f1_verse"] + metrics["test/f1_chorus"]) / 2, abs=1e-6)


def _lyrics_fdr(tmp_path, files: dict[str, str]):
    overrides = [
        "experiment=lyrics",
        "debug=fdr",
        "logger=none",
        "callbacks.lr_monitor=null",
        "callbacks.rich_progress_bar=null",
        *(f"data.corpus.files.{k}={v}" for k, v in files.items()),
    ]
    cfg = compose_train(tmp_path, overrides)
    assert cfg.model.net.similarity._target_.endswith("SelfSimilarity") and cfg.model.net.crf is not None
    return train(cfg)


def test_lyrics_experiment_fast_dev_run_on_the_shared_songs(tmp_path, shared_data):
    """experiment=lyrics debug=fdr as a user runs it: the real songs, the self-similarity
    view and the CRF, one batch of each stage."""
    metrics = _lyrics_fdr(tmp_path, {})
    assert {"val/f1", "val/f1_chorus", "val/f1_verse", "test/f1", "train/crf_loss"} <= set(metrics)


def test_lyrics_experiment_fast_dev_run_on_synthetic_songs(tmp_path, songs_jsonl):
    """The same experiment on songs made here, so the suite covers it without ../shared."""
    metrics = _lyrics_fdr(tmp_path, {split: str(songs_jsonl) for split in ("train", "val", "test")})
    assert {"val/f1", "val/f1_chorus", "test/f1"} <= set(metrics) and all(v == v for v in metrics.values())


def _mixture_cfg(tmp_path, *overrides):
    """The tiny corpus twice, as corpora "a" and "b" of a MixedCorpus (two seeds: other documents)."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose_train(
        tmp_path,
        [
            *TINY_DATA,
            "attention=localized",
            "debug=limit",
            "logger=none",
            "callbacks.rich_progress_bar=null",
            *overrides,
        ],
    )
    one = OmegaConf.to_container(cfg.data.corpus)
    with open_dict(cfg):
        cfg.data.corpus = {
            "_target_": "segmenter.data.mixture.MixedCorpus",
            "corpora": {"a": one, "b": {**one, "seed": 1}},
        }
    return cfg


def test_each_corpus_of_a_mixture_is_logged_apart(tmp_path):
    """A mixture of two corpora: val/<name>/... and test/<name>/... besides the overall
    metrics, each equal to the tested checkpoint's scores on that corpus's documents alone."""
    cfg = _mixture_cfg(tmp_path)
    metrics = train(cfg)
    assert {"val/a/pk", "val/b/f1", "test/a/windowdiff", "test/b/boundary_recall"} <= set(metrics)
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    test_docs = build(cfg)[0].splits["test"]
    for name in ("a", "b"):
        docs = [d for d in test_docs if d.meta["subset"] == name]
        assert len(docs) == 4
        expected = score_checkpoint(best, docs, "boundary")
        assert {k: metrics[f"test/{name}/{k}"] for k in ("f1", "pk", "windowdiff")} == pytest.approx(
            {k: expected[k] for k in ("f1", "pk", "windowdiff")}, abs=1e-6
        )
    assert metrics["test/a/pk"] != pytest.approx(metrics["test/b/pk"])  # two corpora, two scores


def test_the_best_checkpoint_can_be_chosen_on_one_corpus_of_a_mixture(tmp_path):
    """callbacks.model_checkpoint.monitor=val/<name>/pk (docs/pretrained.md): the checkpoint
    kept is scored on that corpus's validation documents alone, and it is the one tested."""
    cfg = _mixture_cfg(
        tmp_path,
        "callbacks.model_checkpoint.monitor=val/a/pk",
        "callbacks.model_checkpoint.mode=min",
        "trainer.limit_val_batches=1.0",
    )
    train(cfg)
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    states = torch.load(best, map_location="cpu", weights_only=True)["callbacks"]
    (state,) = [
        v for k, v in states.items() if k.startswith("ModelCheckpoint") and v["monitor"]
    ]  # last.ckpt's has none
    assert state["monitor"] == "val/a/pk" and Path(state["best_model_path"]) == best
    val_a = [d for d in build(cfg)[0].splits["val"] if d.meta["subset"] == "a"]
    assert float(state["best_model_score"]) == pytest.approx(score_checkpoint(best, val_a, "boundary")["pk"], abs=1e-6)

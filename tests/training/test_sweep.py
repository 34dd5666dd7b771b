"""Sweeps: the summary table of a multirun (a failed job included), the launcher and
hyperparameter-search configs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from segmenter.training.sweep import collect, job_record, markdown, root_cause_line, write_summary
from segmenter.training.train import save_metrics
from tests.helpers import ROOT, TINY_DATA, compose_train

FAST = [*TINY_DATA, "debug=limit", "model.net.dim=32", "model.net.num_layers=2", "callbacks.rich_progress_bar=null"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def sweep(tmp_path: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "scripts/train.py",
        "-m",
        *FAST,
        *overrides,
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)


def fake_job(sweep_dir: Path, num: int, attention: str, metrics: dict | None, error: Exception | None = None) -> None:
    out = sweep_dir / f"{num}_{attention}"
    out.mkdir(parents=True)
    if metrics is not None:
        save_metrics(out / "metrics.json", metrics)
    ret = JobReturn(status=JobStatus.FAILED if error else JobStatus.COMPLETED, _return_value=error or 0.5)
    record = job_record(out, ret, num=num, attention=attention, overrides=[f"attention={attention}"])
    (out / "job.json").write_text(json.dumps(record))


def test_summary_table_from_job_records(tmp_path):
    fake_job(
        tmp_path, 1, "localized", {"val/f1_best": 0.5, "test/f1": 0.25, "model/params": 1234567.0, "time/fit_s": 9.87}
    )
    try:
        raise RuntimeError("wrapped") from ValueError("window_size=4 must be a positive odd number\nmore")
    except RuntimeError as e:
        fake_job(tmp_path, 0, "self", None, error=e)
    records = collect(tmp_path)
    assert [r["job"] for r in records] == ["0_self", "1_localized"]
    table = markdown(records).splitlines()
    assert table[0].startswith("| job | attention | status | overrides (varying) | params | train time (s) |")
    assert "| failed: ValueError: window_size=4 must be a positive odd number |" in table[2]
    assert "| 1,234,567 | 9.9 | - | 0.5000 | 0.2500 | - | - |" in table[3]  # no throughput, Pk, WD: "-"
    path, _ = write_summary(tmp_path)
    assert path.read_text().startswith("# Sweep summary: 2 jobs, 1 completed, 1 failed")
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert rows[1]["test/f1"] == "0.25" and rows[0]["status"] == "failed" and rows[0]["test/f1"] == ""


def test_root_cause_line_unwraps_hydra_errors():
    try:
        try:
            raise ValueError("bad value 3\nsecond line")
        except ValueError as inner:
            raise RuntimeError("Error in call to target 'x':") from inner
    except RuntimeError as e:
        assert root_cause_line(e) == "ValueError: bad value 3"


def test_failed_job_does_not_stop_the_sweep_and_shows_in_the_summary(tmp_path):
    # Job 0 fails while building its model; job 1 must still run.
    proc = sweep(
        tmp_path,
        "attention=localized",
        "attention.window_size=4,3",
        "logger=none",
        "callbacks.lr_monitor=null",
        "callbacks.attention_heatmap=null",
    )
    assert proc.returncode != 0  # the sweep reports the failure after running every job
    sweep_dir = tmp_path / "sweep"
    summary = (sweep_dir / "summary.md").read_text()
    assert "2 jobs, 1 completed, 1 failed" in summary, summary
    lines = summary.splitlines()
    failed = next(line for line in lines if line.startswith("| 0_localized"))
    assert "failed: ValueError: window_size=4 must be a positive odd number" in failed
    done = next(line for line in lines if line.startswith("| 1_localized"))
    assert "| completed | attention.window_size=3 |" in done  # overrides all jobs share are left out
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    ok = rows[1]
    job = json.loads((sweep_dir / "1_localized" / "metrics.json").read_text())  # what the job itself recorded
    assert (
        ok["status"] == "completed"
        and float(ok["test/f1"]) == job["test/f1"]
        and float(ok["val/f1_best"]) == job["val/f1_best"]
    )
    assert float(ok["model/params"]) > 0 and float(ok["train/units_per_sec"]) > 0 and float(ok["time/fit_s"]) > 0
    assert "sweep summary so far" in proc.stderr + proc.stdout  # printed as it goes


@pytest.mark.slow
def test_three_attention_sweep_in_parallel_prints_the_summary(tmp_path):
    proc = sweep(
        tmp_path, "attention=self,localized,boundary_aware", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sweep summary" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert [r["attention"] for r in rows] == ["self", "localized", "boundary_aware"]
    assert all(r["status"] == "completed" and r["test/f1"] for r in rows)


@pytest.mark.slow
def test_optuna_search_runs_a_few_trials(tmp_path):
    proc = sweep(
        tmp_path,
        "hparams_search=optuna_localized",
        "hydra.sweeper.n_trials=2",
        "logger=none",
        "callbacks.lr_monitor=null",
        "callbacks.attention_heatmap=null",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert 0 <= best.best_value <= 1 and "attention.window_size" in best.best_params
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert len(rows) == 2 and {r["attention"] for r in rows} == {"localized"}
    assert max(float(r["val/f1_best"]) for r in rows) == pytest.approx(best.best_value)


@pytest.mark.parametrize("search", ["optuna", "optuna_localized", "optuna_boundary_aware"])
def test_hparams_search_configs_compose(tmp_path, search):
    cfg = compose_train(tmp_path, [f"hparams_search={search}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/f1_best" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert {"model.optimizer.lr", "model.net.dim", "model.net.num_layers", "model.net.dropout"} <= set(sweeper.params)
    extra = {
        "optuna": set(),
        "optuna_localized": {"attention.window_size"},
        "optuna_boundary_aware": {"model.aux_loss_weight", "attention.temperature"},
    }[search]
    assert extra <= set(sweeper.params)
    if extra:
        assert cfg.attention._target_.endswith(("LocalizedAttention", "BoundaryAwareAttention"))
        for key in extra:  # each searched key exists in the composed config
            assert OmegaConf.select(cfg, key) is not None, key


def test_launcher_configs_compose(tmp_path):
    joblib = compose_train(tmp_path, ["hydra/launcher=parallel"]).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2
    slurm_cfg = compose_train(tmp_path, ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"])
    slurm = slurm_cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.tasks_per_node == 4 and slurm.nodes == 1 and slurm.timeout_min > 0

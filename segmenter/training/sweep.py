"""Sweep summary: one table of every job of a Hydra multirun (markdown + CSV in the
sweep folder, printed at the end).

Each training run writes ``metrics.json`` into its run folder (segmenter/training/train.py).
The :class:`SweepSummary` Hydra callback, registered in conf/hydra/default.yaml, adds
``job.json`` next to it after every job -- status, the error of a failed job, the
attention type and the job's overrides -- and rebuilds ``summary.md`` / ``summary.csv``
from all ``job.json`` files of the sweep. Rebuilding after every job (not only at the
end) matters: Hydra's sweepers run every job of a batch even when one fails, but then
raise the first failure and skip ``on_multirun_end``; the summary is complete anyway.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from segmenter.core.io import atomic_write

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
JOB_FILE = "job.json"
# (header, metrics.json key, format); a metric a run does not have shows as "-".
COLUMNS = (
    ("params", "model/params", "{:,.0f}"),
    ("train time (s)", "time/fit_s", "{:.1f}"),
    ("units/s", "train/units_per_sec", "{:.0f}"),
    ("best val F1", "val/f1_best", "{:.4f}"),
    ("test F1", "test/f1", "{:.4f}"),
    ("test Pk", "test/pk", "{:.4f}"),
    ("test WindowDiff", "test/windowdiff", "{:.4f}"),
)
HEADER = ("job", "attention", "status", "overrides (varying)", *(c[0] for c in COLUMNS))


def root_cause_line(error: BaseException) -> str:
    """``Type: first line`` of the innermost cause (Hydra wraps errors raised while
    instantiating a config, whose own first line names only the target)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()


def job_record(
    output_dir: Path, job_return: JobReturn, *, num: int, attention: str | None, overrides: list[str]
) -> dict:
    """One row of the summary: the job's identity and status plus its metrics.json."""
    failed = job_return.status == JobStatus.FAILED
    error = job_return._return_value if failed else None  # .return_value would raise it
    metrics_file = output_dir / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() and not failed else {}
    return {
        "num": num,
        "job": output_dir.name,
        "attention": attention,
        "overrides": overrides,
        "status": "failed" if failed else "completed",
        "error": root_cause_line(error) if isinstance(error, BaseException) else None,
        "metrics": metrics,
    }


def collect(sweep_dir: Path) -> list[dict]:
    """Every job.json under the sweep folder, in job order."""
    records = [json.loads(p.read_text()) for p in Path(sweep_dir).glob(f"**/{JOB_FILE}")]
    return sorted(records, key=lambda r: (r.get("num", 0), r.get("job", "")))


def rows(records: list[dict]) -> list[list[str]]:
    """Table cells; the overrides column keeps only what differs between jobs."""
    shared = set.intersection(*(set(r.get("overrides") or []) for r in records)) if len(records) > 1 else set()
    out = []
    for r in records:
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error']}"
        metrics = r.get("metrics") or {}
        cells = [fmt.format(metrics[key]) if metrics.get(key) is not None else "-" for _, key, fmt in COLUMNS]
        varying = [o for o in r.get("overrides") or [] if o not in shared]
        out.append([r["job"], r.get("attention") or "-", status, " ".join(varying) or "-", *cells])
    return out


def markdown(records: list[dict]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows(records)]
    return "\n".join(lines) + "\n"


def csv_text(records: list[dict]) -> str:
    """Machine-readable twin of the markdown table: raw numbers, empty when missing."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["job", "attention", "status", "error", "overrides", *(key for _, key, _ in COLUMNS)])
    for r in records:
        m = r.get("metrics") or {}
        writer.writerow(
            [
                r["job"],
                r.get("attention") or "",
                r["status"],
                r.get("error") or "",
                " ".join(r.get("overrides") or []),
                *("" if m.get(key) is None else m[key] for _, key, _ in COLUMNS),
            ]
        )
    return buf.getvalue()


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """Serialize summary rebuilds of concurrent jobs (joblib); best effort where the
    file system has no locks (some cluster file systems)."""
    try:
        import fcntl

        f = open(sweep_dir / ".summary.lock", "w")
    except (ImportError, OSError):
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def write_summary(sweep_dir: Path) -> tuple[Path, str]:
    """Rebuild summary.md and summary.csv from the sweep's job.json files."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _locked(sweep_dir):
        records = collect(sweep_dir)
        table = markdown(records)
        failed = sum(r["status"] == "failed" for r in records)
        title = f"# Sweep summary: {len(records)} jobs, {len(records) - failed} completed, {failed} failed\n\n"
        atomic_write(sweep_dir / "summary.md", title + table)
        atomic_write(sweep_dir / "summary.csv", csv_text(records))
    return sweep_dir / "summary.md", table


class SweepSummary(Callback):
    """Hydra callback: after each job of a multirun, record it and rebuild the sweep's
    summary; at the end of the multirun, print the summary."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        output_dir = Path(hydra_cfg.runtime.output_dir)
        record = job_record(
            output_dir,
            job_return,
            num=int(hydra_cfg.job.num),
            attention=hydra_cfg.runtime.choices.get("attention"),
            overrides=list(hydra_cfg.overrides.task),
        )
        atomic_write(output_dir / JOB_FILE, json.dumps(record, indent=2) + "\n")
        # The sweep folder is the job folder minus its subdir (sweep.dir itself may
        # hold ${now:...}, which a launcher's worker process would resolve afresh).
        sweep_dir = output_dir.parents[len(Path(str(hydra_cfg.sweep.subdir)).parts) - 1]
        path, table = write_summary(sweep_dir)
        if record["error"]:
            log.error("job %s failed: %s", record["job"], record["error"])
        log.info("sweep summary so far (%s):\n%s", path, table)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path, table = write_summary(Path(config.hydra.sweep.dir))
        print(f"\nSweep summary ({path}, CSV next to it):\n\n{table}")

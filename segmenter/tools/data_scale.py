"""Training data at scale: what preparing and feeding a Wiki-727K-sized corpus costs.

For each corpus size (articles), a synthetic corpus in Wiki-727K's format is generated once
(segmenter.data.synthetic_wiki, cached under ``corpus_dir``), then, each in a fresh process:

- **preparation**: the DataModule of the training config (``train_overrides`` plus the
  corpus) is instantiated and runs ``prepare_data()`` and ``setup("fit")``, timed inside
  that process, on an empty cache folder (``paths.cache_dir``): the first run's cost;
- **training**, once per ``num_workers`` value: ``scripts/train.py`` with the same
  overrides, a few batches, ``OMP_NUM_THREADS=threads``, the same cache folder (now
  prepared). A callback (``TrainingProbe``) records the time of the first training step,
  the units per second of the training loop with its data loading (between the ends of
  consecutive batches, the first batch of an epoch left out), and the process's peak
  resident set (``VmHWM``); the project's own ``UnitThroughput`` gives the units per
  second of the steps alone (``train/units_per_sec`` in the run's metrics.json); the parent
  polls the memory of the process with its DataLoader workers (``run_child``, psutil).

Shards: the size of the cache folder after the runs (``none`` where the pipeline wrote
nothing there). The table (one column per size) and a JSON record go to ``output_dir``.

    python scripts/bench_data.py                                   # 10,000 / 100,000 / 727,746 articles
    python scripts/bench_data.py sizes=[2000,10000] num_workers=[0]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segmenter.cli.app import root_dir
from segmenter.cli.config import ConfigError
from segmenter.core.io import atomic_write
from segmenter.data.synthetic_wiki import pool_digest, source_pool, write_corpus

log = logging.getLogger(__name__)

PROBE_FILE = "probe.json"  # what TrainingProbe writes in a run folder
PREPARE_FILE = "prepare.json"  # what prepare_in_this_process writes
MIN_ARTICLES = 10  # train/val/test all non-empty at the wiki config's 0.8/0.1/0.1 split
RESULTS = "bench_data"  # <output_dir>/bench_data.md and .json


# ----------------------------------------------------------------------------- in the benchmark's process


def hydra_value(value: str | os.PathLike) -> str:
    """A path as a Hydra override value, quoted (spaces, '=' and the like stay literal)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (0 where it does not exist)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed while walking (a temporary file)
                pass
    return total


def run_child(cmd: list[str], *, env: dict[str, str], log_path: Path, poll_s: float, timeout_s: float | None) -> float:
    """Run ``cmd`` (output to ``log_path``), polling its memory with its descendants' (the
    DataLoader's workers): its resident set plus their unique set (USS, the pages a worker
    does not share: forked workers share most of theirs with the training process, which a
    sum of resident sets would count once per process); returns the peak in MB. A failure
    raises RuntimeError with the end of the log."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    start = time.monotonic()
    with open(log_path, "wb") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(child.pid)
        try:
            while child.poll() is None:
                total = 0
                try:
                    total += proc.memory_info().rss
                    workers = proc.children(recursive=True)
                except psutil.NoSuchProcess:  # it has just ended
                    break
                for p in workers:
                    try:
                        total += p.memory_full_info().uss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak = max(peak, total)
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"{' '.join(cmd[:3])} ... ran past timeout_s={timeout_s}")
                time.sleep(poll_s)
        finally:
            if child.poll() is None:
                for p in proc.children(recursive=True):
                    p.kill()
                child.kill()
                child.wait()
    if child.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"exit status {child.returncode} of {' '.join(cmd)}\n(log: {log_path})\n{tail}")
    return peak / 2**20


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("SEGMENTER_ROOT", str(root_dir()))
    return env


def measure_preparation(
    *, overrides: list[str], out_dir: Path, env: dict[str, str], poll_s: float, timeout_s: float | None
) -> dict[str, float]:
    shutil.rmtree(out_dir, ignore_errors=True)  # ours: a fresh folder each time
    result = out_dir / PREPARE_FILE
    code = "import sys, json; from segmenter.tools.data_probe import prepare_in_this_process as p; p(json.loads(sys.argv[1]), path=sys.argv[2])"
    overrides = [*overrides, f"paths.output_dir={hydra_value(out_dir)}"]  # the split file goes there
    cmd = [sys.executable, "-c", code, json.dumps(overrides), str(result)]
    peak = run_child(cmd, env=env, log_path=out_dir.with_suffix(".log"), poll_s=poll_s, timeout_s=timeout_s)
    return {**json.loads(result.read_text(encoding="utf-8")), "prepare_with_workers_peak_mb": peak}


def measure_training(
    *, overrides: list[str], run_dir: Path, env: dict[str, str], poll_s: float, timeout_s: float | None
) -> dict[str, float | None]:
    shutil.rmtree(run_dir, ignore_errors=True)  # ours: a fresh run folder each time
    probe = run_dir / PROBE_FILE
    cmd = [
        sys.executable,
        "-c",
        "from segmenter.cli.commands import train; train()",  # segmenter-train, wherever segmenter is installed
        *overrides,
        f"hydra.run.dir={hydra_value(run_dir)}",
        "+callbacks.data_probe._target_=segmenter.tools.data_probe.TrainingProbe",
        f"+callbacks.data_probe.path={hydra_value(probe)}",
    ]
    launched = time.time()
    tree_peak = run_child(cmd, env=env, log_path=run_dir.with_suffix(".log"), poll_s=poll_s, timeout_s=timeout_s)
    found = json.loads(probe.read_text(encoding="utf-8"))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    first = found["first_step_unix"]
    return {
        "first_step_s": None if first is None else first - launched,
        "peak_rss_mb": found["peak_rss_mb"],
        "with_workers_peak_mb": tree_peak,
        "units_per_s": found["loop_units"] / found["loop_seconds"] if found["loop_seconds"] > 0 else None,
        "step_units_per_s": metrics.get("train/units_per_sec"),
    }


def commit() -> str | None:
    """``git describe --always --dirty`` of the repository (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root_dir()), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


# ----------------------------------------------------------------------------- the table


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table_rows(results: list[dict[str, Any]], workers: Sequence[int]) -> list[tuple[str, list[str]]]:
    """(measure, one cell per size) for the table; ``results`` sorted by size."""
    rows = [
        ("sentences", [_num(r["sentences"]) for r in results]),
        ("corpus on disk (MB)", [_num(r["corpus_mb"], 1) for r in results]),
        ("generation (s, first run)", [_num(r["generate_s"], 1) for r in results]),
        ("preparation (s, first run)", [_num(r["prepare_s"], 1) for r in results]),
        ("preparation peak RSS (MB)", [_num(r["prepare_peak_rss_mb"]) for r in results]),
        ("shards on disk (MB)", [_num(r["shards_mb"], 1) if r["shards_mb"] else "none" for r in results]),
    ]
    for w in workers:
        runs = [r["runs"][str(w)] for r in results]
        rows += [
            (f"num_workers={w}: time to first step (s)", [_num(x["first_step_s"], 1) for x in runs]),
            (f"num_workers={w}: peak RSS, training process (MB)", [_num(x["peak_rss_mb"]) for x in runs]),
            (f"num_workers={w}: peak RSS + workers' USS (MB)", [_num(x["with_workers_peak_mb"]) for x in runs]),
            (f"num_workers={w}: units/s, loop with loading", [_num(x["units_per_s"]) for x in runs]),
            (f"num_workers={w}: units/s, steps (UnitThroughput)", [_num(x["step_units_per_s"]) for x in runs]),
        ]
    first = str(workers[0])
    per_article = ["n/a"]
    for prev, cur in zip(results, results[1:]):
        grown = cur["runs"][first]["peak_rss_mb"] - prev["runs"][first]["peak_rss_mb"]
        per_article.append(_num(grown * 1024 / (cur["articles"] - prev["articles"]), 1))
    rows.append((f"RSS per added article (KB, num_workers={first}, vs the previous size)", per_article))
    return rows


def markdown(results: list[dict[str, Any]], workers: Sequence[int]) -> str:
    head = "| articles | " + " | ".join(_num(r["articles"]) for r in results) + " |"
    rule = "|---|" + "---:|" * len(results)
    body = [f"| {name} | " + " | ".join(cells) + " |" for name, cells in table_rows(results, workers)]
    return "\n".join([head, rule, *body])


# ----------------------------------------------------------------------------- the run


def check_settings(cfg: Any) -> tuple[list[int], list[int]]:
    sizes = [int(s) for s in cfg.sizes]
    workers = [int(w) for w in cfg.num_workers]
    if not sizes or min(sizes) < MIN_ARTICLES:
        raise ConfigError(f"sizes={sizes}: expected a list of article counts, each >= {MIN_ARTICLES}")
    if not workers or min(workers) < 0:
        raise ConfigError(f"num_workers={workers}: expected a list of DataLoader worker counts, each >= 0")
    if cfg.poll_s <= 0:
        raise ConfigError(f"poll_s={cfg.poll_s}: expected a number of seconds > 0")
    return sorted(set(sizes)), list(dict.fromkeys(workers))


def run(cfg: Any) -> str:
    """Measure every size; write the table and the JSON record to ``output_dir``; return the table."""
    sizes, workers = check_settings(cfg)
    out = Path(cfg.output_dir)
    env = child_env(cfg.threads)
    pool_name, pool = source_pool(cfg.pool)
    # One folder per pool and seed: another pool's corpus is never resumed by mistake.
    label = f"{Path(pool_name).name}-{pool_digest(pool)[:8]}-seed{cfg.seed}"
    results = []
    for size in sizes:
        corpus = Path(cfg.corpus_dir, label, str(size))
        log.info("%d articles: generating (or reusing) %s", size, corpus)
        stats = write_corpus(root=corpus, num_articles=size, pool=pool, pool_name=pool_name, seed=cfg.seed)
        cache = out / "cache" / str(size)
        shutil.rmtree(cache, ignore_errors=True)  # ours: the first run starts on an empty cache
        overrides = [
            *cfg.train_overrides,
            f"data.corpus.path={hydra_value(corpus)}",
            f"paths.cache_dir={hydra_value(cache)}",
        ]
        timing = dict(env=env, poll_s=cfg.poll_s, timeout_s=cfg.timeout_s)
        log.info("%d articles: preparing the data", size)
        prepared = measure_preparation(overrides=overrides, out_dir=out / "runs" / f"{size}-prepare", **timing)
        runs = {}
        for w in workers:
            log.info("%d articles: training with num_workers=%d", size, w)
            run_dir = out / "runs" / f"{size}-w{w}"
            runs[str(w)] = measure_training(overrides=[*overrides, f"data.num_workers={w}"], run_dir=run_dir, **timing)
        result = {
            "articles": size,
            "sentences": stats["sentences"],
            "sections": stats["sections"],
            "corpus_mb": stats["bytes"] / 2**20,
            "generate_s": stats["generate_s"],
            "corpus": str(corpus),
            **prepared,
            "shards_mb": folder_bytes(cache) / 2**20,
            "runs": runs,
        }
        log.info("%d articles: %s", size, json.dumps(result))
        results.append(result)
    md = markdown(results, workers)
    record = {
        "commit": commit(),
        "pool": pool_name,
        "seed": int(cfg.seed),
        "threads": cfg.threads,
        "train_overrides": list(cfg.train_overrides),
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{RESULTS}.md", md + "\n")
    atomic_write(out / f"{RESULTS}.json", json.dumps(record, indent=2) + "\n")
    log.info("written: %s and %s", out / f"{RESULTS}.md", out / f"{RESULTS}.json")
    return md

"""Resident memory of a long-lived process that segments ever new text.

A warm-up of ``warmup`` documents first (the model loaded, every lazy buffer built), then
``docs`` more, each unique (random words), through the Python API (``Segmenter.segment``)
and through the HTTP server (``create_app`` under FastAPI's TestClient: the batcher, its
threads and the JSON path). Growth is the resident set (``VmRSS``) after the last
document minus after the warm-up. Each path runs in a fresh interpreter, so one cannot
hide or inflate the other's memory.

    python scripts/bench_memory.py                       # the shipped lyrics model, 20 + 200 documents of 500 lines
    python scripts/bench_memory.py pretrained=topic units=sentences lines=40
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

PATHS = ("api", "server")


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this measurement needs Linux)")


def unique_documents(*, count: int, lines: int, seed: int) -> list[list[str]]:
    """``count`` documents of ``lines`` lines of random words: no line repeats across them,
    so nothing a model keeps per unit can be reused."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(20_000)]
    return [[" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(lines)] for _ in range(count)]


def measure_in_this_process(
    *, path: str, pretrained: str, units: str, warmup: int, docs: int, lines: int, seed: int
) -> dict[str, float]:
    from segmenter.inference.api import Segmenter

    seg = Segmenter.from_pretrained(pretrained)
    texts = unique_documents(count=warmup + docs, lines=lines, seed=seed)
    if path == "server":  # the warm-up goes through the server too, inside one app's lifetime
        from fastapi.testclient import TestClient

        from segmenter.serve import Limits, create_app

        app = create_app(seg, limits=Limits(max_units_per_doc=lines, max_body_bytes=10_000_000), default_units=units)
        with TestClient(app) as client:
            for i, doc in enumerate(texts):
                if i == warmup:
                    before = resident_mb()
                r = client.post("/segment", json={"lines": doc})
                if r.status_code != 200:
                    raise RuntimeError(f"the server answered {r.status_code}: {r.text[:200]}")
            after = resident_mb()
    else:
        join = "\n" if units == "lines" else " "
        for i, doc in enumerate(texts):
            if i == warmup:
                before = resident_mb()
            seg.segment(join.join(doc), units=units)
        after = resident_mb()
    return {"rss_after_warmup_mb": before, "rss_after_mb": after, "growth_mb": after - before}


def measure(
    *,
    path: str,
    pretrained: str = "lyrics",
    units: str = "lines",
    warmup: int = 20,
    docs: int = 200,
    lines: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """``measure_in_this_process`` in a fresh interpreter (one path's memory only)."""
    if path not in PATHS:
        raise ValueError(f"path={path!r} is not one of {PATHS}")
    if warmup < 1 or docs < 1 or lines < 1:
        raise ValueError(f"warmup={warmup}, docs={docs} and lines={lines} must each be >= 1")
    settings = dict(path=path, pretrained=pretrained, units=units, warmup=warmup, docs=docs, lines=lines, seed=seed)
    code = f"import json; from segmenter.tools.memory import measure_in_this_process as m; print(json.dumps(m(**{settings!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the {path} measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cfg: Any) -> dict[str, dict[str, float]]:
    results = {}
    for path in cfg.paths:
        results[path] = measure(
            path=path,
            pretrained=cfg.pretrained,
            units=cfg.units,
            warmup=cfg.warmup,
            docs=cfg.docs,
            lines=cfg.lines,
            seed=cfg.seed,
        )
        log.info(
            "%s: %.1f MB resident after %d warm-up documents, %+.1f MB after %d more unique %d-line documents",
            path,
            results[path]["rss_after_warmup_mb"],
            cfg.warmup,
            results[path]["growth_mb"],
            cfg.docs,
            cfg.lines,
        )
    return results

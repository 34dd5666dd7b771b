"""Evaluate a checkpoint next to baselines: python scripts/evaluate.py ckpt_path=... data=choi"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluate import evaluate  # after Hydra has set up logging

    evaluate(cfg)


if __name__ == "__main__":
    main()

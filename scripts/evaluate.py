"""Evaluate a checkpoint next to baselines: python scripts/evaluate.py ckpt_path=... data=choi"""

import os
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))

import segmenter.cli  # noqa: E402  (after SEGMENTER_ROOT: the configs read it)


@segmenter.cli.main(config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluate import evaluate  # after Hydra has set up logging

    evaluate(cfg)


if __name__ == "__main__":
    main()

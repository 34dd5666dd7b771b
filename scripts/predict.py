"""Segment text with a trained checkpoint (options: conf/predict.yaml):

    python scripts/predict.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt input=doc.txt
    cat doc.txt | python scripts/predict.py ckpt_path=... input=- units=lines
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from segmenter.predict import run  # after Hydra has set up logging

    status = run(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()

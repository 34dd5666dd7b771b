"""Segment text with a trained checkpoint (options: conf/predict.yaml):

    python scripts/predict.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt input=doc.txt
    cat doc.txt | python scripts/predict.py ckpt_path=... input=- units=lines
"""

import os
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))

import segmenter.cli  # noqa: E402  (after SEGMENTER_ROOT: the configs read it)


@segmenter.cli.main(config_name="predict")
def main(cfg: DictConfig) -> None:
    from segmenter.predict import run  # after Hydra has set up logging

    run(cfg)


if __name__ == "__main__":
    main()

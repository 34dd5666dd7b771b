"""Train a segmentation model: python scripts/train.py attention=localized trainer.max_epochs=2"""

import os
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))

import segmenter.cli  # noqa: E402  (after SEGMENTER_ROOT: the configs read it)


@segmenter.cli.main(config_name="train")
def main(cfg: DictConfig) -> float | None:
    from segmenter.train import train  # after Hydra has set up logging

    metrics = train(cfg)
    # Returned to sweepers (e.g. Optuna) as the value to optimize.
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

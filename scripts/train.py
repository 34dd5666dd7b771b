"""Train a segmentation model: python scripts/train.py attention=localized trainer.max_epochs=2"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="train")
def main(cfg: DictConfig) -> float | None:
    from segmenter.training.train import train  # after Hydra has set up logging

    metrics = train(cfg)
    # Returned to sweepers (e.g. Optuna) as the value to optimize.
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

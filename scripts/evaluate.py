"""Evaluate a checkpoint next to baselines: python scripts/evaluate.py ckpt_path=... data=choi"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluation.evaluate import evaluate  # after Hydra has set up logging

    evaluate(cfg)


if __name__ == "__main__":
    main()

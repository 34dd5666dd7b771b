"""Segment text with a trained checkpoint (options: conf/predict.yaml):

python scripts/predict.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt input=doc.txt
cat doc.txt | python scripts/predict.py ckpt_path=... input=- units=lines
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="predict")
def main(cfg: DictConfig) -> None:
    from segmenter.inference.predict import run  # after Hydra has set up logging

    run(cfg)


if __name__ == "__main__":
    main()

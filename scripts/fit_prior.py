"""Fit a segment-length prior for a checkpoint's decisions on validation documents (options:
segmenter/conf/fit_prior.yaml, docs/predict.md#a-segment-length-prior):

python scripts/fit_prior.py ckpt_path=outputs/runs/<run>/checkpoints/<best>.ckpt
python scripts/fit_prior.py ckpt_path=segmenter/pretrained/topic.ckpt data=wiki data.corpus.join_sections=2
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="fit_prior")
def main(cfg: DictConfig) -> None:
    from segmenter.inference.prior import run  # after Hydra has set up logging

    run(cfg)


if __name__ == "__main__":
    main()

"""Export a checkpoint's network to ONNX for the ONNX backend (options: segmenter/conf/export.yaml,
docs/predict.md#onnx-backend):

python scripts/export.py pretrained=topic output=topic.onnx
python scripts/export.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt output=model.onnx
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="export")
def main(cfg: DictConfig) -> None:
    from segmenter.inference.export import run  # after Hydra has set up logging

    run(cfg)


if __name__ == "__main__":
    main()

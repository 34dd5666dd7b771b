"""Serve a model over HTTP: the JSON API and a web page (options: conf/serve.yaml, docs/serving.md):

python scripts/serve.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt
python scripts/serve.py ckpt_path=... host=0.0.0.0 port=8080 units=lines
"""

import os
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))

import segmenter.cli  # noqa: E402  (after SEGMENTER_ROOT: the configs read it)


@segmenter.cli.main(config_name="serve")
def main(cfg: DictConfig) -> None:
    from segmenter.serve.run import run  # after Hydra has set up logging

    run(cfg)


if __name__ == "__main__":
    main()

"""Cold start of a shipped model: a fresh interpreter imports segmenter, loads the model and
segments one document, ``runs`` times; prints the median wall and CPU seconds (options:
conf/cold_start.yaml):

    python scripts/cold_start.py pretrained=topic
    python scripts/cold_start.py pretrained=lyrics units=lines
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="cold_start")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluation.benchmark import cold_start

    cold_start(cfg)


if __name__ == "__main__":
    main()

"""Compare segmenter with other chunkers: python scripts/compare_chunkers.py [max_docs=10 ...]

The semantic chunkers at their defaults and at thresholds tuned on validation documents.
Writes table.md and tuning.md into output_dir (outputs/compare_chunkers/) and prints the table.
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="compare_chunkers")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluation.chunkers import run  # after Hydra has set up logging

    print(run(cfg))


if __name__ == "__main__":
    main()

"""Resident memory growth while segmenting ever new text (options: conf/bench_memory.yaml):

python scripts/bench_memory.py
python scripts/bench_memory.py pretrained=topic units=sentences lines=40
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="bench_memory")
def main(cfg: DictConfig) -> None:
    from segmenter.tools.memory import run

    run(cfg)


if __name__ == "__main__":
    main()

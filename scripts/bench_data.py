"""Training data at scale: preparation, first step, memory and throughput per corpus size
(options: conf/bench_data.yaml, or --help):

python scripts/bench_data.py
python scripts/bench_data.py sizes=[2000,10000] num_workers=[0]
"""

from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="bench_data")
def main(cfg: DictConfig) -> None:
    from segmenter.tools.data_scale import run

    print(run(cfg))


if __name__ == "__main__":
    main()

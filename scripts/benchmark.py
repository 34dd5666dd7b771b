"""Benchmark the attention modules: python scripts/benchmark.py [lengths=[256,1024] repeats=3 ...]

Writes table.md, benchmark.png and results.json into the run folder
(outputs/benchmark/<date>_<time>_<id>/) and prints the table.
"""

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="benchmark")
def main(cfg: DictConfig) -> None:
    from segmenter.evaluation.benchmark import run_benchmark  # after Hydra has set up logging

    output_dir = HydraConfig.get().runtime.output_dir
    results = run_benchmark(cfg, output_dir=output_dir)
    print(results["table"])
    print(f"written to {output_dir}/ (table.md, benchmark.png, results.json)")


if __name__ == "__main__":
    main()

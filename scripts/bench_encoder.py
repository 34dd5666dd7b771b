"""Unit-encoding throughput of an encoder over every unit of a dataset, e.g.

    python scripts/bench_encoder.py encoder=minilm data=choi paths.cache_dir=/tmp/cold
    python scripts/bench_encoder.py encoder=minilm data=choi paths.cache_dir=/tmp/cold  # again: cached

The first run on an empty cache directory measures the cold pass (every unique unit
encoded by MiniLM); the second reads the cache written by the first. Prints one line
of JSON: units, unique units, units encoded, seconds, and sentences/s.
"""

import json
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import segmenter.cli


@segmenter.cli.main(config_name="bench_encoder")
def main(cfg: DictConfig) -> None:
    import torch  # here, not above: `--help` stays fast

    from segmenter.features import Featurizer

    datamodule = hydra.utils.instantiate(cfg.data)
    units = datamodule.all_units()
    start = time.perf_counter()
    encoder = hydra.utils.instantiate(cfg.encoder)
    featurizer = Featurizer.for_net(encoder)  # reads the on-disk cache, if any
    built = time.perf_counter()
    vectors = featurizer.feature("minilm_vectors")  # minilm and hybrid have one; hashed needs none
    cache = vectors.cache if vectors is not None else None
    with torch.no_grad():
        if vectors is not None:
            featurizer.warm(units)
        else:  # e.g. hashed: featurize and project everything once
            for i in range(0, len(units), 4096):
                chunk = units[i : i + 4096]
                encoder(featurizer.batch([chunk]), torch.ones(1, len(chunk), dtype=torch.bool))
    done = time.perf_counter()
    stats = dict(cache.stats) if cache is not None else {}
    result = {
        "encoder": cfg.encoder._target_.rsplit(".", 1)[-1],
        "data": HydraConfig.get().runtime.choices.get("data"),
        "units": len(units),
        "unique_units": len(set(units)),
        "units_encoded": stats["misses"] if cache is not None else len(units),
        "cache_entries_recomputed_as_corrupt": stats.get("corrupt", 0),
        "build_s": round(built - start, 2),  # includes reading the cache from disk
        "encode_s": round(done - built, 2),
        "units_per_s": round(len(units) / max(done - built, 1e-9), 1),  # all units, repeats included
        "encoded_units_per_s": round(stats["misses"] / stats["encode_seconds"], 1) if stats.get("misses") else None,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

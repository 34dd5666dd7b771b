"""Attention benchmark: time and peak memory against sequence length.

Every row is an attention module with its projections, built from the same Hydra
configs that training uses (every conf/attention/*.yaml: conf/benchmark.yaml's
``every_attention@rows``), plus two baselines defined here. For each row and
sequence length the benchmark measures, at batch 1:

- forward time (under ``torch.no_grad``) and forward+backward time (``y.sum()``
  back-propagated to the input and every parameter), each the median of ``repeats``
  runs after ``warmup`` untimed ones. Timing happens in this one process, with the
  rows interleaved run by run, so that load from other processes spreads evenly over
  the rows and the ratios between them hold on a shared machine;
- peak process memory of one forward+backward: each case runs in a fresh Python
  process that reads the kernel's high-water mark of its resident memory (``VmHWM``
  in /proc/self/status), so one case's peak can neither hide nor inflate another's,
  and a case that runs out of memory fails alone. (Not ``ru_maxrss``: across
  fork+exec Linux carries the parent's high-water mark into it.) "peak" is the
  whole process (Python, torch, inputs, module); "above baseline" subtracts the
  resident memory (``VmRSS``) it held just before the forward.

With ``device=cuda`` the same cases run on the GPU: times from CUDA events around each
run (the host does not wait on the kernels otherwise), and the peak is
``torch.cuda.max_memory_allocated`` over one forward+backward ("above baseline":
minus what was allocated before it), measured in this process (the allocator's
counters are per process; an out-of-memory case fails alone and its memory is freed).
``dtype=bf16`` or ``fp16`` runs every case under autocast with float32 weights, as
``trainer=gpu`` (``bf16-mixed``) trains. ``device=cpu dtype=fp32`` (the default)
measures exactly as before.

Results go to ``results.json``, ``table.md`` and ``benchmark.png`` in the output folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import platform
import pydoc
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pysbd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from segmenter.cli.config import attention_types
from segmenter.core.io import atomic_file, atomic_write
from segmenter.models.attention import AttentionOutput, MultiHeadAttention

log = logging.getLogger(__name__)

MB = 2**20
GB = 2**30
# Headroom for the address-space limit of a measured case: Python, torch and the
# thread pools reserve virtual memory they never touch.
ADDRESS_SPACE_SLACK = 4 * GB
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("cpu", "cuda")


# ----------------------------------------------------------------------------- baselines


class MaskedFullLocalized(MultiHeadAttention):
    """Localized attention the obvious way: a full (B, H, T, T) score matrix, masked to the band.

    Same outputs as ``LocalizedAttention`` (O(T * w)); here to show what the band saves.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int = 7, dropout: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"window_size={window_size} must be a positive odd number")
        self.radius = window_size // 2

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)
        t = x.shape[1]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, T)
        i = torch.arange(t, device=x.device)
        near = (i[:, None] - i[None, :]).abs() <= self.radius  # (T, T)
        keep = (near & mask[:, None, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)  # (B, 1, T, T)
        probs = torch.dropout(scores.masked_fill(~keep, float("-inf")).softmax(dim=-1), self._p, self.training)
        return AttentionOutput(self._merge(probs @ v), None)

    def estimated_bytes(self, *, length: int, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
        """Peak of a forward+backward: three live (B, H, T, T) float matrices at a time
        (scores, probabilities, their gradient) plus the boolean masks."""
        item = torch.empty((), dtype=dtype).element_size()
        return 3 * batch_size * self.num_heads * length**2 * item + 3 * batch_size * length**2


class LocalAttentionPackage(MultiHeadAttention):
    """lucidrains' ``local-attention`` (PyPI) on our projections, for exactly +-r neighbours.

    The package splits the sequence into buckets of ``window_size`` units that look one
    bucket back and one forward; with ``exact_windowsize`` it masks keys farther than
    ``window_size * look_backward`` units, so buckets of r units give exactly i-r..i+r.
    ``autopad`` handles lengths that are not a multiple of r. Rotary
    positions come from our ``_heads`` (as in every row), not from the package.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int = 7, dropout: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)
        if window_size < 3 or window_size % 2 == 0:
            raise ValueError(f"window_size={window_size} must be an odd number >= 3 (radius >= 1)")
        try:
            from local_attention import LocalAttention
        except ImportError as e:  # an optional extra
            raise ImportError("the local-attention baseline needs `pip install -e .[bench]`") from e
        r = window_size // 2
        self.local = LocalAttention(
            window_size=r,
            causal=False,
            look_backward=1,
            look_forward=1,
            exact_windowsize=True,
            autopad=True,
            dropout=dropout,
            use_rotary_pos_emb=False,
        )

    def forward(self, x: Tensor, mask: Tensor) -> AttentionOutput:
        q, k, v = self._heads(x)  # (B, H, T, Dh) each
        y = self.local(q, k, v, mask=mask)  # (B, H, T, Dh); the mask is repeated over heads
        return AttentionOutput(self._merge(y), None)


# ----------------------------------------------------------------------------- measurements


def elapsed(fn: Callable[[], Any], *, device: str) -> float:
    """Seconds one call of ``fn`` takes: wall clock on CPU; on CUDA, CUDA events recorded
    around it (launches return before the kernels finish) and waited for."""
    if device == "cpu":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3  # elapsed_time is in ms


def matmul_gflops(*, n: int, repeats: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul speed in ``dtype``, 2 n^3 flops per product, median of ``repeats``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    times = [elapsed(lambda: a @ b, device=device) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def _inputs(*, batch_size: int, length: int, dim: int, device: str = "cpu") -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    x = torch.randn(batch_size, length, dim, device=device, requires_grad=True)  # (B, T, D)
    return x, torch.ones(batch_size, length, dtype=torch.bool, device=device)


def precision(device: str, dtype: str):
    """The context a case runs in: autocast to bf16/fp16 (float32 weights, as mixed-precision
    training), or nothing for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[dtype])


def _forward(module: nn.Module, x: Tensor, mask: Tensor, *, device: str = "cpu", dtype: str = "fp32") -> None:
    with torch.no_grad(), precision(device, dtype):
        module(x, mask)


def _forward_backward(module: nn.Module, x: Tensor, mask: Tensor, *, device: str = "cpu", dtype: str = "fp32") -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    with precision(device, dtype):
        y = module(x, mask).y
    y.float().sum().backward()  # outside autocast, as Lightning's mixed precision does


def _build(row: DictConfig | dict, device: str = "cpu") -> nn.Module:
    factory = hydra.utils.instantiate(row)  # rows are partial, like the network's attention
    torch.manual_seed(0)
    return factory().train().to(device)


def resident_bytes() -> tuple[int, int]:
    """(current, peak) resident memory of this process, from /proc/self/status (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024  # reported in kB
    return fields["VmRSS"], fields["VmHWM"]


def _memory_child() -> None:
    """Entry of the fresh process that measures one case: spec on stdin, JSON on stdout."""
    spec = json.loads(sys.stdin.read())
    limit = int(spec["address_space_limit"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(spec["num_threads"])
    try:
        module = _build(spec["row"])
        x, mask = _inputs(batch_size=spec["batch_size"], length=spec["length"], dim=spec["dim"])
        before, _ = resident_bytes()
        _forward_backward(module, x, mask, dtype=spec.get("dtype", "fp32"))
        _, peak = resident_bytes()
        result: dict[str, Any] = {"baseline_bytes": before, "peak_bytes": peak}
    except (RuntimeError, MemoryError) as e:  # allocation refused under the limit
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    sys.stdout.write(json.dumps(result))


def measure_peak_memory(
    *,
    row: DictConfig,
    length: int,
    batch_size: int,
    dim: int,
    num_threads: int,
    address_space_limit: int,
    dtype: str = "fp32",
) -> dict[str, Any]:
    """One forward+backward in a fresh process; returns its baseline and peak RSS, or an error."""
    spec = {
        "row": OmegaConf.to_container(row, resolve=True),
        "length": length,
        "batch_size": batch_size,
        "dim": dim,
        "num_threads": num_threads,
        "address_space_limit": address_space_limit,
        "dtype": dtype,
    }
    code = "from segmenter.evaluation.benchmark import _memory_child; _memory_child()"
    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(spec), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"error": f"measuring process failed ({proc.returncode}): {tail[0][:200]}"}
    return json.loads(proc.stdout)


def measure_cuda_peak_memory(
    module: nn.Module, *, length: int, batch_size: int, dim: int, dtype: str
) -> dict[str, Any]:
    """One forward+backward on the GPU: ``max_memory_allocated`` over it and what was
    allocated before it (module and inputs), or an error if it runs out of memory."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    try:
        x, mask = _inputs(batch_size=batch_size, length=length, dim=dim, device="cuda")
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _forward_backward(module, x, mask, device="cuda", dtype=dtype)
        torch.cuda.synchronize()
        result: dict[str, Any] = {"baseline_bytes": before, "peak_bytes": torch.cuda.max_memory_allocated()}
    except torch.cuda.OutOfMemoryError as e:
        result = {"error": f"OutOfMemoryError: {str(e).splitlines()[0][:200]}"}
    module.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    return result


@dataclass
class Case:
    row: str
    length: int
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    peak_mb: float | None = None
    above_baseline_mb: float | None = None


def time_cases(
    modules: dict[str, nn.Module],
    x: Tensor,
    mask: Tensor,
    *,
    warmup: int,
    repeats: int,
    device: str = "cpu",
    dtype: str = "fp32",
) -> dict[str, tuple[float, float]]:
    """Median forward and forward+backward seconds per module, rows interleaved run by run.
    (On CUDA the warm-up runs also compile what is compiled, e.g. FlexAttention.)"""
    for module in modules.values():
        for _ in range(warmup):
            _forward(module, x, mask, device=device, dtype=dtype)
            _forward_backward(module, x, mask, device=device, dtype=dtype)
    fwd: dict[str, list[float]] = {name: [] for name in modules}
    both: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(repeats):
        for name, module in modules.items():
            for fn, store in ((_forward, fwd), (_forward_backward, both)):
                run = functools.partial(fn, module, x, mask, device=device, dtype=dtype)
                store[name].append(elapsed(run, device=device))
    return {name: (statistics.median(fwd[name]), statistics.median(both[name])) for name in modules}


def parameter_counts(cfg: DictConfig, names: list[str]) -> dict[str, dict[str, int]]:
    """Whole network (conf/model at its defaults) and one attention module, per attention type."""
    counts = {}
    for name in names:
        net = hydra.utils.instantiate(cfg.model.net, attention=cfg.rows[name], num_classes=2)
        attention = _build(cfg.rows[name])
        counts[name] = {
            "network": sum(p.numel() for p in net.parameters()),
            "attention_layer": sum(p.numel() for p in attention.parameters()),
        }
    return counts


# ----------------------------------------------------------------------------- the run


def run_benchmark(cfg: DictConfig, *, output_dir: str | Path) -> dict[str, Any]:
    """Measure every row at every length; write results.json, table.md and benchmark.png."""
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise ValueError(f"repeats={cfg.repeats} must be >= 1 and warmup={cfg.warmup} >= 0")
    if any(t < 1 for t in cfg.lengths):
        raise ValueError(f"lengths={list(cfg.lengths)} must all be >= 1")
    device, dtype = cfg.get("device", "cpu"), cfg.get("dtype", "fp32")
    if device not in DEVICES or dtype not in DTYPES:
        raise ValueError(f"device={device!r} must be one of {DEVICES} and dtype={dtype!r} one of {tuple(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    rows = list(cfg.rows)
    budget = int(cfg.memory_budget_gb * GB)
    dim = cfg.model.net.dim
    meta = {
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "dtype": dtype,
        "num_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "matmul_gflops": matmul_gflops(n=cfg.matmul_size, device=device, dtype=DTYPES[dtype]),
        "matmul_size": cfg.matmul_size,
        "batch_size": cfg.batch_size,
        "dim": dim,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "memory_budget_gb": cfg.memory_budget_gb,
    }
    log.info("matmul: %.1f GFLOP/s (%s, %s)", meta["matmul_gflops"], meta["device_name"], dtype)
    counts = parameter_counts(cfg, [r for r in rows if r in attention_types()])  # rows training can use

    cases: list[Case] = []
    for length in cfg.lengths:
        runnable: dict[str, nn.Module] = {}
        for name in rows:
            case = Case(name, length)
            cases.append(case)
            module = _build(cfg.rows[name], device)
            estimate = getattr(module, "estimated_bytes", None)
            need = estimate(length=length, batch_size=cfg.batch_size, dtype=DTYPES[dtype]) if estimate else 0
            if need > budget:
                case.status = "skipped"
                case.note = f"needs ~{_size(need)} > budget {_size(budget)}"
                log.info("%s T=%d: %s", name, length, case.note)
                continue
            if device == "cuda":
                mem = measure_cuda_peak_memory(module, length=length, batch_size=cfg.batch_size, dim=dim, dtype=dtype)
            else:
                mem = measure_peak_memory(
                    row=cfg.rows[name],
                    length=length,
                    batch_size=cfg.batch_size,
                    dim=dim,
                    num_threads=cfg.num_threads,
                    address_space_limit=budget + ADDRESS_SPACE_SLACK,
                    dtype=dtype,
                )
            if "error" in mem:
                case.status, case.note = "failed", mem["error"]
                log.warning("%s T=%d failed: %s", name, length, case.note)
                continue
            case.peak_mb = mem["peak_bytes"] / MB
            case.above_baseline_mb = (mem["peak_bytes"] - mem["baseline_bytes"]) / MB
            runnable[name] = module
        x, mask = _inputs(batch_size=cfg.batch_size, length=length, dim=dim, device=device)
        timings = time_cases(runnable, x, mask, warmup=cfg.warmup, repeats=cfg.repeats, device=device, dtype=dtype)
        del runnable, x, mask  # free the GPU before the next length
        for case in cases:
            if case.length == length and case.row in timings:
                case.forward_ms, case.forward_backward_ms = (1e3 * s for s in timings[case.row])
                log.info(
                    "%s T=%d: forward %.1f ms, forward+backward %.1f ms, peak %.0f MB",
                    case.row,
                    length,
                    case.forward_ms,
                    case.forward_backward_ms,
                    case.peak_mb,
                )
    meta["load_average_end"] = os.getloadavg()

    results = {"meta": meta, "parameters": counts, "cases": [asdict(c) for c in cases]}
    atomic_write(output_dir / "results.json", json.dumps(results, indent=2))
    table = format_table(results)
    atomic_write(output_dir / "table.md", table)
    plot(results, output_dir / "benchmark.png")
    results["table"] = table
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- reports


def _size(n: float) -> str:
    for unit, scale in (("GB", GB), ("MB", MB), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def ratios(cases: list[dict]) -> list[str]:
    """Forward+backward ratios that the attention claims rest on, from the measured cases."""
    fb = {(c["row"], c["length"]): c["forward_backward_ms"] for c in cases if c["status"] == "ok"}
    lengths = sorted({c["length"] for c in cases})
    lines = []

    def ratio(a: tuple[str, int], b: tuple[str, int], text: str) -> None:
        if a in fb and b in fb:
            lines.append(f"- {text}: {fb[a] / fb[b]:.2f}")

    for t in lengths:
        ratio(("self", t), ("localized", t), f"self / localized at T={t}")
    for t in lengths:
        ratio(("local_attention", t), ("localized", t), f"local-attention package / localized at T={t}")
    boundary_rows = [r for r in dict.fromkeys(c["row"] for c in cases) if r.startswith("boundary")]
    for row in boundary_rows:  # boundary_aware, and e.g. a segment-form row added on the command line
        for t in lengths:
            ratio((row, t), ("self", t), f"{row} / self at T={t}")
    peak = {(c["row"], c["length"]): c["peak_mb"] for c in cases if c["status"] == "ok"}
    for row in boundary_rows:
        for t in lengths:
            if (row, t) in peak and ("self", t) in peak:
                lines.append(f"- peak memory, {row} / self at T={t}: {peak[row, t] / peak['self', t]:.2f}")
    for t in lengths:
        ratio(("masked_full", t), ("localized", t), f"masked_full / localized at T={t}")
    for short, long in zip(lengths, lengths[1:]):
        ratio(("localized", long), ("localized", short), f"localized T={long} / T={short} ({long // short}x the units)")
    return lines


def format_table(results: dict[str, Any]) -> str:
    meta, cases = results["meta"], results["cases"]
    base = {c["length"]: c["forward_backward_ms"] for c in cases if c["row"] == "self" and c["status"] == "ok"}
    dtype = meta.get("dtype", "fp32")
    if meta.get("device", "cpu") == "cuda":
        where = (
            f"{meta['device_name']}, {dtype}{' autocast' if dtype != 'fp32' else ''}, CUDA-event times, "
            f"peak = torch.cuda.max_memory_allocated; matmul {meta['matmul_gflops']:.0f} GFLOP/s ({dtype}, "
            f"n={meta['matmul_size']})"
        )
        peak_cols = "peak MB (CUDA) | above baseline MB"
    else:
        where = (
            f"{meta['num_threads']} threads, {meta['cpu']}{', ' + dtype + ' autocast' if dtype != 'fp32' else ''}; "
            f"matmul {meta['matmul_gflops']:.1f} GFLOP/s ({'float32' if dtype == 'fp32' else dtype}, n={meta['matmul_size']})"
        )
        peak_cols = "peak MB | above baseline MB"
    out = [
        "# Attention benchmark",
        "",
        f"batch {meta['batch_size']}, width {meta['dim']}, torch {meta['torch']}, {where}; "
        f"median of {meta['repeats']} runs after {meta['warmup']} warm-up; load average "
        f"{meta['load_average_start'][0]:.2f} at start, {meta['load_average_end'][0]:.2f} at end.",
        "",
        f"| attention | units | forward ms | fwd+bwd ms | fwd+bwd vs self | {peak_cols} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        if c["status"] != "ok":
            out.append(f"| {c['row']} | {c['length']} | {c['status']}: {c['note']} | | | | |")
            continue
        vs = c["forward_backward_ms"] / base[c["length"]] if c["length"] in base else None
        out.append(
            f"| {c['row']} | {c['length']} | {_fmt(c['forward_ms'])} | {_fmt(c['forward_backward_ms'])} | "
            f"{_fmt(vs, '.3f')} | {_fmt(c['peak_mb'], '.0f')} | {_fmt(c['above_baseline_mb'], '.0f')} |"
        )
    out += ["", "Ratios of forward+backward times:", "", *ratios(cases)]
    counts = results["parameters"]
    if counts:
        ref = counts.get("self")
        out += [
            "",
            "| attention | network parameters | vs self | one attention layer |",
            "|---|---:|---:|---:|",
        ]
        for name, n in counts.items():
            vs = f"{n['network'] / ref['network'] - 1:+.1%}" if ref else ""
            out.append(f"| {name} | {n['network']:,} | {vs} | {n['attention_layer']:,} |")
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-log time and memory against length, one line per row."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cases = [c for c in results["cases"] if c["status"] == "ok"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, row in enumerate(dict.fromkeys(c["row"] for c in results["cases"])):
        mine = sorted((c for c in cases if c["row"] == row), key=lambda c: c["length"])
        color = f"C{i}"
        skipped = [c["length"] for c in results["cases"] if c["row"] == row and c["status"] != "ok"]
        label = row + (f" (not run at {', '.join(map(str, skipped))})" if skipped else "")
        t = [c["length"] for c in mine]
        ax_t.plot(t, [c["forward_backward_ms"] for c in mine], "o-", color=color, label=f"{label}")
        ax_t.plot(t, [c["forward_ms"] for c in mine], "o--", color=color, alpha=0.5)
        ax_m.plot(t, [c["peak_mb"] for c in mine], "o-", color=color, label=label)
        # above baseline can be ~0 at short lengths: floor it at 1 MB for the log axis
        ax_m.plot(t, [max(c["above_baseline_mb"], 1.0) for c in mine], "o--", color=color, alpha=0.5)
    lengths = sorted({c["length"] for c in results["cases"]})
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("units (T)")
    ax_t.set_ylabel("ms (solid: forward+backward, dashed: forward)")
    peak = "CUDA peak" if results["meta"].get("device") == "cuda" else "process peak"
    ax_m.set_ylabel(f"MB (solid: {peak}, dashed: above baseline)")
    ax_t.set_title("time")
    ax_m.set_title("peak memory of a forward+backward")
    ax_m.legend(fontsize=8)
    meta = results["meta"]
    where = f"{meta['num_threads']} threads" if meta.get("device", "cpu") == "cpu" else meta["device_name"]
    fig.suptitle(
        f"attention, batch {meta['batch_size']}, width {meta['dim']}, {meta.get('dtype', 'fp32')}, "
        f"{where}, {meta['matmul_gflops']:.0f} GFLOP/s matmul"
    )
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


# -- cold start of a shipped model ------------------------------------------------------------
# A user's first call, in a fresh interpreter. It prints, with the wall clock (time.time(),
# comparable with the parent's), the moment the segments are in hand; the parent notes when it
# launched the interpreter and when the interpreter had exited.
COLD_START = """\
import sys, time
t0 = time.perf_counter()
from segmenter import Segmenter
seg = Segmenter.from_pretrained({model!r})
t1 = time.perf_counter()
pred = seg.segment(sys.stdin.read(), units={units!r}, return_probs=True)
t2 = time.perf_counter()
print(len(pred.units), len(pred.segments), round(t1 - t0, 3), round(t2 - t1, 3), repr(time.time()), flush=True)
"""
# The machine's yardstick, run between the cold starts: how long a bare `import torch` takes
# here and now (shared machines vary by tens of percent from one hour to the next).
IMPORT_TORCH = "import time; import torch; print(repr(time.time()), flush=True)"


def cold_start_text(n: int) -> list[str]:
    """``n`` English sentences from the standard library's module documentation (offline,
    the same on every machine with the same Python)."""
    mods = (
        "json",
        "random",
        "argparse",
        "logging",
        "collections",
        "decimal",
        "email",
        "unittest",
        "csv",
        "sqlite3",
        "doctest",
        "pickle",
        "re",
        "string",
        "tarfile",
        "zipfile",
        "threading",
        "subprocess",
        "datetime",
        "typing",
    )
    text = " ".join(" ".join(pydoc.getdoc(__import__(m)).split()) for m in mods)
    units = [s.strip() for s in pysbd.Segmenter(language="en", clean=False).segment(text) if s.strip()]
    if len(units) < n:
        raise ValueError(f"sentences={n}: only {len(units)} sentences in the sample text")
    return units[:n]


def cold_start(cfg: Any) -> dict[str, float]:
    """Median seconds over ``cfg.runs`` fresh interpreters that import segmenter, load
    ``cfg.pretrained`` and segment one ``cfg.sentences``-unit document (scripts/cold_start.py):
    ``to_result_s`` from launching the interpreter to the segments in hand (the cold start),
    ``exit_s`` the interpreter's shutdown after that (profiled once with perf: mostly Python's
    final garbage collection of torch's objects), ``cpu_s`` the CPU time of the whole process; ``import_torch_s`` the same
    launch-to-done time of an interpreter that only imports torch, run between them."""
    units = cold_start_text(int(cfg.sentences))
    text = "\n".join(units) if cfg.units == "lines" else " ".join(units)
    env = dict(os.environ)
    if cfg.threads is not None:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    code = COLD_START.format(model=cfg.pretrained, units=cfg.units)
    runs: list[dict[str, float]] = []
    for _ in range(int(cfg.runs)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launched = time.time()
        out = subprocess.run(
            [sys.executable, "-c", code], input=text, capture_output=True, text=True, env=env, check=False
        )
        exited = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"cold start of {cfg.pretrained!r} failed: {out.stderr[-2000:]}")
        n_units, n_segments, load_s, segment_s, done = out.stdout.split()
        yardstick_start = time.time()
        bare = subprocess.run([sys.executable, "-c", IMPORT_TORCH], capture_output=True, text=True, env=env, check=True)
        runs.append(
            {
                "import_torch_s": float(bare.stdout) - yardstick_start,
                "to_result_s": float(done) - launched,
                "exit_s": exited - float(done),
                "cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                "import_and_load_s": float(load_s),
                "segment_s": float(segment_s),
            }
        )
    result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    threads = cfg.threads if cfg.threads is not None else f"{torch.get_num_threads()} (torch's default)"
    print(
        f"| model | units | runs | threads | to result s | exit s | CPU s | import + load s | segment s | load average | "
        f"`import torch` alone s |\n"
        f"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {cfg.pretrained} | {n_units} ({n_segments} segments) | {cfg.runs} | {threads} | {result['to_result_s']:.2f} | "
        f"{result['exit_s']:.2f} | {result['cpu_s']:.2f} | {result['import_and_load_s']:.2f} | {result['segment_s']:.2f} | "
        f"{os.getloadavg()[0]:.1f} | {result['import_torch_s']:.2f} |"
    )
    return result

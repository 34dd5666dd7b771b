"""Load test of the HTTP server, on this machine's loopback only (options: conf/load_test.yaml):

    python scripts/load_test.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt
    python scripts/load_test.py url=http://127.0.0.1:8000 clients=32 requests=10000

Starts scripts/serve.py on a free loopback port (or uses ``url``, a server already
running here), then ``clients`` concurrent clients post fresh ``lines_per_doc``-line
documents (random words: every unit is new to the encoder's cache) until ``requests``
are sent or ``max_seconds`` pass. Every answer is checked (status 200 and the units sent
come back, in order); ``malformed_every`` mixes refused requests in, which must get a 4xx
and change nothing for the others. Prints a markdown table: throughput, latency
percentiles, errors, lost requests (no answer at all), the server's start-to-first-answer
time, and the targets met or not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SEGMENTER_ROOT", str(ROOT))
log = logging.getLogger("load_test")

import segmenter.cli  # noqa: E402  (after SEGMENTER_ROOT: the configs read it)
from segmenter.core.io import atomic_write  # noqa: E402

# Requests that must be refused (4xx), cycled through when malformed_every > 0.
MALFORMED = [
    b'{"lines": ["an unclosed list"',  # not JSON
    b'{"lines": "one string, not a list"}',  # wrong type
    b'{"text": "   "}',  # empty text
    b'{"lines": ["a"], "colour": "red"}',  # unknown field
    b"[1, 2, 3]",  # not an object
]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, well-formed requests answered correctly
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # well-formed requests answered wrongly, by kind
    lost: int = 0  # no answer (connection error, client timeout)
    malformed_sent: int = 0
    malformed_refused: int = 0  # got a 4xx JSON {"error": ...}
    sent: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def document(rng: random.Random, vocab: list[str], lines: int) -> list[str]:
    return [" ".join(rng.choices(vocab, k=rng.randint(5, 14))).capitalize() + "." for _ in range(lines)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash; a ConfigError unless it is http on this machine's
    loopback (the load test must not be pointed at someone else's server)."""
    from segmenter.cli.config import ConfigError

    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parts.scheme != "http" or not loopback:
        raise ConfigError(
            f"url={url!r}: the load test runs against this machine's loopback only (http://127.0.0.1:<port>)"
        )
    return url.rstrip("/")


async def wait_for_first_answer(url: str, *, proc: subprocess.Popen, started: float, deadline_s: float) -> float:
    """Seconds from ``started`` (time.perf_counter() when the server process was started)
    until POST /segment first answers 200."""
    import aiohttp

    t0 = started
    body = json.dumps({"lines": ["The first line.", "The second line."]})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() - t0 < deadline_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} before answering (its log: above)")
            try:
                async with session.post(f"{url}/segment", data=body, headers={"Content-Type": "application/json"}) as r:
                    if r.status == 200:
                        await r.read()
                        return time.perf_counter() - t0
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError(f"the server did not answer within {deadline_s:g} s")


async def run_load(cfg: DictConfig, url: str, *, requests: int, tally: Tally, seed: int) -> float:
    """Post until ``requests`` are sent or max_seconds pass; returns the wall time."""
    import aiohttp

    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    counter = iter(range(requests))
    deadline = time.perf_counter() + cfg.max_seconds
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=cfg.clients)
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s)

    async def client(session: aiohttp.ClientSession) -> None:
        for n in counter:
            if time.perf_counter() > deadline:
                return
            tally.sent += 1
            if cfg.malformed_every and n % cfg.malformed_every == cfg.malformed_every - 1:
                tally.malformed_sent += 1
                body = MALFORMED[(n // cfg.malformed_every) % len(MALFORMED)]
                try:
                    async with session.post(f"{url}/segment", data=body, headers=headers) as r:
                        answer = await r.json(content_type=None)
                        if 400 <= r.status < 500 and isinstance(answer, dict) and "error" in answer:
                            tally.malformed_refused += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    pass
                continue
            lines = document(rng, vocab, cfg.lines_per_doc)
            body = json.dumps(
                {"text": "\n".join(lines), "units": "lines"} if cfg.units == "lines" else {"lines": lines}
            )
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/segment", data=body, headers=headers) as r:
                    raw = await r.read()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                tally.lost += 1
                log.debug("lost: %s: %s", type(e).__name__, e)
                continue
            latency = time.perf_counter() - t0
            if status != 200:
                tally.error(f"HTTP {status}")
                continue
            try:
                answer = json.loads(raw)
            except ValueError:
                tally.error("not JSON")
                continue
            if answer.get("units") != lines or len(answer.get("boundary_probs", ())) != len(lines):
                tally.error("wrong answer")  # another request's units, or some lost: batching mixed them up
                continue
            tally.ok += 1
            tally.latencies.append(latency)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(cfg.clients)))
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def report(cfg: DictConfig, tally: Tally, *, seconds: float, start_s: float | None) -> tuple[str, dict]:
    ms = {f"p{q}": 1000 * percentile(tally.latencies, q) for q in (50, 95, 99)}
    ms["max"] = 1000 * max(tally.latencies, default=float("nan"))
    well_formed = tally.sent - tally.malformed_sent
    result = {
        "clients": cfg.clients,
        "lines_per_doc": cfg.lines_per_doc,
        "units": cfg.units,
        "requests_sent": tally.sent,
        "well_formed": well_formed,
        "ok": tally.ok,
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "lost": tally.lost,
        "malformed_sent": tally.malformed_sent,
        "malformed_refused_4xx": tally.malformed_refused,
        "seconds": round(seconds, 3),
        "docs_per_s": round(tally.ok / seconds, 1) if seconds else 0.0,
        "latency_ms": {k: round(v, 1) for k, v in ms.items()},
        "start_to_first_answer_s": round(start_s, 2) if start_s is not None else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
    }
    t = cfg.targets
    checks = [
        (
            "throughput",
            f"{result['docs_per_s']:.0f} documents/s",
            result["docs_per_s"] >= t.docs_per_s,
            f">= {t.docs_per_s}",
        ),
        ("p99 latency", f"{ms['p99']:.0f} ms", ms["p99"] <= t.p99_ms, f"<= {t.p99_ms} ms"),
        ("errors + lost", f"{result['errors']} + {tally.lost}", result["errors"] == 0 and tally.lost == 0, "0"),
    ]
    if tally.malformed_sent:
        checks.append(
            (
                "malformed refused (4xx)",
                f"{tally.malformed_refused}/{tally.malformed_sent}",
                tally.malformed_refused == tally.malformed_sent,
                "all",
            )
        )
    if start_s is not None:
        checks.append(("start to first answer", f"{start_s:.2f} s", start_s <= t.start_s, f"<= {t.start_s} s"))
    rows = [
        "| clients | requests | ok | errors | lost | documents/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {cfg.clients} | {well_formed} | {tally.ok} | {result['errors']} | {tally.lost} | {result['docs_per_s']:.0f} "
        f"| {ms['p50']:.1f} | {ms['p95']:.1f} | {ms['p99']:.1f} | {ms['max']:.1f} |",
        "",
        "| target | measured | wanted | met |",
        "|---|---:|---:|:---:|",
        *(f"| {name} | {got} | {want} | {'yes' if ok else 'NO'} |" for name, got, ok, want in checks),
    ]
    result["targets_met"] = all(ok for _, _, ok, _ in checks)
    return "\n".join(rows) + "\n", result


def start_server(cfg: DictConfig, port: int) -> subprocess.Popen:
    from segmenter.cli.config import ConfigError

    if not cfg.ckpt_path and not cfg.get("pretrained"):
        raise ConfigError(
            "give ckpt_path=<checkpoint> or pretrained=<topic|lyrics> (a server is started with it) "
            "or url=http://127.0.0.1:<port>"
        )
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: not found")
    model = f"ckpt_path={cfg.ckpt_path}" if cfg.ckpt_path else f"pretrained={cfg.pretrained}"  # serve.py refuses both
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "serve.py"),
        model,
        "host=127.0.0.1",
        f"port={port}",
        *cfg.server_overrides,
    ]
    log.info("starting: %s", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=ROOT)  # its log goes to this stderr


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal once it has shut down cleanly
        log.warning("the server exited with status %s after SIGTERM", code)


@segmenter.cli.main(config_name="load_test")
def main(cfg: DictConfig) -> None:
    from segmenter.cli.config import ConfigError

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise ConfigError("the load test needs the serve extra: pip install -e '.[serve]' (aiohttp)") from None
    for key in ("clients", "requests", "lines_per_doc"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r}: expected a whole number >= 1")
    proc, start_s = None, None
    if cfg.url:
        url = check_loopback(cfg.url)
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = start_server(cfg, port)
    try:
        if proc is not None:
            start_s = asyncio.run(wait_for_first_answer(url, proc=proc, started=t0, deadline_s=cfg.start_timeout_s))
            log.info("server answered %.2f s after it was started", start_s)
        if cfg.warmup_requests:
            asyncio.run(
                run_load(_no_malformed(cfg), url, requests=cfg.warmup_requests, tally=Tally(), seed=cfg.seed + 1)
            )
        tally = Tally()
        log.info(
            "%d clients, %d requests of %d %s (max %g s) against %s",
            cfg.clients,
            cfg.requests,
            cfg.lines_per_doc,
            cfg.units,
            cfg.max_seconds,
            url,
        )
        seconds = asyncio.run(run_load(cfg, url, requests=cfg.requests, tally=tally, seed=cfg.seed))
    finally:
        if proc is not None:
            stop_server(proc)
    table, result = report(cfg, tally, seconds=seconds, start_s=start_s)
    if cfg.output:
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "load_test.md", table)
        atomic_write(out / "load_test.json", json.dumps(result, indent=2) + "\n")
        log.info("wrote %s/load_test.md and load_test.json", out)
    sys.stdout.write(table)
    sys.stdout.flush()
    if tally.errors or tally.lost:
        log.warning("errors: %s; lost: %d", tally.errors, tally.lost)


def _no_malformed(cfg: DictConfig) -> DictConfig:
    from omegaconf import OmegaConf, open_dict

    warm = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(warm):
        warm.malformed_every = 0
    return warm


if __name__ == "__main__":
    main()

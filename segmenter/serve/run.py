"""scripts/serve.py's body: load the model, bind the port, run uvicorn (conf/serve.yaml)."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)


def settings(cls: type, node: Any, where: str) -> Any:
    """``cls`` (Limits, Batching) from a config node; unknown keys and bad values are the
    user's mistakes (ConfigError: one line, exit status 2)."""
    from omegaconf import OmegaConf

    from segmenter.cli.config import ConfigError

    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port before the model loads: a port in use fails at once, in
    one line. ``port=0`` picks a free one (logged)."""
    from segmenter.cli.config import ConfigError

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port={port!r}: expected a whole number from 0 to 65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"host={host!r}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror} (another server there? choose port=...)"
        ) from None
    sock.set_inheritable(True)
    return sock


def run(cfg: Any) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: requests in flight are answered first)."""
    import hydra
    import torch

    from segmenter.cli.config import ConfigError
    from segmenter.core.document import UNITS

    try:
        import uvicorn

        from segmenter.serve.app import Batching, Limits, create_app
    except ImportError as e:
        raise ConfigError(
            f"serving needs the serve extra: pip install -e '.[serve]' ({e.name} is not installed)"
        ) from None
    limits = settings(Limits, cfg.get("limits"), "limits")
    batching = settings(Batching, cfg.get("batching"), "batching")
    if cfg.units is not None and cfg.units not in UNITS:
        raise ConfigError(f"units={cfg.units!r}: expected one of {UNITS}")
    sock = bind(str(cfg.host), cfg.port)
    host, port = sock.getsockname()[:2]
    if not _loopback(host):
        log.warning("listening on %s, reachable from other machines: the server has no authentication", host)
    # The predict thread's torch ops run beside the event loop, which needs a core of its own:
    # on 2 cores 1 torch thread served 5-30% more documents/s than 2 (docs/serving.md).
    if cfg.get("threads") is not None and not isinstance(cfg.threads, int):
        raise ConfigError(f"threads={cfg.threads}: the server takes one number of torch threads")
    threads = int(cfg.threads) if cfg.get("threads") else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    seg = hydra.utils.instantiate(
        cfg.segmenter, ckpt_path=cfg.ckpt_path, pretrained=cfg.pretrained
    )  # CheckpointError comes wrapped by Hydra
    source = str(cfg.get("ckpt_path") or f"pretrained:{cfg.get('pretrained')}")
    try:
        app = create_app(
            seg,
            limits=limits,
            batching=batching,
            default_units=cfg.units,
            source=source,
            cors_origins=tuple(cfg.cors_origins or ()),
            tokenizer=cfg.get("tokenizer"),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config = uvicorn.Config(app, log_config=None, access_log=bool(cfg.access_log), timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    url_host = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%d/ (API: POST /segment, GET /info, GET /health; Ctrl-C stops)", url_host, port)
    server.run(sockets=[sock])


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

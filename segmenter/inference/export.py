"""The export command (scripts/export.py, segmenter/conf/export.yaml): a checkpoint's network as an
ONNX graph for the ONNX backend (segmenter.inference.onnx_backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from segmenter.core.windows import check_window
from segmenter.inference.api import check_source
from segmenter.inference.checkpoint import load_net
from segmenter.inference.onnx_backend import export
from segmenter.pretrained import MODEL_UNITS, checkpoint_path

log = logging.getLogger(__name__)


def run(cfg: Any) -> Path:
    """scripts/export.py's body. The user's mistakes (both or neither of ckpt_path and
    pretrained, a bad window, a missing extra) are ConfigErrors (one line, exit status 2),
    raised before the checkpoint is read; a bad checkpoint is a CheckpointError."""
    from segmenter.cli.config import ConfigError

    try:
        check_source(cfg.get("ckpt_path"), cfg.get("pretrained"))
        check_window(cfg.max_units, cfg.overlap, size_name="max_units")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"exporting needs the onnx extra: pip install -e '.[onnx]' ({e.name} is not installed)"
        ) from None
    source = checkpoint_path(cfg.pretrained) if cfg.get("pretrained") else Path(cfg.ckpt_path)
    net, meta = load_net(source)
    if cfg.get("pretrained"):
        # The shipped checkpoints do not say their units: the graph's file does (Segmenter.from_onnx).
        meta = {**meta, "units": meta.get("units", MODEL_UNITS[cfg.pretrained])}
    return export(net, cfg.output, meta=meta, max_units=cfg.max_units, overlap=cfg.overlap)

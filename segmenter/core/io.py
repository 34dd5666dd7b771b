"""Writing files so that none is ever left half written: every file segmenter writes
(checkpoint upgrades, embedding-cache shards, corpus caches, split files, predictions,
evaluation and benchmark results, sweep summaries) goes through here."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """A file object (``mode`` "w": UTF-8 text, "wb": bytes) on a temporary file beside
    ``path``, flushed to disk and renamed into place when the block ends: readers (and
    concurrent jobs) see the old file or the new one, never half of one; a failure inside
    the block leaves no temporary file. The file gets the usual permissions (0666 less the
    umask), not mkstemp's private 0600."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text to ``path`` through ``atomic_file``."""
    with atomic_file(path) as f:
        f.write(text)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask

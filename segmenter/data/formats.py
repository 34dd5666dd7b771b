"""File formats: reading documents from the field's standard formats (the corpora built on
them are segmenter/data/corpora.py).

- Separator format (Choi 2000, Wiki-727K): one unit per line; a separator line starts a
  new segment. Choi uses ``==========``; Wiki-727K uses ``========,<level>,<title>.``; the
  predict command writes ``========== <label>`` for a section model (``========== chorus``),
  read as a plain separator (the segments, not their labels: a separator corpus is a
  boundary corpus).
- JSONL: one JSON object per line. Training documents are ``{"id": ..., "lines": [...],
  "labels": [...]}``; ``jsonl_lines``, ``json_object`` and ``string_list`` also parse the
  predict command's JSONL input (``{"id", "text"}`` or ``{"id", "lines"}``).
- Any file: UTF-8 text (``decode_utf8``), files of a folder tree (``list_files``).

Bad input raises :class:`ReaderError` naming the file, the line and the problem; with
``on_error="skip"`` the offending document is skipped and a warning counts the skips.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from segmenter.core.document import BOUNDARY, SECTION, Document, check_task, segments_to_document

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
CHOI_SEPARATOR = re.compile(r"^={10}(?:\s+[^=\s].*)?$")  # stripped line; a label may follow a space
WIKI_HEADER = re.compile(r"^========,(\d+),(.*)$")
WIKI_LIST = "***LIST***."


class ReaderError(ValueError):
    """Bad input: names the file, the line (1-based, 0 = the file as a whole) and the problem."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}")


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR}")


def decode_utf8(data: bytes, name: str | os.PathLike) -> str:
    """UTF-8 text of a file's bytes (a byte-order mark is dropped); a binary file (NUL
    byte) or a decoding error raises ReaderError naming the line where it happens."""
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise ReaderError(name, line, "binary file (NUL byte); expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ReaderError(name, line, f"not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file (see ``decode_utf8``)."""
    return decode_utf8(path.read_bytes(), path)


def list_files(paths: str | os.PathLike | Sequence[str | os.PathLike], *, pattern: str = "*") -> list[Path]:
    """Files of a folder tree (recursive, sorted), a single file, or a list of either."""
    return list(iter_files(paths, pattern=pattern))


def iter_files(paths: str | os.PathLike | Sequence[str | os.PathLike], *, pattern: str = "*") -> Iterator[Path]:
    """``list_files`` one file at a time: a folder tree is walked a folder at a time, each
    folder's entries in sorted order (the order of ``sorted(folder.rglob(pattern))``: paths
    compare part by part), so the files of a 727K-file corpus are never listed at once.
    Hidden files are left out; links to folders are not followed (as ``rglob``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for p in map(Path, paths):
        if p.is_dir():
            found = 0
            for f in _walk(p, pattern):
                found += 1
                yield f
            if not found:
                raise ReaderError(p, 0, f"folder has no files matching {pattern!r}")
        elif p.is_file():
            yield p
        else:
            raise ReaderError(p, 0, "no such file or folder")


def _walk(folder: Path, pattern: str) -> Iterator[Path]:
    """The files under ``folder`` whose name matches ``pattern``, depth first, each folder's
    entries sorted by name (holding one folder's names per level)."""
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.is_dir() and not e.is_symlink()) for e in it)
    for name, is_dir in entries:
        path = folder / name
        if is_dir:
            yield from _walk(path, pattern)
        elif not name.startswith(".") and fnmatch.fnmatchcase(name, pattern) and path.is_file():
            yield path


def parse_separator(
    path: Path, text: str, *, max_level: int | None = None, drop_lines: Iterable[str] = (WIKI_LIST,)
) -> list[list[str]]:
    """Segments (lists of units) of one separator-format file.

    A Choi separator or a Wiki-727K header of level <= ``max_level`` (all levels when None)
    starts a new segment; deeper headers are dropped without a boundary. Empty segments
    (a header right after a header) are skipped; ``drop_lines`` (``***LIST***.``) are dropped.
    """
    drop = set(drop_lines)
    segments: list[list[str]] = [[]]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if CHOI_SEPARATOR.match(line):
            segments.append([])
            continue
        header = WIKI_HEADER.match(line)
        if header:
            if max_level is None or int(header.group(1)) <= max_level:
                segments.append([])
            continue
        if line.startswith("========"):
            raise ReaderError(path, lineno, f"malformed separator line {line[:60]!r}")
        if not line or line in drop:
            continue
        segments[-1].append(line)
    return [s for s in segments if s]


def read_separator_files(paths: str | os.PathLike | Sequence[str | os.PathLike], **settings: Any) -> list[Document]:
    """Documents of separator-format files, as a list; ``settings`` as ``iter_separator_files``
    (which reads them one at a time)."""
    return list(iter_separator_files(paths, **settings))


def iter_separator_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    root: str | os.PathLike | None = None,
    max_level: int | None = None,
    join_sections: int = 1,
    pattern: str = "*",
    on_error: str = "raise",
    subset_by_folder: bool = False,
) -> Iterator[Document]:
    """Documents of separator-format files, one file at a time (a corpus of any size is
    never held whole). The id is the path relative to ``root`` (or the file name); with
    ``subset_by_folder``, ``meta["subset"]`` is the parent folder's name (Choi's ``3-5``,
    ``6-8``...), the groups an evaluation reports separately. ``join_sections=k``: every k
    adjacent segments become one (documents with fewer, longer segments)."""
    check_on_error(on_error)
    if join_sections < 1:
        raise ValueError(f"join_sections={join_sections} must be >= 1")
    skipped = []
    for f in iter_files(paths, pattern=pattern):
        try:
            segments = parse_separator(f, read_text(f), max_level=max_level)
            if not segments:
                raise ReaderError(f, 0, "empty document: no units")
        except ReaderError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        doc_id = f.relative_to(root).as_posix() if root else f.name
        meta = {"path": str(f), **({"subset": f.parent.name} if subset_by_folder else {})}
        yield segments_to_document(doc_id, join_segments(segments, join_sections), meta)
    _warn_skipped(skipped)


def join_segments(segments: list[list[str]], k: int) -> list[list[str]]:
    """Every ``k`` adjacent segments joined into one, in order (the last may join fewer)."""
    return [[u for seg in segments[i : i + k] for u in seg] for i in range(0, len(segments), k)]


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        log.warning("skipped %d bad document(s) (on_error=skip); first: %s", len(skipped), skipped[0])


def read_jsonl(path: str | os.PathLike, **settings: Any) -> list[Document]:
    """The documents of a JSONL file, as a list; ``settings`` as ``iter_jsonl`` (which reads
    them one at a time)."""
    return list(iter_jsonl(path, **settings))


def iter_jsonl(
    path: str | os.PathLike,
    *,
    label_names: Sequence[str],
    label_mode: str = SECTION,
    on_error: str = "raise",
) -> Iterator[Document]:
    """One document per line: ``{"id", "lines", "labels"}``, read a line at a time (a file
    of any size is never held whole).

    ``label_mode="section"``: ``labels`` are per-line class ids (or names from
    ``label_names``). ``label_mode="boundary"``: 1 where a line starts a new segment
    (the first line may be 0 or 1); converted to the boundary task's "unit ends a segment".
    """
    check_on_error(on_error)
    check_task(label_mode, name="label_mode")
    path = Path(path)
    names = list(label_names)
    index = {name: i for i, name in enumerate(names)}
    skipped, seen = [], {}
    for lineno, raw in jsonl_file_lines(path):
        try:
            doc = _jsonl_document(path, lineno, json_object(path, lineno, raw), names, index, label_mode)
            if doc.id in seen:
                raise ReaderError(path, lineno, f"duplicate id {doc.id!r} (first on line {seen[doc.id]})")
            seen[doc.id] = lineno
            yield doc
        except ReaderError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
    _warn_skipped(skipped)
    if not seen:
        raise ReaderError(path, 0, "no documents")


def jsonl_file_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSONL file, decoded as ``decode_utf8``
    would, read one line at a time."""
    offset = 0  # of the line in the file, for the message decode_utf8 would give
    with path.open("rb") as f:
        for lineno, data in enumerate(f, start=1):
            if b"\x00" in data:
                raise ReaderError(path, lineno, "binary file (NUL byte); expected UTF-8 text")
            try:
                raw = data.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                at = offset + e.start
                raise ReaderError(path, lineno, f"not UTF-8 (byte {data[e.start]:#04x} at offset {at})") from None
            offset += len(data)
            if raw.strip():
                yield lineno, raw


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSONL text, numbered from 1."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            yield lineno, raw


def json_object(path: str | os.PathLike, lineno: int, raw: str) -> dict[str, Any]:
    """One JSONL line parsed: a JSON object, or ReaderError naming the line and the problem."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ReaderError(path, lineno, f"malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ReaderError(path, lineno, f"expected an object, got {type(obj).__name__}")
    return obj


def string_list(value: Any, path: str | os.PathLike, lineno: int, key: str) -> list[str]:
    """``obj[key]`` of a JSONL line when it is a list of strings; else ReaderError."""
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ReaderError(path, lineno, f'"{key}" must be a list of strings')
    return value


def _jsonl_document(path, lineno, obj, names, index, label_mode) -> Document:
    if not {"id", "lines", "labels"} <= set(obj):
        raise ReaderError(path, lineno, 'expected an object with keys "id", "lines", "labels"')
    lines, labels = string_list(obj["lines"], path, lineno, "lines"), obj["labels"]
    if not isinstance(labels, list):
        raise ReaderError(path, lineno, '"labels" must be a list')
    if not lines:
        raise ReaderError(path, lineno, f"empty document {obj['id']!r}")
    if len(lines) != len(labels):
        raise ReaderError(path, lineno, f"{len(lines)} lines but {len(labels)} labels")
    ids = []
    for i, lab in enumerate(labels):
        if label_mode == BOUNDARY:
            if lab not in (0, 1) or isinstance(lab, bool):
                raise ReaderError(path, lineno, f"unknown label {lab!r} at position {i}: boundary labels are 0 or 1")
            ids.append(int(lab))
        elif isinstance(lab, str) and lab in index:
            ids.append(index[lab])
        elif isinstance(lab, int) and not isinstance(lab, bool) and 0 <= lab < len(names):
            ids.append(lab)
        else:
            raise ReaderError(path, lineno, f"unknown label {lab!r} at position {i}; label_names={names}")
    if label_mode == BOUNDARY:
        # "line i starts a segment" -> "line i - 1 ends one"; the document end is no slot.
        ids = ids[1:] + [0]
    return Document(str(obj["id"]), lines, ids, {"path": str(path), "line": lineno})

"""Synthetic corpora in Wiki-727K's format, of any size: what the data pipeline is measured
on at the scale of the full dataset (727,746 articles) without the dataset itself
(scripts/bench_data.py).

The format is the dataset's own (../shared/data/README.md, read by ``data=wiki``): one file
per article under ``xx/yy/zz/<article id>`` (the id's first three digit pairs), one sentence
per line, each section opened by a header ``========,<level>,<title>`` (level 1: the
preface; a header may follow a header: an empty section).

Article ``i`` copies the header structure (levels) of a source article drawn at random and
fills each section with the title and sentences of a random source section of the same
level (drawn again if every section came out empty), so sections are reshuffled across
articles while lengths and nesting follow the source. Every sentence gets a counter token (`` (#<article id>.<n>)``): no two sentences of
a corpus are equal, so no cache or deduplication can make a bigger corpus cheaper than it
is. Source pool: a folder of Wiki-format articles (the 567-article sample in ../shared/data)
or, where that is absent, the sentences of the built-in corpus
(``segmenter.data.builtin.source_sentences``), so a fresh clone can generate too.

Article ``i`` depends only on the seed, the pool and ``i``: writing is streamed (one
article in memory at a time), each file is written beside its place and renamed into it
(an existing file is always whole), and a rerun skips the files that exist, so an
interrupted run resumes where it stopped. ``.synthetic_wiki.json`` in the corpus folder
records the settings (a rerun with other settings is refused) and, once every file is
written, the corpus's size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmenter.core.io import atomic_write
from segmenter.data.formats import WIKI_HEADER, WIKI_LIST, ReaderError, list_files, read_text

log = logging.getLogger(__name__)

MANIFEST = ".synthetic_wiki.json"
FORMAT = 1  # bump when the text an article gets changes: old corpora are then refused, not mixed
FIRST_ID = 10_000_000  # ids of 8 digits, as Wiki-727K's: article i is FIRST_ID + i
PREFACE = "preface."


@dataclass(frozen=True)
class Section:
    """One section of a Wiki-format article: its header's level and title (as written after
    ``========,<level>,``, e.g. ``History.``) and its sentences (possibly none)."""

    level: int
    title: str
    sentences: tuple[str, ...]


def parse_article(path: str | os.PathLike, text: str) -> list[Section]:
    """The sections of one Wiki-format article, titles and levels kept (the training reader,
    ``segmenter.data.formats.parse_separator``, keeps only the segments). Lines before the
    first header form a preface; ``***LIST***.`` lines (removed lists) and blank lines are
    dropped; a line that starts like a header but is not one raises ReaderError naming the
    file and line."""
    sections: list[Section] = []
    level, title, sentences = 1, PREFACE, []
    started = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = WIKI_HEADER.match(line)
        if header:
            if started or sentences:
                sections.append(Section(level, title, tuple(sentences)))
            level, title, sentences, started = int(header.group(1)), header.group(2).strip(), [], True
            if level < 1:
                raise ReaderError(path, lineno, f"header level {level} < 1 in {line[:60]!r}")
            continue
        if line.startswith("========"):
            raise ReaderError(path, lineno, f"malformed header line {line[:60]!r}")
        if line and line != WIKI_LIST:
            sentences.append(line)
    if started or sentences:
        sections.append(Section(level, title, tuple(sentences)))
    if not any(s.sentences for s in sections):
        raise ReaderError(path, 0, "article without a sentence")
    return sections


def folder_pool(folder: str | os.PathLike) -> list[list[Section]]:
    """Every article under ``folder`` (recursive; Wiki-727K's layout or any other)."""
    return [parse_article(f, read_text(f)) for f in list_files(folder)]


def sentence_pool(
    sources: Mapping[str, Sequence[str]], *, seed: int = 0, section_length: tuple[int, int] = (3, 11)
) -> list[list[Section]]:
    """Articles made of plain texts (name -> sentences): a preface of up to 3 sentences,
    then sections of ``section_length`` consecutive sentences titled after the text."""
    lo, hi = section_length
    rng = random.Random(seed)
    articles = []
    for name in sorted(sources):
        sents = list(sources[name])
        if len(sents) < lo:
            continue
        article = [Section(1, PREFACE, tuple(sents[: min(3, len(sents))]))]
        i, part = min(3, len(sents)), 1
        while i < len(sents):
            n = rng.randint(lo, hi)
            article.append(Section(2, f"{name} {part}.", tuple(sents[i : i + n])))
            i, part = i + n, part + 1
        articles.append(article)
    if not articles:
        raise ValueError(f"no source text has {lo} sentences or more ({len(sources)} texts)")
    return articles


def builtin_pool() -> list[list[Section]]:
    """Articles made of the built-in corpus's source texts (CPython's documentation)."""
    from segmenter.data.builtin import source_sentences

    return sentence_pool(source_sentences())


def source_pool(folder: str | os.PathLike | None) -> tuple[str, list[list[Section]]]:
    """(name, articles) of ``folder`` when it is a folder, else of the built-in corpus."""
    if folder is not None and Path(folder).is_dir():
        return str(Path(folder).resolve()), folder_pool(folder)
    if folder is not None:
        log.warning("no Wiki-format folder at %s: sections come from the built-in corpus's sentences", folder)
    return "builtin", builtin_pool()


def pool_digest(articles: Iterable[Sequence[Section]]) -> str:
    """Hash of a pool's content: a corpus folder is only resumed from the same pool."""
    h = hashlib.sha1()
    for article in articles:
        for s in article:
            h.update(json.dumps([s.level, s.title, s.sentences]).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def article_id(index: int) -> str:
    return str(FIRST_ID + index)


def article_path(root: str | os.PathLike, index: int) -> Path:
    """``<root>/xx/yy/zz/<id>``, the folders the id's first three digit pairs (Wiki-727K's layout)."""
    name = article_id(index)
    return Path(root, name[0:2], name[2:4], name[4:6], name)


class ArticleDrawer:
    """Draws article ``i`` of a corpus from a pool (see the module's docstring)."""

    def __init__(self, pool: Sequence[Sequence[Section]], *, seed: int) -> None:
        if not pool or not any(s.sentences for a in pool for s in a):
            raise ValueError(f"the source pool has no sentence ({len(pool)} articles)")
        self.templates = [[s.level for s in article] for article in pool]
        self.by_level: dict[int, list[Section]] = {}
        for article in pool:
            for s in article:
                self.by_level.setdefault(s.level, []).append(s)
        self.seed = seed

    def draw(self, index: int) -> tuple[str, int, int]:
        """(text, sections, sentences) of article ``index``."""
        rng = random.Random(f"{self.seed}:{index}")  # per article: any article can be redrawn alone
        name = article_id(index)
        n = 0
        while n == 0:  # every section drawn empty: draw again (the reader refuses empty articles)
            lines, levels = [], rng.choice(self.templates)
            for level in levels:
                section = rng.choice(self.by_level[level])
                lines.append(f"========,{level},{section.title}")
                for sentence in section.sentences:
                    n += 1
                    lines.append(f"{sentence} (#{name}.{n})")
        return "\n".join(lines) + "\n", len(levels), n


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(root, MANIFEST)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_corpus(
    *,
    root: str | os.PathLike,
    num_articles: int,
    pool: Sequence[Sequence[Section]],
    pool_name: str = "",
    seed: int = 0,
) -> dict[str, Any]:
    """Write (or finish) a corpus of ``num_articles`` articles under ``root``; returns its
    statistics (articles, sections, sentences, bytes, generate_s, written, skipped, seconds).
    A folder that holds another corpus (another seed, pool content or size) raises
    ValueError; ``pool_name``, where the pool came from, is only recorded."""
    if num_articles < 1:
        raise ValueError(f"num_articles={num_articles} must be >= 1")
    if num_articles > 10**8 - FIRST_ID:
        raise ValueError(f"num_articles={num_articles}: ids would outgrow 8 digits")
    root = Path(root)
    # What decides the articles; the pool by its content (a moved pool folder is the same pool).
    settings = {"format": FORMAT, "num_articles": int(num_articles), "seed": int(seed), "pool": pool_digest(pool)}
    found = read_manifest(root)
    if found is not None and found.get("settings") != settings:
        raise ValueError(
            f"{root} holds another synthetic corpus ({root / MANIFEST}: {found.get('settings')}); "
            f"asked for {settings}: choose another folder or delete this one"
        )
    if found is not None and found.get("complete"):
        return {**found["stats"], "written": 0, "skipped": num_articles, "seconds": 0.0}
    if found is None and root.is_dir() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and holds no {MANIFEST}: choose an empty or new folder")
    manifest = {"settings": settings, "pool": pool_name}
    atomic_write(root / MANIFEST, json.dumps({**manifest, "complete": False}, indent=2) + "\n")

    drawer = ArticleDrawer(pool, seed=seed)
    start = time.perf_counter()
    stats = {"articles": int(num_articles), "sections": 0, "sentences": 0, "bytes": 0}
    written = skipped = 0
    folder = None
    for i in range(num_articles):
        text, sections, sentences = drawer.draw(i)
        data = text.encode("utf-8")
        stats["sections"] += sections
        stats["sentences"] += sentences
        stats["bytes"] += len(data)
        path = article_path(root, i)
        if path.parent != folder:
            folder = path.parent
            folder.mkdir(parents=True, exist_ok=True)
        if path.exists():  # only a rename puts a file there: it is whole
            skipped += 1
            continue
        # Temporary file + rename, as segmenter.core.io.atomic_file, without its fsync: a
        # killed run leaves no half article, and 727K fsyncs would take longer than the writing.
        tmp = path.with_name(f".{path.name}.tmp")  # hidden: readers skip it (list_files)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written += 1
        if (i + 1) % 100_000 == 0:
            log.info("%s: %d of %d articles", root, i + 1, num_articles)
    seconds = time.perf_counter() - start
    record = {**manifest, "complete": True, "stats": {**stats, "generate_s": seconds}}
    atomic_write(root / MANIFEST, json.dumps(record, indent=2) + "\n")
    return {**stats, "generate_s": seconds, "written": written, "skipped": skipped, "seconds": seconds}

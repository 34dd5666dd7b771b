"""Synthetic corpora in Wiki-727K's format (segmenter/data/synthetic_wiki.py): what they write
is what the wiki reader (data=wiki) reads, sentence for sentence; every sentence is unique;
the corpus depends on the seed only; an interrupted run resumes to the same corpus; a folder
holding another corpus is refused."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import segmenter.data.builtin
from segmenter.core.document import document_segments
from segmenter.data.corpora import SeparatorCorpus
from segmenter.data.formats import ReaderError
from segmenter.data.synthetic_wiki import (
    MANIFEST,
    ArticleDrawer,
    article_path,
    folder_pool,
    parse_article,
    read_manifest,
    source_pool,
    write_corpus,
)
from tests.helpers import write_wiki_pool

COUNTER = re.compile(r" \(#(\d{8})\.(\d+)\)$")
HEADER = re.compile(r"^========,(\d+),")


@pytest.fixture
def pool(tmp_path):
    return folder_pool(write_wiki_pool(tmp_path / "pool"))


def corpus_files(root: Path) -> dict[str, bytes]:
    """The articles (hidden files aside: the manifest, which records timings, and temporaries)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def nonempty_sections(text: str) -> int:
    """Sections with at least one sentence: header lines followed by a sentence line."""
    lines = text.splitlines()
    return sum(1 for a, b in zip(lines, lines[1:]) if HEADER.match(a) and not HEADER.match(b))


def test_the_wiki_reader_reads_the_corpus_back(tmp_path, pool):
    root = tmp_path / "corpus"
    stats = write_corpus(root=root, num_articles=30, pool=pool, pool_name="test", seed=3)
    assert stats["articles"] == 30 and stats["written"] == 30 and stats["skipped"] == 0
    docs = list(SeparatorCorpus(path=str(root)).read(str(root)))  # what data=wiki reads
    assert len(docs) == 30
    for i, doc in enumerate(sorted(docs, key=lambda d: d.id)):
        path = article_path(root, i)
        name = path.name
        # the dataset's layout: xx/yy/zz/<id>, the id's first three digit pairs
        assert doc.id == path.relative_to(root).as_posix() == f"{name[:2]}/{name[2:4]}/{name[4:6]}/{name}"
        assert len(document_segments(doc)) == nonempty_sections(path.read_text(encoding="utf-8"))
        assert [COUNTER.search(u).groups() for u in doc.units] == [(name, str(n)) for n in range(1, len(doc) + 1)]
    units = [u for d in docs for u in d.units]
    assert len(units) == stats["sentences"] and len(set(units)) == len(units)
    # every sentence is a pool sentence with its counter token; ***LIST*** lines are not copied
    pool_sentences = {s for article in pool for section in article for s in section.sentences}
    assert {COUNTER.sub("", u) for u in units} <= pool_sentences
    assert "***LIST***." not in pool_sentences
    headers = Counter(
        int(m.group(1))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
        for m in map(HEADER.match, p.read_text(encoding="utf-8").splitlines())
        if m
    )
    assert sum(headers.values()) == stats["sections"] and headers[1] == 30  # one preface per article
    assert read_manifest(root)["complete"] is True


def test_no_article_is_empty_when_most_pool_sections_are(tmp_path):
    pool = [parse_article(Path("a"), "========,1,preface.\n========,2,Empty.\n========,2,Full.\nOne sentence.\n")]
    pool.append(parse_article(Path("b"), "========,1,preface.\n========,2,Short.\nAnother.\n"))
    # every preface is empty, and a third of the level-2 sections: many draws come out empty
    root = tmp_path / "corpus"
    stats = write_corpus(root=root, num_articles=60, pool=pool)
    docs = list(SeparatorCorpus(path=str(root)).read(str(root)))  # an empty article would raise here
    assert len(docs) == 60 and all(len(d) >= 1 for d in docs)
    assert stats["sentences"] == sum(len(d) for d in docs)


def test_the_seed_alone_decides_the_corpus(tmp_path, pool):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_corpus(root=tmp_path / name, num_articles=25, pool=pool, seed=seed)
    a, b, c = (corpus_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_an_interrupted_run_resumes_to_the_same_corpus(tmp_path, pool, monkeypatch):
    write_corpus(root=tmp_path / "whole", num_articles=20, pool=pool, seed=0)
    draw = ArticleDrawer.draw

    def fail_at_12(self, index):
        if index == 12:
            raise KeyboardInterrupt
        return draw(self, index)

    monkeypatch.setattr(ArticleDrawer, "draw", fail_at_12)
    root = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        write_corpus(root=root, num_articles=20, pool=pool, seed=0)
    assert read_manifest(root)["complete"] is False
    assert len(corpus_files(root)) == 12
    stale = article_path(root, 12).with_name(f".{article_path(root, 12).name}.tmp")  # a write cut short
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("half an arti", encoding="utf-8")
    monkeypatch.setattr(ArticleDrawer, "draw", draw)
    stats = write_corpus(root=root, num_articles=20, pool=pool, seed=0)
    assert (stats["written"], stats["skipped"]) == (8, 12)
    assert corpus_files(root) == corpus_files(tmp_path / "whole")
    assert not stale.exists() and read_manifest(root)["complete"] is True
    again = write_corpus(root=root, num_articles=20, pool=pool, seed=0)
    assert (again["written"], again["skipped"], again["sentences"]) == (0, 20, stats["sentences"])


def test_a_folder_with_another_corpus_is_refused(tmp_path, pool):
    root = tmp_path / "corpus"
    write_corpus(root=root, num_articles=10, pool=pool, seed=0)
    for other in ({"seed": 1}, {"num_articles": 11}):
        with pytest.raises(ValueError, match="holds another synthetic corpus"):
            write_corpus(root=root, pool=pool, **{"num_articles": 10, "seed": 0, **other})
    with pytest.raises(ValueError, match="is not empty"):
        write_corpus(root=write_wiki_pool(tmp_path / "data"), num_articles=10, pool=pool)
    assert (root / MANIFEST).is_file() and not (tmp_path / "data" / MANIFEST).exists()


def test_without_a_wiki_folder_the_builtin_sentences_are_the_pool(tmp_path, monkeypatch):
    texts = {
        "pydoc:assert": [f"Assert statement sentence {i}." for i in range(12)],
        "stdlib:os.py": [f"Operating system sentence {i}." for i in range(7)],
        "stdlib:tiny.py": ["Too short to be a source."],
    }
    monkeypatch.setattr(segmenter.data.builtin, "source_sentences", lambda: texts)
    name, pool = source_pool(tmp_path / "absent")
    assert name == "builtin" and len(pool) == 2  # the 1-sentence text is left out
    for article in pool:
        assert article[0].level == 1 and all(s.level == 2 for s in article[1:])
    copied = [s for article in pool for section in article for s in section.sentences]
    assert sorted(copied) == sorted(texts["pydoc:assert"] + texts["stdlib:os.py"])  # each sentence once
    root = tmp_path / "corpus"
    write_corpus(root=root, num_articles=12, pool=pool, pool_name=name)
    assert len(list(SeparatorCorpus(path=str(root)).read(str(root)))) == 12


def test_a_malformed_header_names_the_file_and_line(tmp_path):
    with pytest.raises(ReaderError, match=r"a/1:3: malformed header line"):
        parse_article(Path("a/1"), "========,1,preface.\nA sentence.\n========,x,Bad.\n")
    with pytest.raises(ReaderError, match="without a sentence"):
        parse_article(Path("a/2"), "========,1,preface.\n========,2,Empty.\n")


def test_the_wiki_sample_is_read_whole(shared_data):
    articles = folder_pool(shared_data / "wiki727k_sample")
    levels = Counter(s.level for a in articles for s in a)
    assert len(articles) == 567
    assert dict(levels) == {1: 567, 2: 1757, 3: 626, 4: 45}  # ../shared/data/README.md's statistics

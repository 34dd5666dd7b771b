"""reStructuredText sources as sectioned documents (segmenter.data.rst)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from segmenter.core.document import group_segments
from segmenter.data.rst import RstCorpus, rst_sections

PAGE = """\
:mod:`json` --- JSON encoder and decoder
=========================================

.. module:: json
   :synopsis: Encode and decode the JSON format.

JSON is a lightweight data interchange format.  The :mod:`json` module exposes an API
familiar to users of :mod:`marshal` and :mod:`pickle`.

Basic Usage
-----------

.. function:: dump(obj, fp, *, skipkeys=False)

   Serialize *obj* as a JSON formatted stream to *fp* using :ref:`this table <py-to-json>`.
   If *skipkeys* is true, dict keys that are not of a basic type are skipped.

   .. versionchanged:: 3.6
      All optional parameters are now keyword-only.

Some code, which is no prose::

   >>> json.dumps(['foo', {'bar': ('baz', None, 1.0, 2)}])
   '["foo", {"bar": ["baz", null, 1.0, 2]}]'

.. code-block:: python

   print("no prose here either")

Encoders and Decoders
---------------------

A simple JSON decoder reads text.  It performs the following translations by default.

.. note::

   The decoder keeps the order of the keys as it read them.

Exceptions
----------

One line only.

Standard Compliance
-------------------

The JSON format is specified by :rfc:`7159` and by ECMA-404.  This section details the
module's level of compliance with the RFC.  For simplicity, subclasses are not considered.
"""

INDEX = """\
Index
=====

.. toctree::

   json
"""


def test_sections_keep_prose_of_directives_and_drop_code():
    sections = rst_sections(PAGE)
    assert [(level, title) for level, title, _ in sections] == [
        (1, "json --- JSON encoder and decoder"),
        (2, "Basic Usage"),
        (2, "Encoders and Decoders"),
        (2, "Exceptions"),
        (2, "Standard Compliance"),
    ]
    text = {title: " ".join(paras) for _, title, paras in sections}
    # roles become their text, `title <target>` its title; Sphinx directives hold prose
    assert "exposes an API familiar to users of marshal and pickle." in text["json --- JSON encoder and decoder"]
    assert "using this table." in text["Basic Usage"] and "keyword-only" in text["Basic Usage"]
    assert "Some code, which is no prose:" in text["Basic Usage"]
    assert "json.dumps" not in text["Basic Usage"] and "print(" not in text["Basic Usage"]
    assert "keeps the order of the keys" in text["Encoders and Decoders"]  # docutils' own note
    assert "specified by 7159 and by ECMA-404" in text["Standard Compliance"]


def test_each_section_is_a_segment_and_what_is_left_out_is_counted(tmp_path, caplog):
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "json.rst").write_text(PAGE)
    (tmp_path / "index.rst").write_text(INDEX)
    (tmp_path / "whatsnew").mkdir()
    (tmp_path / "whatsnew" / "3.11.rst").write_text(PAGE)
    corpus = RstCorpus(path=str(tmp_path), fractions=[1, 0, 0], exclude=["whatsnew/*"], min_segments=2)
    with caplog.at_level(logging.INFO, logger="segmenter.data.rst"):
        docs = corpus.load()["train"]
    assert [d.id for d in docs] == ["library/json.rst"]
    segments = group_segments(docs[0].units, docs[0].labels[:-1] + [1])
    # "Exceptions" has one sentence: joined to the section before it, not dropped
    assert len(segments) == 4
    assert segments[2][-1] == "One line only."
    assert segments[0][0] == "JSON is a lightweight data interchange format."
    assert "1 files with fewer than 2 sections of prose, not documents" in caplog.text  # the index page
    assert "1 short sections joined to the one before" in caplog.text


def test_bad_sources_are_named(tmp_path):
    bad = tmp_path / "bad.rst"
    bad.write_bytes(b"Title\n=====\n\n\xff\xfe not UTF-8\n")
    with pytest.raises(ValueError, match=r"bad\.rst:4: not UTF-8 \(byte 0xff at offset 13\)"):
        RstCorpus(path=str(tmp_path), fractions=[1, 0, 0]).load()
    with pytest.raises(ValueError, match=r"missing: no such file or folder"):
        RstCorpus(path=str(tmp_path / "missing"), fractions=[1, 0, 0]).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: folder has no files matching '\*\.rst\*'"):
        RstCorpus(path=str(tmp_path / "empty"), fractions=[1, 0, 0]).load()
    with pytest.raises(ValueError, match="min_sentences=0"):
        RstCorpus(path=str(tmp_path), min_sentences=0)


@pytest.mark.slow  # parses 233 pages: about 30 s here, a minute beside other jobs
def test_cpython_documentation_reads_as_sectioned_documents():
    """data=python_docs on the real sources, where `make python-docs` has fetched them."""
    from hydra.utils import instantiate

    from tests.helpers import ROOT, compose_train

    cfg = compose_train(ROOT / "outputs", ["data=python_docs"])  # the repository's outputs/cache
    if not Path(cfg.data.corpus.path).is_dir():
        pytest.skip(f"{cfg.data.corpus.path} is absent: `make python-docs` fetches it")
    docs = [d for split in instantiate(cfg.data.corpus).load().values() for d in split]
    segments = sum(sum(d.labels) + 1 for d in docs)
    assert len(docs) > 200 and segments > 2000  # CPython 3.11: 233 pages, 2,601 sections
    json = next(d for d in docs if d.id == "library/json.rst.txt")
    assert json.units[1].startswith("JSON (JavaScript Object Notation), specified by 7159")


def test_a_folder_of_rst_pages_trains_from_the_command_line(tmp_path):
    """data=python_docs pointed at a user's own folder of reStructuredText, as a user runs it:
    scripts/train.py reads the pages, trains, tests and writes the split file."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    pages = tmp_path / "pages"
    for i in range(10):  # 8/1/1 pages; each a few sections of numbered prose
        sections = "\n\n".join(
            f"Part {k}\n{'-' * (5 + len(str(k)))}\n\n"
            + " ".join(f"Page {i} part {k} sentence {j} is prose." for j in range(3))
            for k in range(4)
        )
        (pages / f"p{i}").mkdir(parents=True)
        (pages / f"p{i}" / "index.rst").write_text(f"Page {i}\n=======\n\n{sections}\n")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "scripts/train.py",
        "data=python_docs",
        f"data.corpus.path={pages}",
        "data.corpus.pattern=*.rst",
        "debug=fdr",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    splits = json.loads((run / "splits.json").read_text())["splits"]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [f"p{i}/index.rst" for i in range(10)]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert "train: 8 docs, 96 units, 32 segments" in (run / "train.log").read_text()

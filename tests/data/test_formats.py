"""File formats (segmenter/data/formats.py): separator files, JSONL, UTF-8, and their errors."""

from __future__ import annotations

import logging

import pytest

from segmenter.core.document import BOUNDARY, document_segments
from segmenter.data.formats import ReaderError, read_jsonl, read_separator_files
from tests.helpers import CHOI, jsonl, write

WIKI = """========,1,preface.
Alpha is a letter.
It comes first.
========,2,History.
========,3,Early.
The letter is old.
***LIST***.
It was used by many.
========,2,Use.
People write it.
"""


def test_choi_separator(tmp_path):
    write(tmp_path / "3-5" / "0.ref", CHOI)
    (doc,) = read_separator_files(tmp_path, root=tmp_path, subset_by_folder=True)
    assert doc.id == "3-5/0.ref" and doc.meta["subset"] == "3-5"
    assert "subset" not in read_separator_files(tmp_path, root=tmp_path)[0].meta
    assert document_segments(doc) == [["a one .", "a two ."], ["b one ."], ["c one .", "c two .", "c three ."]]
    assert doc.labels == [0, 1, 1, 0, 0, 0]  # the document end is no boundary


def test_wiki_headers_lists_empty_sections_and_levels(tmp_path):
    write(tmp_path / "12" / "34" / "56" / "789", WIKI)
    (doc,) = read_separator_files(tmp_path, root=tmp_path)  # recursive folder tree
    assert doc.id == "12/34/56/789"
    # The empty "History" section is skipped, the list placeholder dropped.
    assert document_segments(doc) == [
        ["Alpha is a letter.", "It comes first."],
        ["The letter is old.", "It was used by many."],
        ["People write it."],
    ]
    (doc2,) = read_separator_files(tmp_path, root=tmp_path, max_level=1)  # only level-1 boundaries
    assert len(document_segments(doc2)) == 1 and len(doc2) == 5


def test_list_of_files(tmp_path):
    a, b = write(tmp_path / "a", CHOI), write(tmp_path / "b", WIKI)
    assert [d.id for d in read_separator_files([a, b])] == ["a", "b"]


def test_byte_order_mark_is_not_text_and_binary_is_an_error(tmp_path):
    f = write(tmp_path / "bom", "\ufeff".encode() + CHOI.encode() if isinstance(CHOI, str) else b"\xef\xbb\xbf" + CHOI)
    (doc,) = read_separator_files(f)
    assert document_segments(doc) == [["a one .", "a two ."], ["b one ."], ["c one .", "c two .", "c three ."]]
    with pytest.raises(ReaderError, match=r"bin:2: binary file"):
        read_separator_files(write(tmp_path / "bin", b"==========\n\x00\x01\n"))


def test_not_utf8_names_file_and_line(tmp_path):
    f = write(tmp_path / "bad", b"==========\nfine .\ncaf\xe9 .\n")
    with pytest.raises(ReaderError, match=r"bad:3: not UTF-8"):
        read_separator_files(f)


def test_empty_folder_and_empty_document(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="empty.*no files"):
        read_separator_files(tmp_path / "empty")
    write(tmp_path / "docs" / "ok", CHOI)
    write(tmp_path / "docs" / "blank", "==========\n==========\n")
    with pytest.raises(ReaderError, match="blank: empty document"):
        read_separator_files(tmp_path / "docs")
    with caplog.at_level(logging.WARNING):
        docs = read_separator_files(tmp_path / "docs", on_error="skip")
    assert [d.id for d in docs] == ["ok"]
    assert "skipped 1 bad document" in caplog.text


def test_jsonl_section_and_boundary_labels(tmp_path):
    f = jsonl(tmp_path, [{"id": "s1", "lines": ["a", "b", "c"], "labels": [0, "chorus", 0]}])
    (doc,) = read_jsonl(f, label_names=["verse", "chorus"])
    assert doc.labels == [0, 1, 0] and doc.meta["line"] == 1
    g = jsonl(tmp_path, [{"id": "s1", "lines": ["a", "b", "c", "d"], "labels": [1, 0, 1, 0]}], "b.jsonl")
    (doc,) = read_jsonl(g, label_names=["inside", "boundary"], label_mode=BOUNDARY)
    assert doc.labels == [0, 1, 0, 0]  # line 2 starts a segment: line 1 ends one


@pytest.mark.parametrize(
    "row,problem",
    [
        ('{"id": "x", "lines": ["a"', "malformed JSON"),
        ({"id": "x", "lines": ["a", "b"], "labels": [0]}, "2 lines but 1 labels"),
        ({"id": "x", "lines": ["a"], "labels": ["bridge"]}, "unknown label 'bridge'"),
        ({"id": "x", "lines": ["a"], "labels": [7]}, "unknown label 7"),
        ({"id": "x", "lines": [], "labels": []}, "empty document"),
        ({"id": "x", "text": "a"}, "expected an object"),
    ],
)
def test_jsonl_errors_name_file_line_and_problem(tmp_path, row, problem):
    good = {"id": "ok", "lines": ["a"], "labels": [0]}
    f = jsonl(tmp_path, [good, row])
    with pytest.raises(ReaderError, match=rf"d\.jsonl:2: .*{problem}"):
        read_jsonl(f, label_names=["verse", "chorus"])


def test_jsonl_skip_counts(tmp_path, caplog):
    f = jsonl(tmp_path, [{"id": "ok", "lines": ["a"], "labels": [0]}, "not json", "{}"])
    with caplog.at_level(logging.WARNING):
        docs = read_jsonl(f, label_names=["verse", "chorus"], on_error="skip")
    assert [d.id for d in docs] == ["ok"]
    assert "skipped 2 bad document" in caplog.text


def test_join_sections_makes_fewer_longer_segments(tmp_path):
    write(tmp_path / "0.ref", CHOI)  # segments of 2, 1 and 3 units
    (doc,) = read_separator_files(tmp_path, join_sections=2)
    assert document_segments(doc) == [["a one .", "a two .", "b one ."], ["c one .", "c two .", "c three ."]]
    assert doc.units == read_separator_files(tmp_path)[0].units  # the same units, fewer boundaries
    (whole,) = read_separator_files(tmp_path, join_sections=3)
    assert len(document_segments(whole)) == 1 and sum(whole.labels) == 0
    with pytest.raises(ValueError, match="join_sections=0"):
        read_separator_files(tmp_path, join_sections=0)


def test_folder_files_come_one_at_a_time_in_sorted_path_order(tmp_path):
    from segmenter.data.formats import iter_files, list_files

    # Paths sort part by part ("a/b" before "a-c"), not as strings; hidden files are left out.
    for rel in ["a/b", "a-c", "a/.hidden", "a.x/y", "ab", "A/z", "a/b2/c", "a/b2.txt", "10/x", "9/x", "é", "a/b1/ä"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    for pattern in ("*", "*.txt", "b*"):
        expected = sorted(f for f in tmp_path.rglob(pattern) if f.is_file() and not f.name.startswith("."))
        files = iter_files(tmp_path, pattern=pattern)
        assert not isinstance(files, list) and list(files) == expected == list_files(tmp_path, pattern=pattern)

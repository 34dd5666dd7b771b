"""Separator-format and JSONL readers, splits, and their errors."""

from __future__ import annotations

import json
import logging

import pytest

from segmenter.data.document import BOUNDARY, SECTION, document_segments
from segmenter.data.readers import (
    ChoiCorpus,
    JsonlCorpus,
    ReaderError,
    SeparatorCorpus,
    read_jsonl,
    read_separator_files,
)
from segmenter.data.splits import random_split

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

CHOI = """==========
a one .
a two .
==========
b one .
==========
c one .
c two .
c three .
==========
"""


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


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


def jsonl(tmp_path, rows, name="d.jsonl"):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return write(tmp_path / name, "\n".join(lines) + "\n")


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


def test_random_split_is_seeded_document_level_and_order_free(tmp_path):
    rows = [{"id": f"d{i}", "lines": ["a", "b"], "labels": [0, 1]} for i in range(20)]
    corpus = JsonlCorpus(path=str(jsonl(tmp_path, rows)), label_names=["verse", "chorus"], seed=3)
    a = corpus.load()
    assert corpus.task == SECTION and [len(a[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    docs = [d for s in a.values() for d in s]
    b = random_split(list(reversed(docs)), fractions=(0.8, 0.1, 0.1), seed=3)
    assert {s: [d.id for d in v] for s, v in a.items()} == {s: [d.id for d in v] for s, v in b.items()}
    assert len({d.id for d in docs}) == 20


def test_separator_corpus_files_per_split(tmp_path):
    for split in ("train", "val", "test"):
        write(tmp_path / split / "x", CHOI)
    corpus = SeparatorCorpus(files={s: str(tmp_path / s) for s in ("train", "val", "test")})
    assert corpus.task == BOUNDARY and {s: len(d) for s, d in corpus.load().items()} == {"train": 1, "val": 1, "test": 1}


def test_choi_source_disjoint_split_never_trains_on_test_text(tmp_path):
    # 3 "test" documents in folder 1 and 2 in folder 4; texts are known by first sentence.
    texts = {k: [f"{k} sentence {i} ." for i in range(8)] for k in "abcdefghijklmnop"}

    def doc(keys, n=4):
        return "".join("==========\n" + "\n".join(texts[k][:n]) + "\n" for k in keys) + "==========\n"

    write(tmp_path / "1" / "3-5" / "0.ref", doc("abc"))
    write(tmp_path / "1" / "3-5" / "1.ref", doc("bcd"))
    write(tmp_path / "4" / "3-5" / "0.ref", doc("aefghijk", 8))
    write(tmp_path / "4" / "3-5" / "1.ref", doc("lmnop", 8))
    corpus = ChoiCorpus(root=str(tmp_path), test_folders=["1"], num_docs={"train": 5, "val": 2},
                        segments_per_doc=3, segment_length=[2, 4], val_fraction=0.25)
    splits = corpus.load()
    assert [d.id for d in splits["test"]] == ["1/3-5/0.ref", "1/3-5/1.ref"]
    test_sentences = {u for d in splits["test"] for u in d.units}
    for split in ("train", "val"):
        assert len(splits[split]) == {"train": 5, "val": 2}[split]
        for d in splits[split]:
            assert not test_sentences & set(d.units)
            assert len(document_segments(d)) == 3
    train_words = {u.split()[0] for d in splits["train"] for u in d.units}
    val_words = {u.split()[0] for d in splits["val"] for u in d.units}
    assert not train_words & val_words  # val texts are held out from training too
    assert corpus.load()["train"][0].units == splits["train"][0].units  # seeded


def test_real_choi_and_wiki(shared_data):
    choi = ChoiCorpus(root=str(shared_data / "choi"), num_docs={"train": 10, "val": 5}).load()
    assert len(choi["test"]) == 700 and {d.meta["subset"] for d in choi["test"]} == {"3-5", "6-8", "9-11", "3-11"}
    wiki = read_separator_files(shared_data / "wiki727k_sample", root=shared_data / "wiki727k_sample")
    assert len(wiki) == 567 and not any("***LIST***." in d.units for d in wiki)


def test_jsonl_config_builds_a_section_model(tmp_path):
    from segmenter.train import build
    from tests.conftest import compose_train

    rows = [{"id": f"s{i}", "lines": ["la", "la", "oh", "oh", "la"], "labels": ["verse", "verse", "chorus", "chorus", "verse"]}
            for i in range(10)]  # fmt: skip
    f = jsonl(tmp_path, rows)
    dm, model = build(compose_train(tmp_path, ["data=jsonl", f"data.corpus.path={f}"]))
    assert dm.task == SECTION and model.net.num_classes == 2
    import torch

    metrics = model.metrics["val_metrics"]
    metrics.update(torch.tensor([[0, 0, 1, 1, 0]]), torch.tensor([[0, 0, 1, 1, 0]]))
    out = metrics.compute()
    assert {"val/f1", "val/f1_verse", "val/f1_chorus", "val/pk", "val/boundary_f1"} <= set(out)
    assert float(out["val/f1"]) == 1.0 and float(out["val/pk"]) == 0.0
    assert (tmp_path / "run" / "splits.json").is_file()


@pytest.mark.parametrize("option", ["choi", "wiki"])
def test_shared_corpus_configs_build(tmp_path, shared_data, option):
    from segmenter.train import build
    from tests.conftest import compose_train

    extra = ["data.corpus.num_docs={train: 8, val: 4}"] if option == "choi" else []
    dm, model = build(compose_train(tmp_path, [f"data={option}", *extra]))
    assert dm.task == BOUNDARY and all(dm.splits[s] for s in ("train", "val", "test"))
    assert (tmp_path / "run" / "splits.json").is_file()

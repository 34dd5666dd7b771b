"""Corpora (segmenter/data/corpora.py): splits, Choi's source-disjoint split, the data
configs that build them, and the old import paths run configs name."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from segmenter.core.document import BOUNDARY, SECTION, document_segments
from segmenter.data.corpora import ChoiCorpus, JsonlCorpus, SeparatorCorpus
from segmenter.data.formats import read_separator_files
from segmenter.data.splits import random_split
from segmenter.training.train import build
from tests.helpers import CHOI, compose_train, jsonl, write


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
    assert corpus.task == BOUNDARY and {s: len(d) for s, d in corpus.load().items()} == {
        "train": 1,
        "val": 1,
        "test": 1,
    }


def test_choi_source_disjoint_split_never_trains_on_test_text(tmp_path):
    # 3 "test" documents in folder 1 and 2 in folder 4; texts are known by first sentence.
    texts = {k: [f"{k} sentence {i} ." for i in range(8)] for k in "abcdefghijklmnop"}

    def doc(keys, n=4):
        return "".join("==========\n" + "\n".join(texts[k][:n]) + "\n" for k in keys) + "==========\n"

    write(tmp_path / "1" / "3-5" / "0.ref", doc("abc"))
    write(tmp_path / "1" / "3-5" / "1.ref", doc("bcd"))
    write(tmp_path / "4" / "3-5" / "0.ref", doc("aefghijk", 8))
    write(tmp_path / "4" / "3-5" / "1.ref", doc("lmnop", 8))
    corpus = ChoiCorpus(
        root=str(tmp_path),
        test_folders=["1"],
        num_docs={"train": 5, "val": 2},
        segments_per_doc=3,
        segment_length=[2, 4],
        val_fraction=0.25,
    )
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
    rows = [
        {
            "id": f"s{i}",
            "lines": ["la", "la", "oh", "oh", "la"],
            "labels": ["verse", "verse", "chorus", "chorus", "verse"],
        }
        for i in range(10)
    ]
    f = jsonl(tmp_path, rows)
    dm, model = build(compose_train(tmp_path, ["data=jsonl", f"data.corpus.path={f}"]))
    assert dm.task == SECTION and model.net.num_classes == 2
    metrics = model.metrics["val_metrics"]
    metrics.update(torch.tensor([[0, 0, 1, 1, 0]]), torch.tensor([[0, 0, 1, 1, 0]]))
    out = metrics.compute()
    assert {"val/f1", "val/f1_verse", "val/f1_chorus", "val/pk", "val/boundary_f1"} <= set(out)
    assert float(out["val/f1"]) == 1.0 and float(out["val/pk"]) == 0.0
    assert (tmp_path / "run" / "splits.json").is_file()


@pytest.mark.parametrize("option", ["choi", "wiki"])
def test_shared_corpus_configs_build(tmp_path, shared_data, option):
    extra = ["data.corpus.num_docs={train: 8, val: 4}"] if option == "choi" else []
    dm, model = build(compose_train(tmp_path, [f"data={option}", *extra]))
    assert dm.task == BOUNDARY and all(dm.splits[s] for s in ("train", "val", "test"))
    assert (tmp_path / "run" / "splits.json").is_file()


def test_run_configs_of_0_1_0_still_build_their_corpus(tmp_path):
    """Run configs saved before the restructure name segmenter.data.readers.<Corpus>;
    scripts/evaluate.py instantiates them."""
    write(tmp_path / "docs" / "a", CHOI)
    write(tmp_path / "docs" / "b", CHOI)
    old = OmegaConf.create(
        {
            "_target_": "segmenter.data.readers.SeparatorCorpus",
            "path": str(tmp_path / "docs"),
            "fractions": [0.5, 0.5, 0.0],
        }
    )
    corpus = hydra.utils.instantiate(old)
    assert type(corpus) is SeparatorCorpus and sum(len(d) for d in corpus.load().values()) == 2

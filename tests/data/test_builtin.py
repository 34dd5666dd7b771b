from segmenter.core.document import boundary_labels, document_segments
from segmenter.data.builtin import BuiltinCorpus, source_texts

SMALL = dict(num_docs={"train": 12, "val": 4, "test": 4}, segments_per_doc=5)


def test_deterministic_and_cached(tmp_path):
    a = BuiltinCorpus(**SMALL, cache_dir=tmp_path).load()
    assert BuiltinCorpus(**SMALL, cache_dir=tmp_path).cache_path.exists()
    b = BuiltinCorpus(**SMALL, cache_dir=None).load()  # rebuilt from scratch
    assert [d.units for d in a["test"]] == [d.units for d in b["test"]]
    assert [d.labels for d in a["train"]] == [d.labels for d in b["train"]]


def test_settings_change_the_cache_key(tmp_path):
    a = BuiltinCorpus(**SMALL, cache_dir=tmp_path)
    b = BuiltinCorpus(**{**SMALL, "segments_per_doc": 6}, cache_dir=tmp_path)
    c = BuiltinCorpus(**SMALL, seed=1, cache_dir=tmp_path)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert all(len(document_segments(d)) == 6 for d in b.load()["val"])


def test_splits_share_no_source_text():
    splits = BuiltinCorpus(num_docs={"train": 200, "val": 50, "test": 50}).load()
    sources = {s: {src for d in docs for src in d.meta["sources"]} for s, docs in splits.items()}
    assert sources["train"].isdisjoint(sources["val"])
    assert sources["train"].isdisjoint(sources["test"])
    assert sources["val"].isdisjoint(sources["test"])
    # and no sentence of a validation or test document was seen in training
    train_units = {u for d in splits["train"] for u in d.units}
    assert not train_units & {u for s in ("val", "test") for d in splits[s] for u in d.units}


def test_documents_are_choi_style():
    docs = BuiltinCorpus(**SMALL, segment_length=(3, 5)).load()["train"]
    for d in docs:
        segs = document_segments(d)
        assert len(segs) == 5
        assert all(1 <= len(s) <= 5 for s in segs)
        assert d.labels[-1] == 0 and sum(boundary_labels(d.labels, "boundary")) == 4
        srcs = d.meta["sources"]
        assert all(a != b for a, b in zip(srcs, srcs[1:]))


def test_source_texts_are_prose():
    texts = source_texts()
    assert len(texts) > 150 and "pydoc:assert" in texts


def test_describe_counts_every_split():
    from segmenter.data.builtin import describe

    table = describe(BuiltinCorpus(**SMALL))
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["train", "val", "test"]
    assert "| 12 |" in table.splitlines()[2]

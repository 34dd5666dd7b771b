"""The on-disk unit-embedding cache, with a fake encoder (no MiniLM needed)."""

from __future__ import annotations

import logging
import pickle
import zlib

import pytest
import torch

from segmenter.models.embedding_cache import HEADER, UnitEmbeddingCache, identity_hash
from tests.helpers import tamper_cache_entry

DIM = 6
IDENTITY = {"model": "fake", "version": 1}
TEXTS = ["the cat sat", "on the mat", "stock prices fell", "the cat sat", "", "naïve café ☕"]


class FakeEncoder:
    """Deterministic vectors per text; records which texts it was asked to encode."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_after = fail_after

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.fail_after is not None and len(self.calls) + len(texts) > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += texts
        g = [torch.Generator().manual_seed(zlib.crc32(t.encode())) for t in texts]
        return torch.stack([torch.randn(DIM, generator=gi) for gi in g])  # (n, D)


def shards(cache: UnitEmbeddingCache):
    return sorted(cache.dir.glob("shard-*.bin"))


def test_each_unique_text_is_encoded_once_and_reread_identically(tmp_path):
    enc = FakeEncoder()
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path, shard_size=2)
    first = cache.lookup(TEXTS, enc, batch_size=2)
    assert first.shape == (len(TEXTS), DIM)
    assert sorted(enc.calls) == sorted(set(TEXTS))  # the duplicate is encoded once
    torch.testing.assert_close(first[0], first[3], rtol=0, atol=0)
    assert torch.equal(cache.lookup(TEXTS, enc), first) and len(enc.calls) == len(set(TEXTS))

    again = FakeEncoder()  # a new run: everything comes from disk
    reread = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, again)
    assert again.calls == [] and torch.equal(reread, first)
    assert (cache.dir / "identity.json").exists()


def test_a_different_encoder_identity_does_not_see_the_entries(tmp_path):
    UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, FakeEncoder())
    other = {**IDENTITY, "version": 2}
    assert identity_hash(other) != identity_hash(IDENTITY)
    enc = FakeEncoder()
    UnitEmbeddingCache(identity=other, dim=DIM, root=tmp_path).lookup(TEXTS, enc)
    assert sorted(enc.calls) == sorted(set(TEXTS))


def test_a_corrupt_entry_is_detected_and_recomputed(tmp_path, caplog):
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path)
    good = cache.lookup(TEXTS, FakeEncoder())
    (path,) = shards(cache)
    tamper_cache_entry(path, row=1, dim=DIM)  # one changed value, checksum left as it was

    enc = FakeEncoder()
    with caplog.at_level(logging.WARNING):
        out = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, enc)
    assert len(enc.calls) == 1  # only the tampered entry
    assert torch.equal(out, good)
    assert "fail their checksum" in caplog.text
    enc2 = FakeEncoder()  # repaired on disk: the next run trusts everything again
    UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, enc2)
    assert enc2.calls == []


def test_an_unreadable_shard_is_dropped_and_recomputed(tmp_path, caplog):
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path)
    good = cache.lookup(TEXTS, FakeEncoder())
    (path,) = shards(cache)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash mid-write without rename
    enc = FakeEncoder()
    with caplog.at_level(logging.WARNING):
        fresh = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path)
        out = fresh.lookup(TEXTS, enc)
    assert sorted(enc.calls) == sorted(set(TEXTS)) and torch.equal(out, good)
    assert "corrupt embedding cache shard" in caplog.text and not path.exists()


def test_an_interrupted_pass_keeps_the_shards_it_wrote(tmp_path):
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path, shard_size=2)
    unique = list(dict.fromkeys(TEXTS))
    with pytest.raises(KeyboardInterrupt):
        cache.lookup(unique, FakeEncoder(fail_after=3), batch_size=1)  # dies inside the 2nd shard
    assert len(shards(cache)) == 1
    assert not list(cache.dir.glob("*.tmp"))
    enc = FakeEncoder()
    UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(unique, enc)
    assert len(enc.calls) == len(unique) - 2


def test_many_small_shards_are_compacted(tmp_path):
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path)
    for t in TEXTS:  # one shard per call, as lazy per-batch encoding writes them
        cache.lookup([t], FakeEncoder())
    assert len(shards(cache)) == len(set(TEXTS))
    want = cache.lookup(TEXTS, FakeEncoder())
    merged = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path, max_shards=2)  # on opening
    assert len(shards(merged)) == 1
    enc = FakeEncoder()
    assert torch.equal(merged.lookup(TEXTS, enc), want) and enc.calls == []
    more = [f"sentence {i}" for i in range(5)]
    for t in more:  # and while running: never more than max_shards shards to search
        merged.lookup([t], FakeEncoder())
        assert len(shards(merged)) <= 2
    enc = FakeEncoder()
    UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS + more, enc)
    assert enc.calls == []


def test_vectors_are_float16_on_disk_and_the_same_fresh_or_cached(tmp_path):
    enc = FakeEncoder()
    fresh = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, enc)
    exact = enc(TEXTS)
    torch.testing.assert_close(fresh, exact.half().float(), rtol=0, atol=0)  # rounded as stored
    assert not torch.equal(fresh, exact)
    (path,) = shards(UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path))
    assert path.stat().st_size == HEADER.size + 5 * (8 + 32 + 4 + 2 * DIM)  # 5 unique texts, 2 bytes a value
    assert torch.equal(UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(TEXTS, enc), fresh)


def test_cached_vectors_are_read_from_disk_not_held_in_memory(tmp_path):
    texts = [f"unit {i}" for i in range(2000)]
    UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path).lookup(texts, FakeEncoder())
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path)
    enc = FakeEncoder()
    cache.lookup(texts, enc)
    assert enc.calls == [] and len(cache) == 2000
    assert cache._vectors.numel() == 0  # nothing copied into memory: the shards are memory-mapped
    restored = pickle.loads(pickle.dumps(cache))  # as DataLoader workers get it: maps reopened, not copied
    assert len(pickle.dumps(cache)) < 10_000 and torch.equal(
        restored.lookup(texts[:3], enc), cache.lookup(texts[:3], enc)
    )


def test_an_unwritable_cache_dir_falls_back_to_memory(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=blocker)
    assert cache.dir is None and "embedding cache disabled" in caplog.text
    enc = FakeEncoder()
    cache.lookup(TEXTS, enc)
    cache.lookup(TEXTS, enc)
    assert len(enc.calls) == len(set(TEXTS))


def test_a_wrong_width_from_the_encoder_is_an_error(tmp_path):
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM + 1, root=None)
    with pytest.raises(ValueError, match="width 7"):
        cache.lookup(["x"], FakeEncoder())


def test_progress_is_log_lines_never_a_bar(tmp_path, caplog, capfd, monkeypatch):
    from segmenter.core.progress import Progress

    monkeypatch.setattr(Progress, "every", 0.0)
    texts = [f"text number {i}" for i in range(40)]
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=None)
    with caplog.at_level(logging.INFO, logger="segmenter.models.embedding_cache"):
        cache.lookup(texts[:20], FakeEncoder(), batch_size=2, progress=True)
        shown = [r.getMessage() for r in caplog.records]
        caplog.clear()
        cache.lookup(texts[20:], FakeEncoder(), batch_size=2, progress=False)
        assert not caplog.records
    assert any(m.startswith("encoding units: ") and "/20 units" in m for m in shown), shown
    assert shown[-1].startswith("encoded 20 new units in"), shown
    assert capfd.readouterr().err == ""  # the application decides where log lines go


def test_a_compaction_merges_a_bounded_number_of_entries(tmp_path, monkeypatch):
    import segmenter.models.embedding_cache as embedding_cache

    monkeypatch.setattr(embedding_cache, "MERGE_ENTRIES", 6)  # shards of 3 or more are left as they are
    merged: list[int] = []
    merge = embedding_cache.UnitEmbeddingCache._merge
    monkeypatch.setattr(
        embedding_cache.UnitEmbeddingCache,
        "_merge",
        lambda self, shards: merged.append(sum(s.n for s in shards)) or merge(self, shards),
    )
    cache = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path, max_shards=2)
    texts = [f"unit {i}" for i in range(20)]
    for t in texts:  # one shard per call
        cache.lookup([t], FakeEncoder())
    assert merged and max(merged) <= 6  # never the whole cache at once
    assert sum(s.n < 3 for s in cache._shards.values()) <= 2  # at most max_shards small shards
    enc = FakeEncoder()
    reopened = UnitEmbeddingCache(identity=IDENTITY, dim=DIM, root=tmp_path, max_shards=2)
    assert torch.equal(reopened.lookup(texts, enc), cache.lookup(texts, FakeEncoder())) and enc.calls == []

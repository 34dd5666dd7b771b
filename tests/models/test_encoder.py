import torch

from segmenter.models.encoder import HashedNgramEncoder, hashed_features, pad_units


def test_features_are_stable_and_overlap_tracks_shared_words():
    a = hashed_features("The cat sat on the mat.", 4096, 3)
    assert a == hashed_features("The cat sat on the mat.", 4096, 3)
    assert all(0 <= i < 4096 for i in a)
    enc = HashedNgramEncoder(dim=8)
    ids, offsets, norm = enc.featurize(["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply"])
    bags = torch.nn.functional.embedding_bag(ids, enc.codes, offsets, mode="sum", per_sample_weights=norm)
    bags = torch.nn.functional.normalize(bags, dim=-1)
    assert bags[0] @ bags[1] > bags[0] @ bags[2] + 0.3


def test_codebook_is_rebuilt_from_seed_not_saved():
    a, b = HashedNgramEncoder(dim=8, seed=3), HashedNgramEncoder(dim=8, seed=3)
    assert torch.equal(a.codes, b.codes)
    assert "codes" not in a.state_dict()
    assert not torch.equal(a.codes, HashedNgramEncoder(dim=8, seed=4).codes)


def test_forward_pads_documents():
    enc = HashedNgramEncoder(dim=16, num_buckets=512, code_dim=32)
    x, mask = enc([["one unit", "two units", "three"], ["alone"]])
    assert x.shape == (2, 3, 16) and mask.tolist() == [[True, True, True], [True, False, False]]
    assert x[1, 1:].abs().sum() == 0
    # the same document alone encodes identically
    torch.testing.assert_close(enc([["alone"]])[0][0, 0], x[1, 0])


def test_empty_unit_and_punctuation_encode():
    enc = HashedNgramEncoder(dim=4, num_buckets=64, code_dim=8)
    x, _ = enc([["", "...", "ok"]])
    assert torch.isfinite(x).all()


def test_pad_units_roundtrip():
    v = torch.arange(10.0).view(5, 2)
    out, mask = pad_units(v, [2, 3])
    assert torch.equal(out[mask], v)


def test_frozen_vectors_ignore_learned_weights_and_track_overlap():
    enc = HashedNgramEncoder(dim=8, num_buckets=4096, code_dim=64)
    units = ["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply"]
    before = enc.frozen_units(units)
    with torch.no_grad():
        enc.feature_weight.mul_(torch.rand_like(enc.feature_weight))  # training moves these
    torch.testing.assert_close(enc.frozen_units(units), before)
    u = torch.nn.functional.normalize(before, dim=-1)
    assert u[0] @ u[1] > u[0] @ u[2] + 0.3
    e, mask = enc.frozen([units[:2], units[2:]])
    assert e.shape == (2, 2, 64) and mask.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(e[1, 0], before[2])


def test_encode_with_frozen_equals_both_separately():
    enc = HashedNgramEncoder(dim=8, num_buckets=512, code_dim=16)
    docs = [["one unit", "two units", "three"], ["alone"]]
    x, e, mask = enc.encode_with_frozen(docs)
    torch.testing.assert_close((x, mask), enc(docs))
    torch.testing.assert_close((e, mask), enc.frozen(docs))

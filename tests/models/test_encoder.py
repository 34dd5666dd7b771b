import torch
import torch.nn.functional as F

from segmenter.features import Featurizer
from segmenter.models.encoder import HashedNgramEncoder, pad_units


def batch(enc, docs):
    """The featurized batch of ``docs`` for ``enc`` and its mask."""
    feats = Featurizer.for_net(enc).batch(docs)
    return feats, feats["mask"]


def test_overlap_of_hashed_bags_tracks_shared_words():
    enc = HashedNgramEncoder(dim=8)
    feats, _ = batch(enc, [["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply"]])
    bags = torch.nn.functional.normalize(enc.frozen_units(feats), dim=-1)
    assert bags[0] @ bags[1] > bags[0] @ bags[2] + 0.3


def test_codebook_is_rebuilt_from_seed_not_saved():
    a, b = HashedNgramEncoder(dim=8, seed=3), HashedNgramEncoder(dim=8, seed=3)
    assert torch.equal(a.codes, b.codes)
    assert "codes" not in a.state_dict()
    assert not torch.equal(a.codes, HashedNgramEncoder(dim=8, seed=4).codes)


def test_forward_pads_documents():
    enc = HashedNgramEncoder(dim=16, num_buckets=512, code_dim=32)
    feats, mask = batch(enc, [["one unit", "two units", "three"], ["alone"]])
    x = enc(feats, mask)
    assert x.shape == (2, 3, 16) and mask.tolist() == [[True, True, True], [True, False, False]]
    assert x[1, 1:].abs().sum() == 0
    # the same document alone encodes identically
    torch.testing.assert_close(enc(*batch(enc, [["alone"]]))[0, 0], x[1, 0])


def test_empty_unit_and_punctuation_encode():
    enc = HashedNgramEncoder(dim=4, num_buckets=64, code_dim=8)
    x = enc(*batch(enc, [["", "...", "ok"]]))
    assert torch.isfinite(x).all()


def test_pad_units_roundtrip():
    v = torch.arange(10.0).view(5, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = pad_units(v, mask)
    assert out.shape == (2, 3, 2) and torch.equal(out[mask], v) and out[0, 2].abs().sum() == 0


def test_frozen_vectors_ignore_learned_weights_and_track_overlap():
    enc = HashedNgramEncoder(dim=8, num_buckets=4096, code_dim=64)
    units = ["the cat sat on the mat", "a cat sat on a mat", "stock prices fell sharply"]
    feats, _ = batch(enc, [units])
    before = enc.frozen_units(feats)
    with torch.no_grad():
        enc.feature_weight.mul_(torch.rand_like(enc.feature_weight))  # training moves these
    torch.testing.assert_close(enc.frozen_units(feats), before)
    u = torch.nn.functional.normalize(before, dim=-1)
    assert u[0] @ u[1] > u[0] @ u[2] + 0.3
    feats, mask = batch(enc, [units[:2], units[2:]])
    e = enc.frozen(feats, mask)
    assert e.shape == (2, 2, 64) and mask.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(e[1, 0], before[2])


def test_encode_with_frozen_equals_both_separately():
    enc = HashedNgramEncoder(dim=8, num_buckets=512, code_dim=16)
    feats, mask = batch(enc, [["one unit", "two units", "three"], ["alone"]])
    x, e = enc.encode_with_frozen(feats, mask)
    torch.testing.assert_close(x, enc(feats, mask))
    torch.testing.assert_close(e, enc.frozen(feats, mask))


def test_each_feature_counts_one_over_the_root_of_its_units_size():
    """The frozen bag of a unit with n features weighs each 1/sqrt(n): equal to weights spread
    over the ids by repeat_interleave (the encoder avoids it, whose length ONNX cannot trace)."""
    enc = HashedNgramEncoder(dim=8, num_buckets=256, code_dim=16)
    feats, _ = batch(enc, [["a b c d e f", "x", "one two"], ["alone here"]])
    ids, sizes = feats["hashed_ids"], feats["hashed_sizes"]
    norm = torch.repeat_interleave(sizes.float().rsqrt(), sizes)  # (F,)
    expected = F.embedding_bag(ids, enc.codes, torch.cumsum(sizes, 0) - sizes, mode="sum", per_sample_weights=norm)
    assert torch.equal(enc.frozen_units(feats), expected)

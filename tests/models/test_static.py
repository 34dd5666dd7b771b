"""The static encoder (model2vec vectors distilled from MiniLM, shipped in the package):
the featurizer's vectors are model2vec's own, the encoder projects them, checkpoints rebuild
it by name, and a training run through the real configs works with it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from model2vec import StaticModel

from segmenter.features import Featurizer, StaticVectors
from segmenter.inference.api import Segmenter
from segmenter.models.static import StaticEncoder, static_model_dir
from segmenter.training.train import train

SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on the rug.",
    "The central bank raised interest rates again.",
    "Interest rates were increased by the central bank.",
    "Photosynthesis turns sunlight into chemical energy.",
]


def test_vectors_are_model2vecs_own_unit_length_and_offline(no_network):
    feature = StaticVectors(model_dir=static_model_dir("minilm-static"))
    v = feature(SENTENCES)["static_vectors"]  # (5, 256)
    reference = StaticModel.from_pretrained(static_model_dir("minilm-static")).encode(SENTENCES)
    assert v.shape == (5, 256) and v.dtype == torch.float32
    np.testing.assert_allclose(v.numpy(), reference.astype(np.float32), atol=1e-6)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(5), atol=1e-3, rtol=0)


def test_paraphrases_are_closer_than_unrelated_sentences():
    v = StaticVectors(model_dir=static_model_dir("minilm-static"))(SENTENCES)["static_vectors"]
    cos = v @ v.T  # (5, 5), unit vectors
    assert cos[0, 1] > cos[0, 2] and cos[0, 1] > cos[0, 4]  # cat ~ cat, not banks or plants
    assert cos[2, 3] > cos[2, 0] and cos[2, 3] > cos[2, 4]


def test_a_units_vector_does_not_depend_on_its_batch():
    feature = StaticVectors(model_dir=static_model_dir("minilm-static"))
    alone = feature(SENTENCES[:1])["static_vectors"]
    together = feature(SENTENCES)["static_vectors"][:1]
    torch.testing.assert_close(alone, together)


def test_feature_pickles_without_its_model_and_collates_in_order():
    feature = StaticVectors(model_dir=static_model_dir("minilm-static"))
    a, b = feature(SENTENCES[:2]), feature(SENTENCES[2:])
    clone = pickle.loads(pickle.dumps(feature))
    assert clone._model is None  # each DataLoader worker loads its own
    torch.testing.assert_close(clone(SENTENCES[:2])["static_vectors"], a["static_vectors"])
    batch = feature.collate([a, b], t=3)["static_vectors"]  # (5, 256), documents in order
    torch.testing.assert_close(batch, feature(SENTENCES)["static_vectors"])


def test_encoder_projects_and_compares_the_vectors_themselves():
    enc = StaticEncoder(dim=16)
    feats = Featurizer.for_net(enc).batch([SENTENCES[:3], SENTENCES[3:]])
    x, e = enc.encode_with_frozen(feats, feats["mask"])
    assert x.shape == (2, 3, 16) and e.shape == (2, 3, 256)
    assert torch.equal(e[1, 2], torch.zeros(256))  # padding
    torch.testing.assert_close(e[feats["mask"]], feats["static_vectors"])
    assert {n for n, _ in enc.named_parameters()} == {"norm.weight", "norm.bias", "proj.weight", "proj.bias"}


def test_an_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"encoder.model='nope': not a shipped static model \(minilm-static\)"):
        StaticEncoder(dim=8, model="nope")
    with pytest.raises(ValueError, match="max_length"):
        StaticEncoder(dim=8, max_length=0)


def test_trains_and_its_checkpoint_rebuilds_the_same_encoder(tiny_cfg, tmp_path):
    cfg = tiny_cfg("encoder=static", "attention=localized", "debug=limit", "logger=none")
    metrics = train(cfg)
    assert {"train/loss", "val/f1", "test/f1"} <= set(metrics) and all(v == v for v in metrics.values())
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    seg = Segmenter.from_checkpoint(ckpt)
    assert isinstance(seg.net.encoder, StaticEncoder) and seg.net.encoder.model == "minilm-static"
    probs = seg.segment(" ".join(SENTENCES), return_probs=True).boundary_probs
    assert len(probs) == 5 and all(0 <= p <= 1 for p in probs)


def test_a_converted_wordllama_table_gives_the_mean_of_its_token_vectors(tmp_path):
    """distill --wordllama: the unpacked wheel's table and tokenizer become a model2vec folder
    whose unit vector is the mean of the unit's token rows (at unit length, as every static
    model's vectors are read)."""
    import json

    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    from segmenter.pretrained.distill import convert_wordllama

    package = tmp_path / "wordllama"
    with pytest.raises(FileNotFoundError, match="l2_supercat_256.safetensors: not in the unpacked wordllama wheel"):
        convert_wordllama(package, tmp_path / "out")
    (package / "weights").mkdir(parents=True)
    (package / "tokenizers").mkdir()
    vocab = {"[UNK]": 0, "cats": 1, "purr": 2, "loudly": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(package / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    table = np.arange(16, dtype=np.float16).reshape(4, 4)
    save_file({"embedding.weight": table}, str(package / "weights" / "l2_supercat_256.safetensors"))

    convert_wordllama(package, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "segmenter.json").read_text())["dim"] == 4
    got = StaticVectors(model_dir=tmp_path / "out")(["cats purr loudly", "purr"])["static_vectors"].numpy()
    for vector, rows in zip(got, (table[1:4], table[2:3])):
        mean = rows.astype(np.float32).mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), rtol=1e-3)

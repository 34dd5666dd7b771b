"""The segment-length prior: fitted on a run's validation documents by scripts/fit_prior.py's
body and stored with the checkpoint's calibration; the decisions use it as its fit decided, or
as length_prior= says (API, predict command, server); checkpoints without one load as before."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from segmenter import Segmenter
from segmenter.inference.calibration import Calibration
from tests.helpers import cli_status, compose_config

FIT = ["weights=[0.0,0.5,2.0]", "penalties=[-1.0,0.0,1.0]"]


@pytest.fixture(scope="module")
def fitted(tiny_checkpoint):
    """A copy of the tiny run's checkpoint, beside it, with a prior fitted on its validation split."""
    from segmenter.inference.prior import run

    out = tiny_checkpoint.parent / "with_prior.ckpt"
    prior = run(compose_config("fit_prior", [f"ckpt_path={tiny_checkpoint}", f"output={out}", *FIT, "by_default=true"]))
    return out, prior


def test_the_fit_measures_every_pair_and_keeps_the_best(tiny_checkpoint, fitted):
    from hydra.utils import instantiate

    from segmenter.inference.checkpoint import run_config
    from segmenter.inference.prior import segment_lengths

    out, prior = fitted
    cfg = run_config(tiny_checkpoint, reader="the test")
    cfg.data.split_file = None
    val = instantiate(cfg.data).corpus.load()["val"]
    logs = np.log(segment_lengths(val))
    assert prior.mu == pytest.approx(logs.mean()) and prior.sigma == pytest.approx(logs.std())
    assert prior.segments == len(logs) and prior.fitted_on.startswith("val split") and prior.on
    pairs = {f"{w:g},{c:g}" for w in (0.0, 0.5, 2.0) for c in (-1.0, 0.0, 1.0)}
    assert set(prior.pk) == pairs | {"none"}
    best = min(prior.pk[k] for k in pairs)
    assert prior.pk[f"{prior.weight:g},{prior.cut_penalty:g}"] == best


def test_the_checkpoint_carries_it_and_evaluate_measures_what_the_fit_did(tiny_checkpoint, fitted, tmp_path):
    from segmenter.evaluation.evaluate import evaluate

    out, prior = fitted
    assert Segmenter.from_checkpoint(out).calibration.length_prior == prior
    assert Segmenter.from_checkpoint(tiny_checkpoint).calibration.length_prior is None  # the source is untouched
    cfg = compose_config(
        "evaluate", [f"ckpt_path={out}", "split=val", f"output_dir={tmp_path}", "length_prior=true", "baselines=null"]
    )
    table = evaluate(cfg)["table"]["all"]
    (row,) = [v for k, v in table.items() if k != "docs"]
    assert row["pk"] == pytest.approx(prior.pk[f"{prior.weight:g},{prior.cut_penalty:g}"], abs=1e-6)


def test_the_setting_switches_it(fitted):
    out, prior = fitted
    seg = Segmenter.from_checkpoint(out)
    docs = [[f"Sentence {i} about topic {i // 25}." for i in range(80)]]
    plain = seg.predict(docs, length_prior=False)[0]
    logits = seg.logits(docs)[0]
    own = seg.decide(docs[0], logits)  # on by default: as fitted
    assert own.boundaries == seg.predict(docs, length_prior=True)[0].boundaries
    assert plain.boundaries == seg.predict(docs, length_prior=0)[0].boundaries
    bare = Segmenter.from_checkpoint(out)
    bare.calibration = Calibration(**{**bare.calibration.__dict__, "length_prior": None})
    assert plain.boundaries == bare.predict(docs)[0].boundaries  # off: the decision without a prior
    # A strong prior: each segment's log-probability (below 0) outweighs every cut's log-odds,
    # so as few segments as the prior's longest allows.
    heavy = seg.predict(docs, length_prior=50.0)[0]
    lengths = [len(s) for s in heavy.segments]
    assert len(lengths) == math.ceil(80 / prior.longest) and max(lengths) <= prior.longest, lengths


def test_a_model_without_a_prior_refuses_it_and_bad_values_are_named(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    with pytest.raises(ValueError, match="length_prior=True: this model has no fitted length prior"):
        seg.predict([["a.", "b."]], length_prior=True)
    with pytest.raises(ValueError, match=r"length_prior=-1: expected a number >= 0"):
        seg.predict([["a.", "b."]], length_prior=-1)
    assert seg.predict([["a.", "b."]], length_prior=False)[0].boundaries == seg.predict([["a.", "b."]])[0].boundaries


def test_older_checkpoints_have_no_prior():
    from pathlib import Path

    seg = Segmenter.from_checkpoint(Path(__file__).parents[1] / "fixtures" / "compat" / "boundary_aware.ckpt")
    assert seg.calibration.length_prior is None
    assert Calibration.from_dict({"method": "none"}).length_prior is None


def test_predict_command_takes_the_setting(tiny_checkpoint, fitted, tmp_path):
    out, _ = fitted
    text = tmp_path / "doc.txt"
    text.write_text(" ".join(f"Sentence {i} about topic {i // 20}." for i in range(60)))
    ok = compose_config(
        "predict", [f"ckpt_path={out}", f"input={text}", f"output={tmp_path / 'a'}", "length_prior=true"]
    )
    assert cli_status(ok) == 0 and (tmp_path / "a" / "predictions.jsonl").is_file()
    refused = compose_config(
        "predict", [f"ckpt_path={tiny_checkpoint}", f"input={text}", f"output={tmp_path / 'b'}", "length_prior=0.5"]
    )
    assert cli_status(refused) == 2 and not (tmp_path / "b").exists()


def test_fit_prior_needs_documents_for_a_checkpoint_alone(tiny_checkpoint, tmp_path):
    from segmenter.cli.config import ConfigError
    from segmenter.inference.prior import run

    alone = tmp_path / "alone.ckpt"
    shutil.copy(tiny_checkpoint, alone)
    with pytest.raises(ConfigError, match="has no training run beside it .* name the documents with data="):
        run(compose_config("fit_prior", [f"ckpt_path={alone}"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("weights=[0.5,-1]", r"weights\[1\]=-1: expected a number >= 0"),
        ("penalties=[0,30]", r"penalties\[1\]=30: expected a number from -20 to 20"),
        ("margin=2", "margin=2: expected a number from 0 to 1"),
    ],
)
def test_fit_prior_settings_are_bounded_before_any_work(override, message):
    from segmenter.cli.config import ConfigError, validate

    with pytest.raises(ConfigError, match=message):
        validate(compose_config("fit_prior", ["ckpt_path=x.ckpt", override]))

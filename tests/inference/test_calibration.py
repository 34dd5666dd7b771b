"""Calibration: fitting T and b lowers ECE on an over-confident model; the values travel in
the checkpoint; a training run calibrates its best checkpoint and logs ECE."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segmenter.inference import calibration
from segmenter.inference.calibration import Calibration, expected_calibration_error, fit
from segmenter.inference.checkpoint import KEY, load, load_net
from segmenter.training.train import train
from tests.helpers import compose_train


def overconfident(n: int = 20_000, c: int = 2, *, scale: float = 4.0, shift: float = 1.5, seed: int = 0):
    """Labels drawn from softmax(z); the model reports scale * z + a shift towards class 1
    (over-confident, and biased like a network trained with class weights)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 1.5  # (N, C) the true logits
    y = torch.multinomial(z.softmax(-1), 1, generator=g)[:, 0]  # (N,)
    reported = scale * z
    reported[:, 1] += shift
    return reported, y


def test_fit_lowers_ece_on_an_overconfident_model():
    logits, y = overconfident()
    cal = fit(logits, y, method="platt")
    assert cal.ece_before > 0.10  # the synthetic model really is miscalibrated
    assert cal.ece_after < 0.02 < cal.ece_before / 5
    assert cal.temperature == pytest.approx(4.0, rel=0.1)  # it recovers the scale it was given
    assert cal.bias[0] == 0.0 and cal.bias[1] == pytest.approx(-1.5 / 4.0, abs=0.1)
    # the stored numbers are what the function computes on the calibrated scores
    assert cal.ece_after == pytest.approx(expected_calibration_error(cal.apply(logits), y), abs=1e-6)


def test_temperature_only_cannot_remove_a_bias_that_platt_scaling_can():
    logits, y = overconfident(scale=1.0, shift=2.0)
    t_only, both = fit(logits, y, method="platt", bias=False), fit(logits, y, method="platt")
    assert t_only.bias == () and both.ece_after < t_only.ece_after


def test_isotonic_fixes_what_no_temperature_can_and_reports_heldout_ece():
    """A model under-confident in the middle and over-confident at the top (as the lyrics
    model is): isotonic calibration reaches a low ECE on held-out halves, Platt does not."""
    g = torch.Generator().manual_seed(1)
    q = torch.rand(20_000, generator=g)  # (N,) reported P(class 1)
    true = torch.where(q < 0.5, q**2 * 2, 1 - 2 * (1 - q) ** 2) * 0.9 + 0.05  # S-shaped, bounded away from 0/1
    y = torch.bernoulli(true, generator=g).long()
    scores = torch.stack((1 - q, q), dim=-1).clamp(min=1e-6).log()  # (N, 2)
    groups = torch.arange(len(y)) // 20  # "documents" of 20 units
    iso, platt = fit(scores, y, groups=groups, method="isotonic"), fit(scores, y, groups=groups, method="platt")
    assert fit(scores, y).method == "isotonic"  # auto, two classes
    assert iso.ece_before > 0.05 and iso.ece_heldout < 0.02 < platt.ece_heldout
    assert iso.ece_after <= iso.ece_heldout + 1e-9  # in-sample is the optimistic figure
    p = iso.probs(scores)
    assert torch.allclose(p.sum(-1), torch.ones(len(y)))
    order = q.argsort()
    assert bool((iso.probs(scores[order])[:, 1].diff() >= -1e-7).all())  # monotone in the reported probability


def test_none_round_trip_and_refusals():
    z = torch.randn(5, 3)
    assert torch.allclose(Calibration.from_dict(None).probs(z), z.softmax(-1))
    cal = Calibration(method="platt", temperature=2.0, bias=(0.0, 0.5, -1.0), ece_before=0.2, ece_after=0.01, units=5)
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal and torch.allclose(back.probs(z), (z / 2 + torch.tensor([0.0, 0.5, -1.0])).softmax(-1))
    iso = Calibration(method="isotonic", x=(0.0, 1.0), y=(0.2, 0.8))
    assert Calibration.from_dict(iso.to_dict()) == iso
    with pytest.raises(ValueError, match="two classes"):
        iso.apply(z)
    with pytest.raises(ValueError, match="two classes"):
        fit(z, torch.tensor([0, 1, 2, 0, 1]), method="isotonic")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_temperature_is_refused_with_its_value(bad):
    with pytest.raises(ValueError, match="temperature"):
        Calibration(temperature=bad)


def test_training_calibrates_the_best_checkpoint_and_logs_ece(tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            "attention=localized",
            "debug=limit",
            "trainer.log_every_n_steps=1",
            "data.corpus.num_docs={train: 16, val: 8, test: 4}",
            "data.batch_size=4",
            "callbacks.rich_progress_bar=null",
        ],
    )
    train(cfg)
    ckpts = [p for p in (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")]
    assert len(ckpts) == 1
    entry = load(ckpts[0])[KEY][calibration.ENTRY]  # loads: the digest still fits the weights
    cal = Calibration.from_dict(entry)
    assert (
        cal.units > 0 and cal.fitted_on == "val" and cal.method == "isotonic" and cal.ece_after <= cal.ece_before + 1e-6
    )
    net, meta = load_net(ckpts[0])
    assert calibration.read(meta) == cal
    assert calibration.read(load(tmp_path / "run" / "checkpoints" / "last.ckpt")[KEY]) == Calibration()
    tags = set()
    for e in (tmp_path / "run").glob("tensorboard/**/events.out.tfevents.*"):
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"calibration/ece_before", "calibration/ece_after", "calibration/ece_heldout"} <= tags

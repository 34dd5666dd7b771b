"""Calibrated probabilities, fitted on the validation split after training.

A network trained with class weights against rare boundaries (``class_weighting``) puts
too much probability on the rare class, and a network trained to convergence is over- or
under-confident (Guo et al. 2017). Two calibrators of the scores z the network reports (its
log-softmax, or the log of the CRF's marginals: ``SegmenterNet.unit_probs``):

- ``platt``: p = softmax(z / T + b), one temperature and one bias per class (b_0 = 0),
  fitted by maximum likelihood; for two classes, Platt scaling of the log-odds.
- ``isotonic`` (two classes): p_1 = f(q_1), f the monotone step function that fits the
  validation labels best (Zadrozny & Elkan 2002; scikit-learn's ``IsotonicRegression``),
  stored as its breakpoints and applied by interpolation. It corrects a miscalibration no
  single temperature can (a model under-confident at 0.8 and over-confident at 0.97).

``auto`` takes isotonic for two classes, platt otherwise. Neither changes which label a
unit gets by default (argmax, or the CRF's Viterbi); they make the reported probabilities,
and so a user's ``threshold=``, mean what they say.

The expected calibration error (ECE: 15 equal-width bins of the top-label confidence,
torchmetrics' ``multiclass_calibration_error``) is reported before, after (on the units it
was fitted on) and cross-fitted: fitted on half the validation documents and measured on
the other half, both ways round, the honest figure for unseen text. The fitted calibrator
lives in the checkpoint's "segmenter" entry under ``calibration`` (written for the best
checkpoint by ``segmenter.training.callbacks.CalibrateOnValidation``); a checkpoint without one
reports the network's own probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segmenter.core.bounds import Number
from segmenter.core.decisions import LengthPrior
from segmenter.core.io import atomic_file
from segmenter.inference.checkpoint import KEY, load

log = logging.getLogger(__name__)

ENTRY = "calibration"  # key in the checkpoint's "segmenter" entry
BINS = 15
METHODS = ("auto", "platt", "isotonic")
EPS = 1e-4  # isotonic probabilities stay in [EPS, 1 - EPS]: a log-probability is never -inf
TEMPERATURE = Number(lo=0, lo_open=True, whole=False)  # platt's (segmenter.core.bounds)


@dataclass(frozen=True)
class Calibration:
    method: str = "none"  # none | platt | isotonic
    temperature: float = 1.0  # platt
    bias: Sequence[float] = ()  # platt: one per class, first 0
    x: Sequence[float] = ()  # isotonic: breakpoints of f, on q_1 ...
    y: Sequence[float] = ()  # ... and f there
    ece_before: float | None = None
    ece_after: float | None = None  # on the units it was fitted on
    ece_heldout: float | None = None  # cross-fitted over two halves of the documents
    units: int = 0  # how many units it was fitted on
    bins: int = BINS
    fitted_on: str = ""
    # A prior on segment lengths for the decisions, fitted on validation documents after the
    # calibrator (segmenter.inference.prior); None: none fitted (checkpoints written before it).
    length_prior: LengthPrior | None = None

    def __post_init__(self) -> None:
        if self.method not in ("none", "platt", "isotonic"):
            raise ValueError(f"calibration method={self.method!r} is not one of ('none', 'platt', 'isotonic')")
        TEMPERATURE.check("temperature", self.temperature)
        if self.method == "isotonic" and (len(self.x) != len(self.y) or len(self.x) < 1):
            raise ValueError(
                f"isotonic calibration needs as many breakpoints x ({len(self.x)}) as values y ({len(self.y)}), >= 1"
            )

    def apply(self, scores: Tensor) -> Tensor:
        """(..., C) log-probabilities -> (..., C) calibrated log-probabilities."""
        z = scores.float()
        if self.method == "none":
            return z.log_softmax(dim=-1)
        if self.method == "isotonic":
            if z.shape[-1] != 2:
                raise ValueError(f"isotonic calibration is for two classes, got scores with {z.shape[-1]}")
            q1 = interpolate(z.softmax(dim=-1)[..., 1], self.x, self.y).clamp(EPS, 1 - EPS)  # (...,)
            return torch.stack((1 - q1, q1), dim=-1).log()  # (..., 2)
        out = z / self.temperature
        if self.bias:
            if len(self.bias) != z.shape[-1]:
                raise ValueError(f"calibration bias has {len(self.bias)} entries for {z.shape[-1]} classes")
            out = out + torch.tensor(self.bias, dtype=out.dtype, device=out.device)
        return out.log_softmax(dim=-1)

    def probs(self, scores: Tensor) -> Tensor:
        """(..., C) calibrated probabilities of (..., C) log-probabilities (or logits)."""
        return self.apply(scores).exp()

    def decision_point(self, num_classes: int) -> float:
        """The calibrated probability of class 1 where the network's two-class argmax turns:
        the calibration of (0.5, 0.5). 0.5 for other numbers of classes (where no single point exists)."""
        if num_classes != 2:
            return 0.5
        half = torch.full((1, 2), 0.5).log()  # (1, 2)
        return float(self.probs(half)[0, 1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update({k: [float(v) for v in getattr(self, k)] for k in ("bias", "x", "y")})
        d["length_prior"] = self.length_prior.to_dict() if self.length_prior is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Calibration:
        """From a checkpoint entry; None (a checkpoint written before calibration) = none."""
        if not d:
            return cls()
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["length_prior"] = LengthPrior.from_dict(known.get("length_prior"))
        return cls(**{**known, **{k: tuple(known.get(k) or ()) for k in ("bias", "x", "y")}})


def interpolate(q: Tensor, x: Sequence[float], y: Sequence[float]) -> Tensor:
    """np.interp in torch: f(q) linear between the breakpoints (x_i, y_i), constant beyond."""
    xs = torch.tensor(x, dtype=q.dtype, device=q.device)  # (K,)
    ys = torch.tensor(y, dtype=q.dtype, device=q.device)  # (K,)
    if len(xs) == 1:
        return ys.expand_as(q).clone()
    i = torch.searchsorted(xs, q.contiguous()).clamp(1, len(xs) - 1)  # (...,) right breakpoint
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = ((q - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0, 1)
    return y0 + t * (y1 - y0)


def expected_calibration_error(scores: Tensor, targets: Tensor, *, bins: int = BINS) -> float:
    """Top-label ECE of softmax(scores) (N, C) against targets (N,), ``bins`` equal-width bins."""
    # Imported here: torchmetrics pulls in scipy and transformers, seconds of a shipped
    # model's cold start, and prediction never measures calibration.
    from torchmetrics.functional.classification import multiclass_calibration_error

    if len(targets) == 0:
        raise ValueError("expected_calibration_error needs at least one unit")
    probs = scores.float().softmax(dim=-1)
    return float(multiclass_calibration_error(probs, targets, num_classes=scores.shape[-1], n_bins=bins, norm="l1"))


def _fit_platt(z: Tensor, y: Tensor, *, bias: bool) -> Calibration:
    """T (and b) minimising the NLL of y under softmax(z / T + b); L-BFGS on log T keeps T > 0."""
    log_t = nn.Parameter(torch.zeros(()))
    b = nn.Parameter(torch.zeros(z.shape[1] - 1))  # b_0 = 0: softmax is shift-invariant
    opt = torch.optim.LBFGS([log_t, b] if bias else [log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        out = z / log_t.exp() + torch.cat((b.new_zeros(1), b))
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        return loss

    opt.step(closure)
    full_bias = tuple(float(v) for v in torch.cat((b.new_zeros(1), b.detach())))
    return Calibration(method="platt", temperature=float(log_t.detach().exp()), bias=full_bias if bias else ())


def _fit_isotonic(z: Tensor, y: Tensor) -> Calibration:
    from sklearn.isotonic import IsotonicRegression  # fitting only: prediction interpolates

    q1 = z.softmax(dim=-1)[:, 1].double().numpy()
    iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(q1, y.numpy())
    return Calibration(method="isotonic", x=tuple(iso.X_thresholds_.tolist()), y=tuple(iso.y_thresholds_.tolist()))


def _fit(z: Tensor, y: Tensor, method: str, bias: bool) -> Calibration:
    return _fit_isotonic(z, y) if method == "isotonic" else _fit_platt(z, y, bias=bias)


def fit(
    scores: Tensor,
    targets: Tensor,
    *,
    groups: Tensor | None = None,
    method: str = "auto",
    bias: bool = True,
    bins: int = BINS,
    fitted_on: str = "",
) -> Calibration:
    """Fit a calibrator of ``scores`` (N, C) (log-probabilities or logits) to ``targets``
    (N,). ``groups`` (N,): the document of each unit, for the cross-fitted ECE (two halves
    of the documents; None: of the units, alternately)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(f"need scores (N, C) and targets (N,), got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("cannot calibrate on zero units")
    c = scores.shape[1]
    if method == "auto":
        method = "isotonic" if c == 2 else "platt"
    if method == "isotonic" and c != 2:
        raise ValueError(f"method='isotonic' is for two classes; these scores have {c}: use 'platt'")
    z, y = (
        scores.detach().float().clone(),
        targets.detach().long().clone(),
    )  # clone: no inference-mode tensors in autograd
    fold = (groups if groups is not None else torch.arange(len(y))).detach().long().clone() % 2  # (N,)
    heldout = torch.empty_like(z)
    for k in (0, 1):
        part = fold == k
        if part.all() or not part.any():  # one document: nothing to hold out
            heldout = None
            break
        heldout[part] = _fit(z[~part], y[~part], method, bias).apply(z[part])
    cal = _fit(z, y, method, bias)
    with torch.no_grad():
        after = cal.apply(z)
    return replace(
        cal,
        ece_before=expected_calibration_error(z, y, bins=bins),
        ece_after=expected_calibration_error(after, y, bins=bins),
        ece_heldout=expected_calibration_error(heldout, y, bins=bins) if heldout is not None else None,
        units=len(y),
        bins=bins,
        fitted_on=fitted_on,
    )


@torch.no_grad()
def collect_scores(
    net: nn.Module, batches: Iterable[Mapping[str, Any]], *, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(N, C) log-probabilities (``net.unit_probs``: the CRF's marginals where the net has
    one, else softmax), (N,) labels and (N,) the input each unit came from, for every
    labelled unit the batches hold (a unit in the overlap of two windows counts in both).
    Calibration is fitted on these scores, the ones prediction reports."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    zs, ys, gs = [], [], []
    seen = 0  # inputs so far
    # No autograd: scores kept from every batch would otherwise hold every batch's graph
    # (memory growing with the size of the validation set).
    with torch.no_grad():
        try:
            for batch in batches:
                feats = {k: v.to(device) for k, v in batch["features"].items()}
                out = net(feats, start=batch["start"].to(device))
                labels = batch["labels"].to(device)  # (B, T), ignore_index at padding
                keep = out.mask & (labels != ignore_index)  # (B, T)
                probs = net.unit_probs(out.logits, out.mask)  # (B, T, C)
                zs.append(probs[keep].clamp(min=1e-12).log().cpu())  # (n, C)
                ys.append(labels[keep].cpu())  # (n,)
                index = seen + torch.arange(len(labels), device=device)[:, None].expand_as(labels)  # (B, T)
                gs.append(index[keep].cpu())  # (n,)
                seen += len(labels)
        finally:
            net.train(was_training)
    return torch.cat(zs), torch.cat(ys), torch.cat(gs)


def write(path: str | Path, calibration: Calibration) -> None:
    """Store ``calibration`` in the checkpoint at ``path`` (its "segmenter" entry), replacing
    the file atomically; the weights and their digest are untouched."""
    path = Path(path)
    ckpt = load(path)  # checked: a damaged file is refused, not rewritten
    ckpt[KEY][ENTRY] = calibration.to_dict()
    with atomic_file(path, "wb") as f:
        torch.save(ckpt, f)


def calibrate_checkpoint(
    path: str | Path, net: nn.Module, batches: Iterable[Mapping[str, Any]], *, ignore_index: int, **settings: Any
) -> Calibration:
    """Fit a calibrator (``fit``'s ``settings``: method, bias, bins) of ``net`` (the
    checkpoint's weights) on the validation ``batches`` and store it in the checkpoint at
    ``path``: what the training callback and the shipped models' build both do."""
    scores, labels, docs = collect_scores(net, batches, ignore_index=ignore_index)
    cal = fit(scores, labels, groups=docs, fitted_on="val", **settings)
    write(path, cal)
    return cal


def read(meta: Mapping[str, Any]) -> Calibration:
    """The calibration in a checkpoint's "segmenter" entry (identity if it has none)."""
    return Calibration.from_dict(meta.get(ENTRY))

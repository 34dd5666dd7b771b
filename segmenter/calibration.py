"""Calibrated probabilities: temperature and bias scaling fitted on the validation split.

A network trained with class weights against rare boundaries (``class_weighting``) puts
too much probability on the rare class, and any network trained to convergence is
over-confident (Guo et al. 2017). After training, one temperature T and one bias per class
b (b_0 = 0) are fitted by maximum likelihood on the validation split:

    p = softmax(z / T + b)

With two classes this is Platt scaling of the logit margin (scale 1/T, offset b_1); with
b = 0 it is plain temperature scaling. It does not change what the network learned, only
how its scores read as probabilities, so a user's ``threshold=`` means what it says. The
expected calibration error (ECE, 15 equal-width bins of the top-label confidence,
torchmetrics' ``multiclass_calibration_error``) is reported before and after.

The fitted values are stored in the checkpoint's "segmenter" entry under ``calibration``
(``segmenter.callbacks.TemperatureCalibration`` does it for the best checkpoint at the
end of fit); checkpoints without it read as T = 1, b = 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_calibration_error

log = logging.getLogger(__name__)

ENTRY = "calibration"  # key in the checkpoint's "segmenter" entry
BINS = 15


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    bias: Sequence[float] = ()  # one per class, first 0; () = no bias
    ece_before: float | None = None  # on the split it was fitted on
    ece_after: float | None = None
    units: int = 0  # how many units it was fitted on
    bins: int = BINS
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")

    def apply(self, logits: Tensor) -> Tensor:
        """(..., C) logits -> (..., C) calibrated logits: z / T + b."""
        out = logits / self.temperature
        if self.bias:
            if len(self.bias) != logits.shape[-1]:
                raise ValueError(f"calibration bias has {len(self.bias)} entries for {logits.shape[-1]} classes")
            out = out + torch.tensor(self.bias, dtype=out.dtype, device=out.device)
        return out

    def probs(self, logits: Tensor) -> Tensor:
        return self.apply(logits.float()).softmax(dim=-1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bias"] = [float(b) for b in self.bias]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Calibration:
        """From a checkpoint entry; None (a checkpoint written before calibration) = identity."""
        if not d:
            return cls()
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**{**known, "bias": tuple(known.get("bias") or ())})


def expected_calibration_error(logits: Tensor, targets: Tensor, *, bins: int = BINS) -> float:
    """Top-label ECE of softmax(logits) (N, C) against targets (N,), ``bins`` equal-width bins."""
    if len(targets) == 0:
        raise ValueError("expected_calibration_error needs at least one unit")
    probs = logits.float().softmax(dim=-1)
    return float(multiclass_calibration_error(probs, targets, num_classes=logits.shape[-1], n_bins=bins, norm="l1"))


def fit(logits: Tensor, targets: Tensor, *, bias: bool = True, bins: int = BINS, fitted_on: str = "") -> Calibration:
    """Fit T (and b, if ``bias``) by minimising the NLL of ``targets`` (N,) under
    softmax(logits / T + b), logits (N, C); L-BFGS on log T keeps T > 0."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("cannot calibrate on zero units")
    z, y = logits.detach().float().clone(), targets.detach().long().clone()  # clone: no inference-mode tensors in autograd
    c = z.shape[1]
    log_t = nn.Parameter(torch.zeros(()))
    b = nn.Parameter(torch.zeros(c - 1))  # b_0 = 0: softmax is shift-invariant
    params = [log_t, b] if bias else [log_t]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def calibrated() -> Tensor:
        out = z / log_t.exp()
        return out + torch.cat((b.new_zeros(1), b)) if bias else out

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(calibrated(), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        after = calibrated()
    result = Calibration(
        temperature=float(log_t.detach().exp()),
        bias=tuple(float(v) for v in torch.cat((b.new_zeros(1), b.detach()))) if bias else (),
        ece_before=expected_calibration_error(z, y, bins=bins),
        ece_after=expected_calibration_error(after, y, bins=bins),
        units=len(y),
        bins=bins,
        fitted_on=fitted_on,
    )
    return result


@torch.no_grad()
def collect_logits(net: nn.Module, batches: Iterable[Mapping[str, Any]], *, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(N, C) logits and (N,) labels of every labelled unit the batches hold (a unit in the
    overlap of two windows counts in both)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    zs, ys = [], []
    try:
        for batch in batches:
            out = net(batch["units"], start=batch["start"].to(device))
            labels = batch["labels"].to(device)  # (B, T), ignore_index at padding
            keep = out.mask & (labels != ignore_index)  # (B, T)
            zs.append(out.logits[keep].float().cpu())  # (n, C)
            ys.append(labels[keep].cpu())  # (n,)
    finally:
        net.train(was_training)
    return torch.cat(zs), torch.cat(ys)


def write(path: str | Path, calibration: Calibration) -> None:
    """Store ``calibration`` in the checkpoint at ``path`` (its "segmenter" entry), replacing
    the file atomically; the weights and their digest are untouched."""
    from segmenter.checkpoint import KEY, load

    path = Path(path)
    ckpt = load(path)  # checked: a damaged file is refused, not rewritten
    ckpt[KEY][ENTRY] = calibration.to_dict()
    tmp = path.with_name(f".{path.name}.calibrating.tmp")
    try:
        torch.save(ckpt, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read(meta: Mapping[str, Any]) -> Calibration:
    """The calibration in a checkpoint's "segmenter" entry (identity if it has none)."""
    return Calibration.from_dict(meta.get(ENTRY))

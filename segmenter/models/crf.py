"""Label-consistent decoding: a linear-chain CRF over the network's per-unit scores.

Section labels come in runs (a verse is several lines, then a chorus); per-unit argmax
can flip one line in the middle of a run. A CRF (Lafferty et al. 2001) adds a learned
score for every label transition, trains on the log-likelihood of whole label sequences
and decodes the best sequence with Viterbi. Every sequence is a prefix of its row: the
mask (B, T) is True on positions 0..n-1, as the encoders pad.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class LinearChainCRF(nn.Module):
    """score(y) = start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_{n-1}]"""

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        self.num_classes = num_classes
        self.transitions = nn.Parameter(torch.zeros(num_classes, num_classes))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_classes))
        self.end = nn.Parameter(torch.zeros(num_classes))

    def _check(self, emissions: Tensor, mask: Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_classes or mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"emissions {tuple(emissions.shape)} must be (B, T, {self.num_classes}) and mask "
                f"{tuple(mask.shape)} (B, T)"
            )
        if not bool(mask[:, 0].all()):
            raise ValueError("every sequence needs at least one unit (mask[:, 0] all True)")

    def log_likelihood(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """(B,) log p(labels | emissions) of each sequence; labels (B, T), any value at padding."""
        self._check(emissions, mask)
        e = emissions.float()  # (B, T, C): the forward sums stay in fp32 under mixed precision
        b, t, _ = e.shape
        y = labels.masked_fill(~mask, 0)  # (B, T) padding -> any valid class, masked out below
        m = mask.to(e.dtype)  # (B, T)
        rows = torch.arange(b, device=e.device)
        # Score of the gold path.
        gold = self.start[y[:, 0]] + e[rows, 0, y[:, 0]]  # (B,)
        for i in range(1, t):
            step = self.transitions[y[:, i - 1], y[:, i]] + e[rows, i, y[:, i]]  # (B,)
            gold = gold + step * m[:, i]
        last = y[rows, mask.sum(1) - 1]  # (B,) label of each sequence's last unit
        gold = gold + self.end[last]
        return gold - self.log_partition(e, mask)

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B,) log Z, the log-sum of the scores of every label sequence (forward algorithm)."""
        e = emissions.float()  # (B, T, C)
        alpha = self.start + e[:, 0]  # (B, C) log-sum over paths ending in each class
        for i in range(1, e.shape[1]):
            nxt = torch.logsumexp(alpha[:, :, None] + self.transitions, dim=1) + e[:, i]  # (B, C)
            alpha = torch.where(mask[:, i, None], nxt, alpha)  # padding: carry the sum unchanged
        return torch.logsumexp(alpha + self.end, dim=1)  # (B,)

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B, T, C) p(y_t = c | x) under the CRF, 0 at padding: the derivative of log Z by
        each emission score (the forward-backward result, by autograd: one formula, no
        second recursion to keep in step with the first)."""
        self._check(emissions, mask)
        # Autograd even when called under inference_mode / no_grad (prediction); the clone
        # turns an inference tensor into one autograd may record.
        with torch.inference_mode(False), torch.enable_grad():
            e = emissions.detach().float().clone().requires_grad_(True)  # (B, T, C)
            mask = mask.clone()
            (grad,) = torch.autograd.grad(self.log_partition(e, mask).sum(), e)
        return grad * mask[..., None]  # (B, T, C)

    def nll(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood per unit (the scale of a per-unit cross-entropy)."""
        return -self.log_likelihood(emissions, labels, mask).sum() / mask.sum().clamp(min=1)

    def decode(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B, T) the most probable label sequence (Viterbi); 0 at padding.

        In NumPy: the recursion is T tiny steps, and a tiny torch reduction costs tens to
        hundreds of microseconds on a CPU, a NumPy one about one (decoding needs no gradient)."""
        self._check(emissions, mask)
        e = emissions.detach().float().cpu().numpy()  # (B, T, C)
        keep = mask.cpu().numpy()  # (B, T)
        trans, start, end = (p.detach().float().cpu().numpy() for p in (self.transitions, self.start, self.end))
        b, t, c = e.shape
        rows, classes = np.arange(b), np.arange(c)
        score = start + e[:, 0]  # (B, C) best path score ending in each class
        back = np.broadcast_to(classes, (b, t, c)).copy()  # (B, T, C); padding points to itself
        for i in range(1, t):
            cand = score[:, :, None] + trans  # (B, C_from, C_to)
            arg = cand.argmax(axis=1)  # (B, C_to)
            best = np.take_along_axis(cand, arg[:, None, :], axis=1)[:, 0]  # (B, C_to)
            on = keep[:, i, None]  # (B, 1)
            score = np.where(on, best + e[:, i], score)
            back[:, i] = np.where(on, arg, classes)
        path = np.zeros((b, t), dtype=np.int64)
        path[:, -1] = (score + end).argmax(axis=1)
        for i in range(t - 1, 0, -1):  # padding passes the last real label through unchanged
            path[:, i - 1] = back[rows, i, path[:, i]]
        return torch.from_numpy(path).to(emissions.device).masked_fill(~mask, 0)  # (B, T)

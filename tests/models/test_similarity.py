"""SelfSimilarity (segmenter/models/net.py): the whole-document recurrence view, against a
slow loop reference, on a repeated block, in memory, and inside the network."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
import torch

from segmenter.features import Featurizer, SurfaceRecurrence
from segmenter.features.text import char_ngrams
from segmenter.models.attention import LocalizedAttention
from segmenter.models.encoder import HashedNgramEncoder
from segmenter.models.net import SegmenterNet, SelfSimilarity
from segmenter.models.recurrence import diagonal_shift
from tests.helpers import ROOT, run_net


def surface(m: SelfSimilarity) -> SurfaceRecurrence:
    return Featurizer.for_net(m).feature("surface")


def surface_vectors(m: SelfSimilarity, docs, t: int, device: torch.device) -> torch.Tensor:
    """(B, T, buckets) character n-gram counts of every unit, zeros at padding: the input of
    the surface view, batched as the network's fixed view is."""
    out = torch.zeros(len(docs), t, m.surface_buckets, device=device)
    for b, doc in enumerate(docs):
        out[b, : len(doc)] = surface(m).counts(doc).to(device)
    return out


def reference_features(v: torch.Tensor, n: int, thresholds, stripe: int) -> torch.Tensor:
    """Per-unit features of one document's n real units, one loop per unit and pair."""
    u = [v[i] / v[i].norm().clamp(min=1e-12) for i in range(n)]
    s = [[float(u[i] @ u[j]) for j in range(n)] for i in range(n)]

    def d(i, j):  # mean of S along the diagonal through (i, j), inside the document
        vals = [s[i + o][j + o] for o in range(-stripe, stripe + 1) if 0 <= i + o < n and 0 <= j + o < n]
        return sum(vals) / len(vals)

    def mx(vals):
        return max([0.0, *vals])

    def count(vals, tau):
        return math.log1p(sum(x >= tau for x in vals))

    middle = sorted(thresholds)[len(thresholds) // 2]
    strongest = [mx([s[i][j] for j in range(n) if j != i]) for i in range(n)]
    share = sum(x >= middle for x in strongest) / n
    rows = []
    for i in range(n):
        others = [s[i][j] for j in range(n) if j != i]
        far = [d(i, j) for j in range(n) if abs(i - j) > stripe]
        rows.append(
            [
                strongest[i],
                mx([s[i][j] for j in range(i)]),
                mx([s[i][j] for j in range(i + 1, n)]),
                *(count(others, t) for t in sorted(thresholds)),
                mx(far),
                *(count(far, t) for t in sorted(thresholds)),
            ]
        )
    top = [max(max(r[k] for r in rows), 1e-6) for k in range(len(rows[0]))]  # the document's largest of each
    return torch.tensor([r + [x / t for x, t in zip(r, top)] + [share] for r in rows])


@pytest.mark.parametrize("stripe", [0, 2])
def test_view_features_equal_the_loop_reference_with_padding(stripe):
    torch.manual_seed(0)
    lengths = [13, 7, 1]
    v = torch.randn(3, 13, 6)
    v[0, 9] = v[0, 2] * 3  # exact repeats (cosine 1) so the high thresholds are crossed
    v[0, 10] = v[0, 3]
    mask = torch.arange(13)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    v = v.masked_fill(~mask[..., None], 5.0)  # junk in the padding must change nothing
    thresholds = (0.5, 0.7, 0.9)
    m = SelfSimilarity(dim=4, thresholds=thresholds, stripe=stripe)
    got = m.view_features(v, mask)
    for b, n in enumerate(lengths):
        want = reference_features(v[b], n, thresholds, stripe)
        torch.testing.assert_close(got[b, :n], want.float(), atol=1e-5, rtol=1e-5)
        assert got[b, n:].abs().sum() == 0  # zeros at padding


def test_a_block_repeated_three_times_is_flagged_and_nothing_else():
    """Fresh random lines with one 4-line block sung three times: every line of the block
    recurs (strongly, twice, along a diagonal stripe); no other line does."""
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 8))) for _ in range(500)]

    def line():
        return " ".join(rng.choices(vocab, k=6))

    block = [line() for _ in range(4)]
    doc, in_block = [], []
    for part in range(3):
        verse = [line() for _ in range(5)]
        sung = [f"(yeah) {x}" if part == 1 else x for x in block]  # an ad-lib: still a repeat
        doc += verse + sung
        in_block += [False] * len(verse) + [True] * len(sung)
    m = SelfSimilarity(dim=4, thresholds=(0.5, 0.7, 0.9), stripe=1, fixed=False, surface=True)
    mask = torch.ones(1, len(doc), dtype=torch.bool)
    f = m.view_features(surface_vectors(m, [doc], len(doc), torch.device("cpu")), mask)[0]  # (T, 21)
    strongest, repeats_at_07, stripe_max = f[:, 0], f[:, 4], f[:, 6]
    flagged = (strongest >= 0.7) & (stripe_max >= 0.5)
    assert flagged.tolist() == in_block
    # the stripe: a block line's neighbours recur with it (edge lines half so), a verse line's do not
    inside = torch.tensor(in_block)
    assert stripe_max[inside].min() > 0.6 and stripe_max[~inside].max() < 0.4
    # each block line recurs exactly twice at cosine >= 0.7
    assert torch.allclose(repeats_at_07[torch.tensor(in_block)], torch.tensor(math.log1p(2)))


def test_featurized_surface_view_equals_the_batched_view_of_the_counts():
    """The featurizer computes the surface view one document at a time, before the network;
    batched with padding it equals the view computed on the padded counts of the batch."""
    docs = [["la la la", "verse one here", "La, la la!", "another line"], ["only line"]]
    m = SelfSimilarity(dim=4)
    mask = torch.tensor([[True] * 4, [True] + [False] * 3])
    want = m.view_features(surface_vectors(m, docs, 4, torch.device("cpu")), mask)
    feats = Featurizer.for_net(m).batch(docs)
    assert torch.equal(feats["mask"], mask)
    torch.testing.assert_close(feats["surface"], want)


def test_surface_view_survives_small_edits():
    a = char_ngrams("(Yeah) I'm on my way", 3, 4096)
    b = char_ngrams("I'm on my way!", 3, 4096)
    c = char_ngrams("Something else entirely", 3, 4096)
    m = SelfSimilarity(dim=4)
    v = surface_vectors(
        m, [["(Yeah) I'm on my way", "I'm on my way!", "Something else entirely"]], 3, torch.device("cpu")
    )
    s = torch.nn.functional.normalize(v[0], dim=-1) @ torch.nn.functional.normalize(v[0], dim=-1).T
    assert s[0, 1] > 0.7 > 0.2 > s[0, 2]
    assert len(a) > len(b) and len(c) > 0


def test_every_unit_counts_and_network_runs_with_every_view():
    enc = HashedNgramEncoder(dim=16, num_buckets=512, code_dim=32)
    for fixed, surface in ((True, False), (False, True), (True, True)):
        net = SegmenterNet(
            encoder=enc,
            attention=lambda: LocalizedAttention(dim=16, num_heads=2, window_size=3),
            dim=16,
            num_layers=1,
            ff_dim=16,
            num_classes=2,
            similarity=SelfSimilarity(dim=16, fixed=fixed, surface=surface),
        )
        out = run_net(net, [["a b", "c d", "a b"], ["x"]])
        assert out.logits.shape == (2, 3, 2) and torch.isfinite(out.logits).all()


def test_bad_settings_name_the_values():
    with pytest.raises(ValueError, match="at least one view"):
        SelfSimilarity(dim=4, fixed=False, surface=False)
    with pytest.raises(ValueError, match=r"thresholds=\[1.5\]"):
        SelfSimilarity(dim=4, thresholds=[1.5])


@pytest.mark.parametrize("offset", [-4, -3, -1, 1, 2, 3, 6])
def test_diagonal_shift_steps_along_the_diagonals_with_zeros_past_the_ends(offset):
    """Offsets as long as the document or longer included (short documents, exported graphs)."""
    s = torch.randn(2, 3, 3)
    out = diagonal_shift(s, offset)
    for i in range(3):
        for j in range(3):
            inside = 0 <= i + offset < 3 and 0 <= j + offset < 3
            assert torch.equal(out[:, i, j], s[:, i + offset, j + offset] if inside else torch.zeros(2))


PEAK_SCRIPT = """
import torch
from segmenter.features import Featurizer
from segmenter.models.net import SelfSimilarity

def status(key):  # kB in /proc/self/status: VmRSS now, VmHWM the peak so far
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

torch.manual_seed(0)
t = 4096
e, mask = torch.randn(1, t, 256), torch.ones(1, t, dtype=torch.bool)
m = SelfSimilarity(dim=128)
docs = [[f"line {i % 700} of the song" for i in range(t)]]
feats = Featurizer.for_net(m).batch(docs)
before = status("VmRSS")
with torch.no_grad():
    y = m(feats, e, mask)
print(status("VmHWM") - before)
"""


def test_peak_memory_at_4096_units_is_a_few_t_by_t_matrices():
    """The view holds (T, T) matrices, never (T, T, F): at 4,096 units its peak stays under
    16 float32 T x T matrices (1 GiB); one (T, T, 11) feature tensor alone would be 0.7 GiB
    and a (T, T, buckets) one 256 GiB. Fresh process: the peak is this call's."""
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    extra = int(proc.stdout.split()[-1])
    t_by_t = 4096 * 4096 * 4
    assert extra > t_by_t  # it does hold at least one T x T matrix: the measurement sees allocations
    assert extra < 16 * t_by_t, f"peak {extra / 2**20:.0f} MiB above the baseline"


def test_gate_starts_closed_and_opens_under_training():
    """gate=True: the view adds nothing at initialisation (the network starts as the one
    without it) and its gate gets a gradient, so training can open it."""
    view = SelfSimilarity(dim=8, gate=True)
    feats = Featurizer.for_net(view).batch([["a b c", "d e f", "a b c", "g h"]])
    e, mask = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool)
    out = view(feats, e, mask)
    assert torch.equal(out, torch.zeros_like(out))
    (view(feats, e, mask) * torch.randn(1, 4, 8)).sum().backward()
    assert view.gate.grad is not None and view.gate.grad.abs().sum() > 0
    # without the gate (checkpoints written before it): no such parameter, same state keys as before
    assert "gate" not in dict(SelfSimilarity(dim=8).named_parameters())

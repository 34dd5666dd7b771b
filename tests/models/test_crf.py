"""LinearChainCRF (segmenter/models/crf.py) against brute force over every label sequence."""

from __future__ import annotations

import itertools

import pytest
import torch

from segmenter.models.crf import LinearChainCRF


def path_score(crf: LinearChainCRF, emissions: torch.Tensor, path) -> torch.Tensor:
    s = crf.start[path[0]] + emissions[0, path[0]] + crf.end[path[-1]]
    for i in range(1, len(path)):
        s = s + crf.transitions[path[i - 1], path[i]] + emissions[i, path[i]]
    return s


@pytest.fixture
def crf():
    torch.manual_seed(0)
    crf = LinearChainCRF(num_classes=3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def test_likelihood_and_viterbi_equal_brute_force_with_padding(crf):
    lengths = [5, 3, 1]
    emissions = torch.randn(3, 5, 3)
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    labels = torch.randint(0, 3, (3, 5)).masked_fill(~mask, -100)
    ll = crf.log_likelihood(emissions, labels, mask)
    decoded = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(3), repeat=n))
        scores = torch.stack([path_score(crf, emissions[b], p) for p in paths])
        log_z = torch.logsumexp(scores, 0)
        gold = path_score(crf, emissions[b], labels[b, :n].tolist())
        torch.testing.assert_close(ll[b], gold - log_z)
        assert decoded[b, :n].tolist() == list(paths[int(scores.argmax())])
        assert decoded[b, n:].eq(0).all()


def test_nll_trains_the_transitions():
    """Labels in runs, emissions that say nothing: training learns that a label stays."""
    torch.manual_seed(0)
    crf = LinearChainCRF(num_classes=2)
    labels = torch.tensor([[0] * 6 + [1] * 6, [1] * 4 + [0] * 8])
    mask = torch.ones_like(labels, dtype=torch.bool)
    opt = torch.optim.SGD(crf.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        crf.nll(torch.zeros(2, 12, 2), labels, mask).backward()
        opt.step()
    t = crf.transitions.detach()
    assert t[0, 0] > t[0, 1] and t[1, 1] > t[1, 0]
    # a lone flip in a run of confident units is smoothed away; argmax would keep it
    emissions = torch.tensor([[[1.0, 0.0]] * 3 + [[0.0, 0.3]] + [[1.0, 0.0]] * 3])
    assert crf.decode(emissions, torch.ones(1, 7, dtype=torch.bool)).tolist() == [[0] * 7]
    assert emissions.argmax(-1)[0, 3] == 1


def test_shapes_are_checked():
    crf = LinearChainCRF(num_classes=2)
    with pytest.raises(ValueError, match=r"emissions \(1, 4, 3\)"):
        crf.decode(torch.zeros(1, 4, 3), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_classes=1"):
        LinearChainCRF(num_classes=1)


def test_marginals_equal_brute_force_with_padding(crf):
    lengths = [4, 2]
    emissions = torch.randn(2, 4, 3)
    mask = torch.arange(4)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    marg = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(3), repeat=n))
        p = torch.stack([path_score(crf, emissions[b], q) for q in paths]).softmax(0).detach()
        expected = torch.zeros(n, 3)
        for weight, q in zip(p, paths):
            expected[torch.arange(n), torch.tensor(q)] += weight
        torch.testing.assert_close(marg[b, :n], expected, atol=1e-5, rtol=1e-5)
        assert marg[b, n:].eq(0).all()
    with torch.inference_mode():  # how predict calls it
        torch.testing.assert_close(crf.marginals(emissions, mask), marg)

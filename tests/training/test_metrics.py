"""Pk, WindowDiff and boundary F1 against segeval and hand-worked examples."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from segmenter.core.document import IGNORE
from segmenter.training.metrics import BoundaryF1, Pk, WindowDiff, build_metrics, pk, window_diff, window_size
from tests.helpers import AGREE, DIFFER

segeval = pytest.importorskip("segeval", reason="segeval is a test dependency (pip install -e .[test])")


def masses(slots: list[int]) -> tuple[int, ...]:
    """N - 1 boundary slots -> segeval segment masses."""
    out, run = [], 1
    for s in slots:
        if s:
            out.append(run)
            run = 0
        run += 1
    return tuple(out + [run])


def labels(slots: list[int]) -> list[int]:
    """Slots -> boundary-task labels of N units."""
    return slots + [0]


def reference_value(name: str, hyp: list[int], ref: list[int]) -> float:
    """segeval's value; where the document is no longer than k (N <= k) segeval's WindowDiff
    divides by zero and its Pk returns 0: the convention here is 0 for both."""
    if len(ref) + 1 <= window_size(torch.tensor(ref)):
        assert name == "window_diff" or float(segeval.pk(masses(hyp), masses(ref))) == 0
        return 0.0
    return float(getattr(segeval, name)(masses(hyp), masses(ref)))


def random_slots(rng: random.Random, n: int, p: float) -> list[int]:
    return [int(rng.random() < p) for _ in range(n - 1)]


def test_window_size_is_half_mean_reference_segment_rounded_half_even():
    # N = 10, 2 segments: 10 / 4 = 2.5 -> 2 (half-even); N = 14, 2 segments: 3.5 -> 4.
    assert window_size(torch.tensor([0, 0, 0, 0, 1, 0, 0, 0, 0])) == 2
    assert window_size(torch.tensor([0] * 6 + [1] + [0] * 6)) == 4
    assert window_size(torch.tensor([1, 1, 1])) == 2  # 4 / 8 -> 0, floored at 2


def test_hand_worked_pk_and_window_diff():
    # ref: |aaa|bbb| (N=6, k = round(6 / 4) = 2), hyp puts the boundary one unit late.
    ref = torch.tensor([0, 0, 1, 0, 0])
    hyp = torch.tensor([0, 0, 0, 1, 0])
    # Pairs (i, i+2), i = 0..3: ref same-segment: T F F T ; hyp: T T F F -> 2 of 4 differ.
    assert pk(hyp, ref) == pytest.approx(0.5)
    # Boundaries in windows: ref 0 1 1 0 ; hyp 0 0 1 1 -> 2 of 4 differ.
    assert window_diff(hyp, ref) == pytest.approx(0.5)
    assert pk(ref, ref) == 0 and window_diff(ref, ref) == 0


@pytest.mark.parametrize("fn,ref_fn", [(pk, "pk"), (window_diff, "window_diff")])
def test_matches_segeval_on_random_segmentations(fn, ref_fn):
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 60)
        ref, hyp = random_slots(rng, n, rng.random() * 0.5), random_slots(rng, n, rng.random() * 0.5)
        expected = reference_value(ref_fn, hyp, ref)
        assert fn(torch.tensor(hyp), torch.tensor(ref)) == pytest.approx(expected), (hyp, ref)


def test_argument_order_is_hypothesis_then_reference():
    # k comes from the reference, so swapping changes the result (as in segeval).
    ref = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # 2 segments of 6: k = 3
    hyp = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]  # 6 segments of 2: k would be 2
    a = pk(torch.tensor(hyp), torch.tensor(ref))
    b = pk(torch.tensor(ref), torch.tensor(hyp))
    assert a == pytest.approx(float(segeval.pk(masses(hyp), masses(ref))))
    assert b == pytest.approx(float(segeval.pk(masses(ref), masses(hyp))))
    assert a != pytest.approx(b)


def test_documents_without_boundary_and_with_one_unit():
    # No boundary in the reference: a hypothesis with boundaries is penalised, none is perfect.
    ref = [0] * 9
    hyp = [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert pk(torch.tensor(hyp), torch.tensor(ref)) == pytest.approx(float(segeval.pk(masses(hyp), masses(ref))))
    assert pk(torch.tensor(hyp), torch.tensor(ref)) > 0
    assert pk(torch.tensor(ref), torch.tensor(ref)) == 0
    # One unit: no slot, no window; segeval returns 0 and so do we.
    empty = torch.zeros(0, dtype=torch.long)
    assert pk(empty, empty) == float(segeval.pk((1,), (1,))) == 0
    assert window_diff(empty, empty) == 0


def test_metric_classes_average_over_documents_and_ignore_padding():
    rng = random.Random(1)
    docs = []
    for _ in range(7):
        n = rng.randint(1, 30)
        docs.append((random_slots(rng, n, 0.3), random_slots(rng, n, 0.2)))
    t = max(len(h) + 1 for h, _ in docs)
    preds = torch.full((len(docs), t), IGNORE)
    target = torch.full((len(docs), t), IGNORE)
    for i, (h, r) in enumerate(docs):
        preds[i, : len(h) + 1] = torch.tensor(labels(h))
        target[i, : len(r) + 1] = torch.tensor(labels(r))
    m_pk, m_wd = Pk(), WindowDiff()
    # Two batches: states accumulate per document.
    for sl in (slice(0, 3), slice(3, None)):
        m_pk.update(preds[sl], target[sl])
        m_wd.update(preds[sl], target[sl])
    exp_pk = sum(reference_value("pk", h, r) for h, r in docs) / len(docs)
    exp_wd = sum(reference_value("window_diff", h, r) for h, r in docs) / len(docs)
    assert float(m_pk.compute()) == pytest.approx(exp_pk, abs=1e-6)
    assert float(m_wd.compute()) == pytest.approx(exp_wd, abs=1e-6)


def test_boundary_f1_counts_exact_slots():
    m = {o: BoundaryF1(output=o) for o in ("precision", "recall", "f1")}
    preds = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, IGNORE, IGNORE]])
    target = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 0, IGNORE, IGNORE]])
    for x in m.values():
        x.update(preds, target)
    # tp = 1 (doc 0 slot 1), fp = 2 (doc 0 slot 3, doc 1 slot 0), fn = 1 (doc 1 slot 1)
    assert float(m["precision"].compute()) == pytest.approx(1 / 3)
    assert float(m["recall"].compute()) == pytest.approx(1 / 2)
    assert float(m["f1"].compute()) == pytest.approx(0.4)


def test_section_task_takes_boundaries_where_the_label_changes():
    metrics = build_metrics("section", 3, ["verse", "chorus", "bridge"])
    preds = torch.tensor([[0, 0, 1, 1, 2, 2]])
    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    out = metrics(preds, target)
    assert float(out["pk"]) == 0 and float(out["boundary_f1"]) == 1
    assert {"f1", "f1_verse", "f1_chorus", "f1_bridge", "windowdiff", "boundary_precision"} <= set(out)


@pytest.mark.parametrize("make", [Pk, WindowDiff, lambda: BoundaryF1(output="f1")])
def test_states_merge_across_processes_by_summing(make):
    """Two processes' states merged (as a DDP sync reduces them) give the metric over all
    documents: the mean of per-document scores, the F1 of the pooled counts."""
    docs = [(AGREE[0] + [0], AGREE[1] + [0]), (DIFFER[0] + [0], DIFFER[1] + [0]), ([0, 1, 0, 0], [0, 0, 1, 0])]
    alone, rank0, rank1 = make(), make(), make()
    for i, (hyp, ref) in enumerate(docs):
        h, r = torch.tensor([hyp]), torch.tensor([ref])
        alone.update(h, r)
        (rank0 if i % 2 == 0 else rank1).update(h, r)
    only0 = copy.deepcopy(rank0)
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(alone.compute()))
    assert float(only0.compute()) != pytest.approx(float(alone.compute()))  # the check above can fail


def test_collection_keeps_pk_and_windowdiff_apart():
    """torchmetrics merges metrics with equal states after the first update unless the
    compute groups are given; Pk and WindowDiff must stay separate anyway."""
    metrics = build_metrics("boundary", 2)
    expected = {"pk": [], "windowdiff": []}
    for hyp, ref in (AGREE, DIFFER):
        h, r = torch.tensor([hyp + [0]]), torch.tensor([ref + [0]])  # (1, N) per-unit labels
        metrics.update(h, r)
        expected["pk"].append(pk(torch.tensor(hyp), torch.tensor(ref)))
        expected["windowdiff"].append(window_diff(torch.tensor(hyp), torch.tensor(ref)))
    out = metrics.compute()
    assert expected["pk"][1] != expected["windowdiff"][1]  # the check below can fail
    for name, values in expected.items():
        assert float(out[name]) == pytest.approx(sum(values) / len(values))

"""The limit oracle: the reference boundaries under a length limit keep every reference cut
the limit allows and add the fewest cuts that make every segment fit."""

from __future__ import annotations

from segmenter.core import limits
from segmenter.core.document import segments_to_document
from segmenter.evaluation.oracle import measure, oracle_cuts


def test_reference_cuts_stay_and_a_long_section_is_cut_as_little_as_it_must():
    units = [f"w{i} x y" for i in range(10)]  # 3 words each
    reference = [0, 1, 0, 0, 0, 0, 0, 0, 0]  # segments: units 0-1, units 2-9
    lim = limits.limits(max_segment_tokens=9, tokenizer=str.split)  # at most 3 units a segment
    cuts = oracle_cuts(units, reference, lim)
    assert 1 in cuts  # the reference cut
    assert len(cuts) == 1 + 2  # units 2-9 (8 units) need two more cuts, no fewer, no more
    bounds = [-1, *cuts, len(units) - 1]
    assert all(b - a <= 3 for a, b in zip(bounds, bounds[1:]))  # every segment fits


def test_without_a_binding_limit_the_oracle_is_perfect():
    doc = segments_to_document("d", [["a b.", "c d."], ["e f."], ["g h.", "i j."]])
    lim = limits.limits(max_segment_chars=10_000)
    result = measure([doc], lim)
    assert result["pk"] == 0.0 and result["extra_cuts"] == 0 and result["reference_cuts"] == 2

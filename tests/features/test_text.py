"""The hashing of unit text: stable ids, what each function looks at, no memo."""

from __future__ import annotations

import subprocess
import sys

from segmenter.features import text
from segmenter.features.text import char_ngrams, hashed_features
from tests.helpers import ROOT


def test_hashed_features_are_stable_across_processes_and_in_range():
    a = hashed_features("The cat sat on the mat.", 4096, 3)
    assert a == hashed_features("the CAT sat on the mat", 4096, 3)  # case and punctuation do not count
    assert all(0 <= i < 4096 for i in a)
    # words, bigrams and character trigrams of "<word>": 6 + 5 + 17
    assert len(a) == 6 + 5 + sum(len(w) + 2 - 2 for w in "the cat sat on the mat".split())
    code = "from segmenter.features.text import hashed_features; print(hashed_features('The cat sat on the mat.', 4096, 3))"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str(a)  # crc32, not Python's salted hash()


def test_a_unit_without_words_gets_the_one_empty_feature():
    assert hashed_features("...", 64, 3) == hashed_features("", 64, 3) and len(hashed_features("", 64, 3)) == 1


def test_char_ngrams_of_the_normalised_text():
    assert char_ngrams("(Yeah) I'm on my way", 3, 4096)[-len(char_ngrams("I'm on my way", 3, 4096)) :] == char_ngrams(
        "i m on my way!", 3, 4096
    )


def test_nothing_is_memoised_at_module_level():
    """Hashing keeps no state between calls: a process that sees endless new text (a server)
    does not grow because of it."""
    for name in ("hashed_features", "char_ngrams"):
        assert not hasattr(getattr(text, name), "cache_info"), name

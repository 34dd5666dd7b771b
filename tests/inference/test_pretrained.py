"""The shipped models: they load with weights_only, segment fixed text, reach a stated
score on small evaluation sets (regression guards, not tuned numbers), and the decisions a
user steers (threshold, num_segments, min_segment_units) do what they say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from segmenter import Segmenter
from segmenter.core.decisions import LengthPrior
from segmenter.core.document import SECTION
from segmenter.evaluation.evaluate import score_labels
from segmenter.inference import calibration
from segmenter.inference.checkpoint import KEY, load
from segmenter.pretrained import MODELS, card, checkpoint_path
from tests.helpers import ROOT, SHARED_DATA, write_songs


@pytest.fixture(scope="module")
def lyrics() -> Segmenter:
    return Segmenter.from_pretrained("lyrics")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_checkpoints_are_small_plain_calibrated_and_carded(name):
    path = checkpoint_path(name)
    assert path.stat().st_size < 8e6  # a few MB at most
    ckpt = load(path)  # weights_only, digest, finite weights
    cal = calibration.read(ckpt[KEY])
    assert cal.method != "none" and cal.ece_heldout is not None and cal.ece_heldout <= 0.03
    text = card(name)
    assert f"experiment=pretrained_{name}" in text and "ECE" not in text or "calibration error" in text


def test_unknown_model_names_the_shipped_ones():
    with pytest.raises(ValueError, match="lyrics"):
        Segmenter.from_pretrained("nope")


def test_lyrics_labels_a_song_and_beats_the_rule_on_synthetic_songs(lyrics, tmp_path):
    """Synthetic songs (verses of fresh random words, a recurring chorus): only recurrence
    tells the chorus apart, what the model learned from real songs."""
    songs = [json.loads(line) for line in write_songs(tmp_path / "songs.jsonl", num_songs=30, seed=3).open()]
    preds = lyrics.predict([s["lines"] for s in songs])
    scores = score_labels([(p.label_ids, s["labels"]) for p, s in zip(preds, songs)], SECTION, ["verse", "chorus"])
    assert scores["f1"] >= 0.75, scores  # measured 0.9+; a guard against a broken model or loader
    p = preds[0]
    assert len(p.units) == len(songs[0]["lines"]) and set(p.label_names) == {"verse", "chorus"}
    assert all(0.0 <= q <= 1.0 for q in p.boundary_probs)


@pytest.mark.skipif(
    not (SHARED_DATA / "lyrics" / "val.jsonl").is_file(),
    reason=f"no {SHARED_DATA}/lyrics (only on the project's machines)",
)
def test_lyrics_on_the_validation_songs(lyrics):
    songs = [json.loads(line) for line in (SHARED_DATA / "lyrics" / "val.jsonl").open()]
    preds = lyrics.predict([s["lines"] for s in songs])
    scores = score_labels([(p.label_ids, s["labels"]) for p, s in zip(preds, songs)], SECTION, ["verse", "chorus"])
    assert scores["f1"] >= 0.80, scores  # the card's 83.9%


def test_num_segments_threshold_and_min_segment_units(lyrics, tmp_path):
    song = json.loads(write_songs(tmp_path / "s.jsonl", num_songs=1, seed=5).read_text().splitlines()[0])
    text = "\n".join(song["lines"])
    for k in (1, 2, 5):
        pred = lyrics.segment(text, units="lines", return_probs=True, num_segments=k)
        assert len(pred.segments) == k
        # labels are constant inside a segment: the segment takes its most probable label
        ends = [i for i, b in enumerate(pred.boundaries) if b]
        starts = [0] + [e + 1 for e in ends]
        for s, e in zip(starts, ends + [len(pred.units) - 1]):
            assert len(set(pred.labels[s : e + 1])) == 1
    probs = lyrics.segment(text, units="lines", return_probs=True).boundary_probs
    for t in (0.2, 0.5, 0.9):
        pred = lyrics.segment(text, units="lines", return_probs=True, threshold=t)
        assert [i for i, b in enumerate(pred.boundaries) if b] == [i for i, q in enumerate(probs[:-1]) if q >= t]
    pred = lyrics.segment(text, units="lines", return_probs=True, threshold=0.05, min_segment_units=4)
    assert min(len(s) for s in pred.segments) >= 4
    with pytest.raises(ValueError, match="num_segments"):
        lyrics.segment(text, units="lines", num_segments=len(song["lines"]) + 1)


# A song of three choruses (the third after a bridge, then an outro): the lyrics model labels
# every chorus line chorus, the third less surely (CRF marginals P(chorus) 0.6 to 0.8).
CHORUS = ["Sing it loud sing it high", "Hold the light until we fly", "Never let the fire die"]
SONG = [
    *["Walking down the empty road", "Counting every step I take", "Nothing here but dust and stone"],
    "Waiting for the sun to break",
    *CHORUS,
    *["Morning comes across the hill", "Coffee cold upon the sill", "Every window closed and still"],
    *CHORUS,
    *["Quiet now the bridge is falling", "Softly hear the city calling"],
    *CHORUS,
    "Fading out",
]


def test_forced_segments_take_the_label_their_units_marginals_give(lyrics):
    """num_segments=k adds cuts the network did not make; each segment's label is the one its
    units' CRF marginals sum highest for (the probabilities the model's own labels follow),
    so chorus lines in a forced segment stay chorus."""
    own = lyrics.predict([SONG])[0]
    third = range(len(SONG) - 1 - len(CHORUS), len(SONG) - 1)
    assert all(own.labels[i] == "chorus" for i in third)
    logits = lyrics.logits([SONG])[0]
    marginals = lyrics.net.unit_probs(logits[None], torch.ones(1, len(SONG), dtype=torch.bool))[0]  # (n, C)
    for k in range(2, 11):
        pred = lyrics.predict([SONG], num_segments=k)[0]
        start = 0
        for seg in pred.segments:
            span = range(start, start + len(seg))
            expected = int(marginals[span.start : span.stop].sum(dim=0).argmax())
            assert {pred.label_ids[i] for i in span} == {expected}, (k, span, pred.labels)
            start = span.stop
    pred = lyrics.predict([SONG], num_segments=6)[0]  # one cut more than the model's own five segments
    assert [pred.labels[i] for i in third] == ["chorus"] * len(CHORUS), pred.labels


def test_a_prediction_gives_label_names_and_their_ids(lyrics):
    """Prediction.labels are names, as predictions.jsonl and the HTTP API give them; the
    class ids stay beside them (label_ids), for scoring."""
    pred = lyrics.predict([SONG])[0]
    assert set(pred.labels) == {"verse", "chorus"} and len(pred.labels) == len(SONG)
    assert all(type(k) is int for k in pred.label_ids)
    assert pred.labels == [pred.label_names[k] for k in pred.label_ids]
    assert pred.to_json("song")["labels"] == pred.labels


def song_text(num_lines: int = 31) -> str:
    """A song as a user pastes it: lines without end punctuation, stanzas apart by blank lines."""
    lines = [f"{SONG[i % len(SONG)]}" for i in range(num_lines)]
    stanzas = ["\n".join(lines[i : i + 4]) for i in range(0, num_lines, 4)]
    return "\n\n".join(stanzas) + "\n"


def test_each_shipped_model_splits_text_as_it_was_trained(lyrics, topic):
    """segment(text) without units= splits as the model's training documents were: the lyrics
    model by line (pysbd would make a few "sentences" of whole stanzas), topic by sentence."""
    assert lyrics.units == "lines" and topic.units == "sentences"
    pred = lyrics.segment(song_text(31), return_probs=True)
    assert len(pred.units) == 31 and pred.units[:2] == SONG[:2]
    assert len(lyrics.segment(song_text(31), units="sentences", return_probs=True).units) < 31
    prose = "The cat sat on the mat. It purred all day.\nStocks fell on Monday. Investors worried."
    assert topic.segment(prose, return_probs=True).units[:2] == ["The cat sat on the mat.", "It purred all day."]


def test_predict_cli_splits_a_song_by_lines_for_the_lyrics_model(tmp_path):
    (tmp_path / "song.txt").write_text(song_text(31))
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "pretrained=lyrics", "input=song.txt", "output=out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(row["units"]) == len(row["labels"]) == 31
    assert "units=" not in out.stderr  # the model's own units: nothing overridden, nothing said
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "pretrained=lyrics", "input=-", "units=sentences"],
        input=song_text(31),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "units=sentences given: this model was trained on lines" in out.stderr


def test_listing_cli_shows_every_model_and_its_card():
    out = subprocess.run(
        [sys.executable, "-m", "segmenter.pretrained"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name in MODELS:
        assert f"# {name}:" in out.stdout and f"experiment=pretrained_{name}" in out.stdout


def test_predict_cli_takes_a_shipped_model_instead_of_ckpt_path(tmp_path):
    song = tmp_path / "song.txt"
    song.write_text(
        "\n".join(json.loads(write_songs(tmp_path / "s.jsonl", num_songs=1).read_text().splitlines()[0])["lines"])
    )
    out = subprocess.run(
        [
            sys.executable,
            "scripts/predict.py",
            "pretrained=lyrics",
            f"input={song}",
            "units=lines",
            f"output={tmp_path / 'out'}",
            "num_segments=3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and sum(rows[0]["boundaries"]) == 2  # 3 segments
    assert (tmp_path / "out" / "song.txt").read_text().count("==========") == 4


@pytest.fixture(scope="module")
def topic() -> Segmenter:
    return Segmenter.from_pretrained("topic")


def test_topic_segments_unseen_builtin_documents(topic):
    """Ten test documents of the built-in corpus (drawn from CPython documentation texts held
    out of training): a regression guard on Pk, not a tuned number (the card: 12.2% on 100)."""
    from segmenter.data.builtin import BuiltinCorpus

    docs = BuiltinCorpus(num_docs={"train": 1, "val": 1, "test": 10}, seed=0).load()["test"]
    preds = topic.predict([d.units for d in docs])
    scores = score_labels([(p.label_ids, d.labels) for p, d in zip(preds, docs)], "boundary", ["inside", "boundary"])
    assert scores["pk"] <= 0.25, scores
    assert all(len(p.units) == len(d.units) for p, d in zip(preds, docs))


@pytest.mark.skipif(
    not (SHARED_DATA / "choi" / "1" / "3-11").is_dir(), reason=f"no {SHARED_DATA}/choi (only on the project's machines)"
)
def test_topic_on_choi_documents_it_never_trained_on(topic):
    from segmenter.data.formats import read_separator_files

    root = SHARED_DATA / "choi" / "1" / "3-11"
    docs = read_separator_files(root, root=root, pattern="*.ref")[:20]
    preds = topic.predict([d.units for d in docs])
    scores = score_labels([(p.label_ids, d.labels) for p, d in zip(preds, docs)], "boundary", ["inside", "boundary"])
    assert scores["pk"] <= 0.10, scores  # the card: 5.8% on the 400 documents of 3-11


def test_build_makes_a_slim_calibrated_checkpoint_and_card_from_a_run(tiny_checkpoint, tmp_path):
    """python -m segmenter.pretrained.build, on a small training run: the calibrator is fitted
    from the run's own config and validation split, the optimizer state is dropped, the card
    carries the calibration and the rebuild command."""
    from segmenter.pretrained.build import KEEP, build, write_card

    run = tiny_checkpoint.parent.parent
    dst = build("topic", run, out_dir=tmp_path)
    ckpt = load(dst)
    assert set(ckpt) <= set(KEEP) and "optimizer_states" in load(next((run / "checkpoints").glob("epoch_*.ckpt")))
    cal = calibration.read(ckpt[KEY])
    assert cal.fitted_on == "val" and cal.units > 0 and cal.ece_heldout is not None
    text = (tmp_path / "topic.md").read_text()
    assert "experiment=pretrained_topic" in text and f"{cal.ece_before:.4f} before" in text
    assert Segmenter.from_checkpoint(dst).calibration == cal
    assert "## Length prior" not in text

    # A length prior stored in the built checkpoint afterwards (scripts/fit_prior.py): the card,
    # written again from the checkpoint, says what it is and that it is on.
    prior = LengthPrior(
        mu=2.0, sigma=0.5, weight=0.25, on=True, fitted_on="val split", segments=9, pk={"none": 0.3, "0.25,0": 0.2}
    )
    calibration.write(dst, replace(cal, length_prior=prior))
    write_card("topic", run, out_dir=tmp_path)
    text = (tmp_path / "topic.md").read_text()
    assert "## Length prior" in text and "weight 0.25 and cut penalty 0" in text and "**on** by default" in text
    assert "experiment=pretrained_topic" in text


def test_cold_start_script_reports_its_table():
    out = subprocess.run(
        [sys.executable, "scripts/cold_start.py", "pretrained=lyrics", "units=lines", "sentences=10", "runs=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = out.stdout.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "lyrics" and row[2].strip().startswith("10 (")
    to_result, exit_s, segment_s = float(row[5]), float(row[6]), float(row[9])
    assert 0 < segment_s < to_result and exit_s > 0  # the result comes after the segmenting, the exit after both


@pytest.mark.parametrize("name", ["topic", "lyrics"])
def test_a_cards_checkpoints_are_where_its_rebuild_puts_them(name):
    """The evaluation tables of a shipped card name the best checkpoint in the folder its
    rebuild command trains into, and docs/pretrained.md evaluates that same checkpoint."""
    from segmenter.pretrained.build import in_rebuild_folder

    card = (ROOT / "segmenter" / "pretrained" / f"{name}.md").read_text(encoding="utf-8")
    (run_dir,) = set(re.findall(rf"experiment=pretrained_{name} hydra\.run\.dir=(\S+?)`", card))
    named = re.findall(r"checkpoint (\S+\.ckpt)", card)
    assert named and all(c.startswith(f"{run_dir}/checkpoints/") for c in named), named
    docs = (ROOT / "docs" / "pretrained.md").read_text(encoding="utf-8")
    evaluated = set(re.findall(rf"evaluate\.py ckpt_path=({re.escape(run_dir)}/\S+\.ckpt)", docs))
    assert evaluated == set(named), (evaluated, named)
    moved = in_rebuild_folder(
        "### val: 3 documents, checkpoint outputs/multirun/x/0_self/checkpoints/epoch_002.ckpt", name
    )
    assert moved.endswith(f"checkpoint outputs/pretrained/{name}/checkpoints/epoch_002.ckpt")


QUIET = """
import logging
from segmenter import Segmenter

seg = Segmenter.from_pretrained("topic")
# Small encoding batches, so that these 60 new sentences are a pass large enough for
# progress to be reported (more than 4 batches) without minutes of MiniLM on CPU.
seg.featurizer.feature("minilm_vectors").batch_size = 4
text = " ".join(f"Sentence {i} is about item {i % 7} of the list and nothing else." for i in range(60))
assert len(seg.segment(text)) >= 1
"""


def test_the_api_writes_nothing_to_stderr():
    """A program using the API (a server, a notebook) gets no progress bar or message on
    stderr unless it sets up logging itself; the scripts do, and show the progress."""
    proc = subprocess.run(
        [sys.executable, "-c", QUIET], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]


def test_topic_encodes_in_bfloat16_when_asked_and_decides_alike():
    text = (
        "The river rose after rain. The boats stayed in harbour. Fishermen waited on the quay. "
        "Markets fell as the bank raised its rate. Traders sold their shares. Prices dropped again."
    )
    exact = Segmenter.from_pretrained("topic").segment(text, return_probs=True)
    fast_seg = Segmenter.from_pretrained("topic", minilm_dtype="bfloat16")
    assert fast_seg.featurizer.features[0].config()["dtype"] == "bfloat16"
    fast = fast_seg.segment(text, return_probs=True)
    assert fast.boundary_probs == pytest.approx(exact.boundary_probs, abs=0.02)
    with pytest.raises(ValueError, match="minilm_dtype='int4'"):
        Segmenter.from_pretrained("topic", minilm_dtype="int4")

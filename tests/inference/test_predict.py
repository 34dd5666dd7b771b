"""Segmenting new text: the Python API, the command line, long documents, bad input."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys

import pysbd
import pytest
import sentencex
import torch

from segmenter import Segmenter
from segmenter.core.document import SECTION, document_segments
from segmenter.core.io import atomic_write
from segmenter.data.formats import read_separator_files
from segmenter.inference.api import SEPARATOR, Prediction, _chunks
from segmenter.inference.checkpoint import build_net, net_config
from segmenter.inference.predict import InputError, read_inputs, run
from segmenter.inference.settings import SPLITTERS
from segmenter.training.train import train
from tests.helpers import ATTENTIONS, ROOT, TEXT, cli_status, compose_train, predict_cfg, write

WORDS = "cat dog mat sun stock bank rate egg sugar flour river boat rain cloud train road".split()


def long_doc(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def parse_text_form(text: str) -> list[list[str]]:
    """Segments of Choi-style text: a separator before every segment and one at the end."""
    lines = text.splitlines()
    assert lines[0] == SEPARATOR and lines[-1] == SEPARATOR, text[:200]
    segs, cur = [], []
    for line in lines[1:]:
        if line == SEPARATOR:
            assert cur, "empty segment"
            segs.append(cur)
            cur = []
        else:
            cur.append(line)
    return segs


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "scripts/predict.py", *args]
    return subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def seg(tiny_checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint)


# ----------------------------------------------------------------------------- API


def test_segments_partition_the_units(seg):
    for units in ("sentences", "lines"):
        expected = seg.split(TEXT, units=units)
        segments = seg.segment(TEXT, units=units)
        assert [u for s in segments for u in s] == expected  # nothing lost, duplicated or reordered
        assert all(segments)
    assert len(seg.split(TEXT, units="sentences")) == 9  # pysbd's sentences, paragraph ends respected
    assert seg.split(TEXT, units="lines") == [ln.strip() for ln in TEXT.splitlines() if ln.strip()]


def test_probabilities_labels_and_segments_agree(seg):
    pred = seg.segment(TEXT, return_probs=True)
    assert isinstance(pred, Prediction)
    n = len(pred.units)
    assert len(pred.labels) == len(pred.boundary_probs) == len(pred.boundaries) == n
    assert all(0.0 <= p <= 1.0 for p in pred.boundary_probs) and pred.boundary_probs[-1] == 0.0
    # a boundary wherever "boundary" wins, except at the document end (no slot there)
    assert pred.boundaries == [int(p > 0.5) for p in pred.boundary_probs[:-1]] + [0]
    assert len(pred.segments) == sum(pred.boundaries) + 1
    assert pred.to_json("d")["labels"][0] in ("inside", "boundary")


def test_batched_equals_one_by_one(seg):
    texts = [TEXT, "One short text. With two sentences.", "\n".join(long_doc(40))]
    many = seg.segment_many(texts, return_probs=True)
    for text, pred in zip(texts, many):
        alone = seg.segment(text, return_probs=True)
        assert alone.units == pred.units and alone.boundaries == pred.boundaries
        assert alone.boundary_probs == pytest.approx(pred.boundary_probs, abs=1e-5)
    assert seg.segment("") == []


def test_stitched_windows_equal_the_whole_document_with_localized_attention(seg):
    """The cohesion profile (+-10) and 4 layers of +-3: a unit sees +-22 units, so windows
    overlapping by 44 reproduce the whole-document logits; a small overlap does not."""
    doc = long_doc(300)
    whole = Segmenter(net=seg.net, max_units=1000).logits([doc])[0]  # (300, 2), one window
    stitched = Segmenter(net=seg.net, max_units=60, overlap=44, batch_size=3).logits([doc])[0]
    torch.testing.assert_close(stitched, whole, rtol=0, atol=1e-5)
    short = Segmenter(net=seg.net, max_units=60, overlap=4).logits([doc])[0]
    assert (short - whole).abs().max() > 1e-3  # the check above can fail
    # one document among others in the same batches changes nothing
    mixed = Segmenter(net=seg.net, max_units=60, overlap=44).logits([doc[:7], doc, doc[:100]])
    torch.testing.assert_close(mixed[1], whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_long_document_with_every_attention(tiny_cfg, attention, n=5000):
    cfg = tiny_cfg(f"attention={attention}")
    net = build_net(net_config(cfg.model.net, num_classes=2))
    doc = long_doc(n)
    pred = Segmenter(net=net, max_units=256, overlap=32).predict([doc])[0]
    assert pred.units == doc and len(pred.boundary_probs) == n
    assert [u for s in pred.segments for u in s] == doc


@pytest.mark.slow
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_fifty_thousand_sentences_with_every_attention(tiny_cfg, attention):
    test_long_document_with_every_attention(tiny_cfg, attention, n=50_000)


# ----------------------------------------------------------------------------- command line


def test_cli_text_file_agrees_with_the_api(seg, tiny_checkpoint, tmp_path):
    (tmp_path / "doc.txt").write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    proc = cli(f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'doc.txt'}", f"output={out}")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    segments = parse_text_form((out / "doc.txt").read_text(encoding="utf-8"))
    api = seg.segment(TEXT, return_probs=True)
    assert segments == api.segments
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert record["id"] == "doc" and record["units"] == api.units and record["boundaries"] == api.boundaries
    assert record["boundary_probs"] == pytest.approx(api.boundary_probs, abs=1e-5)
    assert record["labels"] == api.labels
    assert not list(out.glob(".*.tmp"))


def test_cli_stdin_writes_only_the_text_form_to_stdout(seg, tiny_checkpoint):
    lines = long_doc(30, seed=1)
    proc = cli(f"ckpt_path={tiny_checkpoint}", "input=-", "units=lines", stdin="\n".join(lines).encode())
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    segments = parse_text_form(proc.stdout.decode())  # nothing else on stdout: it parses whole
    assert [u for s in segments for u in s] == lines
    assert segments == seg.segment("\n".join(lines), units="lines")
    assert b"segmented 30 units" in proc.stderr  # the log went to stderr


@pytest.mark.parametrize(
    "kind,content,message",
    [
        ("empty", b"", "empty.txt: empty file"),
        ("blank", b" \n\n \n", "blank.txt: empty file"),
        ("latin1", "caf\u00e9 ok\nna\u00efve\n".encode("latin-1"), r"latin1.txt: line 1: not UTF-8 \(byte 0xe9"),
        ("binary", b"\x7fELF\x02\x01\n\x00\x00\x03", "binary.txt: line 2: binary file"),
    ],
)
def test_bad_text_files(tiny_checkpoint, tmp_path, caplog, kind, content, message):
    path = tmp_path / f"{kind}.txt"
    path.write_bytes(content)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        status = cli_status(predict_cfg(f"ckpt_path={tiny_checkpoint}", f"input={path}", f"output={out}"))
    assert status == 2
    assert any(__import__("re").search(message, r.getMessage()) for r in caplog.records), caplog.text
    assert not out.exists()  # nothing written, not even half


def test_bad_file_in_a_folder_stops_everything(tiny_checkpoint, tmp_path, caplog):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text(TEXT)
    (tmp_path / "in" / "sub" / "b.txt").write_bytes(b"ok\n\xff\xfe\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert cli_status(predict_cfg(f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'in'}", f"output={out}")) == 2
    assert "sub/b.txt: line 2: not UTF-8" in caplog.text and not out.exists()


def test_folder_and_jsonl_inputs(seg, tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT)
    (folder / "sub" / "b.txt").write_text("First line here.\nSecond line there.\n")
    run(predict_cfg(f"ckpt_path={tiny_checkpoint}", f"input={folder}", f"output={tmp_path / 'o1'}"))
    assert parse_text_form((tmp_path / "o1" / "a.txt").read_text()) == seg.segment(TEXT)
    assert (tmp_path / "o1" / "sub" / "b.txt").is_file()
    ids = [json.loads(x)["id"] for x in (tmp_path / "o1" / "predictions.jsonl").read_text().splitlines()]
    assert ids == ["a", "sub/b"]

    jsonl = tmp_path / "docs.jsonl"
    lines = long_doc(12)
    jsonl.write_text(json.dumps({"id": "t/1", "text": TEXT}) + "\n\n" + json.dumps({"id": "l", "lines": lines}) + "\n")
    run(predict_cfg(f"ckpt_path={tiny_checkpoint}", f"input={jsonl}", f"output={tmp_path / 'o2'}"))
    assert parse_text_form((tmp_path / "o2" / "t_1.txt").read_text()) == seg.segment(TEXT)  # an id is never a path
    assert [u for s in parse_text_form((tmp_path / "o2" / "l.txt").read_text()) for u in s] == lines


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"id": 1, "text": "a"', "line 2: malformed JSON"),
        ('{"id": 2}', "line 2: expected an object with either 'text'"),
        ('{"id": 3, "lines": ["a", 4]}', 'line 2: "lines" must be a list of strings'),
        ('{"id": 4, "lines": []}', "line 2: no units"),
        ('{"id": 0, "text": "again"}', "line 2: duplicate id"),
    ],
)
def test_bad_jsonl_lines_are_named(seg, tmp_path, line, message):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 0, "text": "fine. text."}\n' + line + "\n")
    with pytest.raises(InputError, match=message):
        read_inputs(str(path), splitter=seg, units="sentences")


def test_cli_exit_status_for_bad_checkpoints(tiny_checkpoint, tmp_path):
    (tmp_path / "doc.txt").write_text(TEXT)
    (tmp_path / "cut.ckpt").write_bytes(tiny_checkpoint.read_bytes()[:5000])
    for ckpt, message in [(tmp_path / "missing.ckpt", "checkpoint not found"), (tmp_path / "cut.ckpt", "damaged")]:
        proc = cli(f"ckpt_path={ckpt}", f"input={tmp_path / 'doc.txt'}", f"output={tmp_path / 'out'}")
        assert proc.returncode == 2 and message in proc.stderr.decode() and not proc.stdout
    assert not (tmp_path / "out").exists()


def test_default_output_is_beside_the_run(tiny_checkpoint, tmp_path):
    (tmp_path / "doc.txt").write_text(TEXT)
    run(predict_cfg(f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'doc.txt'}"))
    assert (tiny_checkpoint.parent.parent / "predictions" / "doc" / "doc.txt").is_file()


def test_text_form_names_a_section_models_labels_and_reads_back(tmp_path):
    """The .txt output: a section model's separator names the segment's label; a boundary
    model's is Choi's plain one. Both read back (the separator reader of data=choi and
    evaluate's folder=) into the segments predicted."""
    units = ["a", "b", "c", "d", "e"]
    section = Prediction(
        units, [0, 0, 1, 1, 0], ["verse", "chorus"], [0.1, 0.9, 0.2, 0.8, 0.0], [0, 1, 0, 1, 0], SECTION
    )
    assert section.to_text().splitlines() == [
        *["========== verse", "a", "b"],
        *["========== chorus", "c", "d"],
        *["========== verse", "e"],
        "==========",
    ]
    boundary = Prediction(units, [0, 1, 0, 0, 0], ["inside", "boundary"], [0.1, 0.9, 0.2, 0.3, 0.0], [0, 1, 0, 0, 0])
    assert boundary.to_text().splitlines() == ["==========", "a", "b", "==========", "c", "d", "e", "=========="]
    for pred in (section, boundary):
        (doc,) = read_separator_files(write(tmp_path / f"{pred.task}.txt", pred.to_text()))
        assert document_segments(doc) == pred.segments


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(UnicodeEncodeError):
        atomic_write(tmp_path / "x.txt", "fine\ud800")  # a lone surrogate cannot be encoded
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "x.txt", "ok\n")
    assert (tmp_path / "x.txt").read_text() == "ok\n" and len(list(tmp_path.iterdir())) == 1


def test_bad_settings_name_their_values(seg):
    with pytest.raises(ValueError, match="max_units=10, overlap=10"):
        Segmenter(net=seg.net, max_units=10, overlap=10)
    with pytest.raises(ValueError, match="units='words'"):
        seg.segment(TEXT, units="words")


def test_throughput_script_on_a_tiny_corpus(tiny_checkpoint, tmp_path):
    choi = tmp_path / "choi" / "1" / "3-5"
    choi.mkdir(parents=True)
    docs = [long_doc(9, seed=1), long_doc(14, seed=2)]
    for i, d in enumerate(docs):
        text = "".join(f"==========\n{chr(10).join(d[j : j + 3])}\n" for j in range(0, len(d), 3)) + "==========\n"
        (choi / f"{i}.ref").write_text(text)
    cmd = [
        sys.executable,
        "scripts/predict_throughput.py",
        "attentions=[localized]",
        f"checkpoints.localized={tiny_checkpoint}",
        f"choi_dir={tmp_path / 'choi'}",
        "long_doc_units=100",
        "threads=[1]",
        f"hydra.run.dir={tmp_path / 'run'}",
        "segmenter.max_units=32",
        "segmenter.overlap=8",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads((tmp_path / "run" / "throughput.json").read_text())["rows"]
    assert row["docs"] == 2 and row["units"] == 23 and row["long_doc_units"] == 100  # separators dropped
    assert row["units_per_s"] > 0 and "| localized | torch | 1 | 2 | 23 |" in proc.stdout


ONE_CALL = {  # each splitter library called once on a whole text
    "pysbd": lambda text: pysbd.Segmenter(language="en", clean=False).segment(text),
    "sentencex": lambda text: sentencex.segment("en", text),
}


@pytest.mark.parametrize("splitter", SPLITTERS)
def test_long_texts_reach_the_sentence_splitter_in_pieces(seg, splitter):
    text = "\n".join(f"Sentence number {i} talks about the {WORDS[i % len(WORDS)]}." for i in range(400))
    pieces = list(_chunks(text, size=500))
    assert len(pieces) > 10 and "\n".join(pieces) == text  # cut at line ends only, nothing lost
    whole = [" ".join(s.split()) for s in ONE_CALL[splitter](" ".join(text.split())) if s.strip()]
    split = Segmenter(net=seg.net, featurizer=seg.featurizer, splitter=splitter).split(text)
    assert split == whole and len(whole) == 400  # the same sentences as one call on the whole text


def test_the_splitters_agree_on_plain_prose_and_an_unknown_one_is_refused(seg):
    text = "Dr. Smith went to Washington. He arrived at 5 p.m. on Monday! Was it late? Nobody knew."
    by = {s: Segmenter(net=seg.net, featurizer=seg.featurizer, splitter=s).split(text) for s in SPLITTERS}
    assert seg.splitter == "sentencex"  # the default
    assert by["sentencex"][0] == by["pysbd"][0] == "Dr. Smith went to Washington."
    assert by["sentencex"][-2:] == by["pysbd"][-2:] == ["Was it late?", "Nobody knew."]
    with pytest.raises(ValueError, match=r"splitter='nltk' is not one of \('sentencex', 'pysbd'\)"):
        Segmenter(net=seg.net, splitter="nltk")


def test_cli_lines_with_a_verse_chorus_crf_checkpoint(tmp_path, songs_jsonl):
    """The lyrics user path: experiment=lyrics (self-similarity view + CRF) trained briefly, then
    scripts/predict.py on a song's lines; labels are the Viterbi labels the API gives, by name."""
    files = [f"data.corpus.files.{split}={songs_jsonl}" for split in ("train", "val", "test")]
    cfg = compose_train(
        tmp_path,
        [
            "experiment=lyrics",
            "debug=limit",
            "logger=none",
            "callbacks.lr_monitor=null",
            "callbacks.rich_progress_bar=null",
            *files,
        ],
    )
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    song = json.loads(songs_jsonl.read_text().splitlines()[0])["lines"]
    (tmp_path / "song.txt").write_text("\n".join(song) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = cli(f"ckpt_path={ckpt}", f"input={tmp_path / 'song.txt'}", "units=lines", f"output={out}")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    seg = Segmenter.from_checkpoint(ckpt)
    assert seg.net.crf is not None and seg.net.similarity is not None
    (api,) = seg.predict([song])
    assert record["units"] == song and record["labels"] == api.labels
    assert set(record["labels"]) <= {"verse", "chorus"}
    separators = [line for line in (out / "song.txt").read_text().splitlines() if line.startswith("==========")]
    starts = [0] + [i + 1 for i, b in enumerate(api.boundaries) if b]
    assert separators == [f"========== {api.labels[s]}" for s in starts] + ["=========="]
    # a boundary exactly where the decoded label changes
    assert record["boundaries"][:-1] == [int(a != b) for a, b in zip(api.label_ids, api.label_ids[1:])]

"""One error policy for every script (segmenter.cli). A user's
mistake is one line on stderr (and in the run's log), exit status 2, no traceback; a bug
keeps its traceback. Most cases run in-process (segmenter.cli.app.run_task); a few commands
run as the user types them."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import subprocess
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from segmenter.cli.app import run_task
from segmenter.cli.config import RULES, ConfigError, rule, validate
from segmenter.core import decisions
from segmenter.core.bounds import Number
from segmenter.inference.predict import run
from segmenter.training.module import AUX_LOSS_WEIGHT, SegmenterModule
from segmenter.training.train import train
from tests.helpers import ROOT, TEXT, compose_train, predict_cfg, write


def script(name: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def status_of(task, cfg) -> int:
    try:
        run_task(task, cfg)
    except SystemExit as e:
        return e.code
    finally:
        GlobalHydra.instance().clear()
    return 0


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ----------------------------------------------------------------------------- 6, 8, 9: in-process


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.max_epochs=abc"], r"^trainer\.max_epochs='abc': expected a whole number >= -1"),
        (["trainer.max_epochs=abc", "debug=fdr"], r"^trainer\.max_epochs='abc': expected a whole number"),
        (["attention.window_size=7.5"], r"^attention\.window_size=7\.5: expected a whole number from 1 to 1,048,576$"),
        (["model.net.dim=abc"], r"^model\.net\.dim='abc': expected a whole number from 1 to 16,384$"),
        (["data.batch_size=0"], r"^data\.batch_size=0: expected a whole number >= 1$"),
        (["model.net.dropout=1.5"], r"^model\.net\.dropout=1\.5: expected a number from 0 to 1$"),
        (
            ["data=jsonl"],
            r"^missing value for data\.corpus\.path \(\?\?\? in the config\).*data\.corpus\.path=songs\.jsonl",
        ),
        (
            ["data=jsonl", "data.corpus.path=/nonexistent/songs.jsonl"],
            r"^data\.corpus\.path=/nonexistent/songs\.jsonl: not found",
        ),
        (
            ["data=choi", "paths.shared_data_dir=/nonexistent"],
            r"^data\.corpus\.root=/nonexistent/choi: not found.*paths\.shared_data_dir",
        ),
    ],
)
def test_bad_config_values_name_their_key(tmp_path, caplog, overrides, message):
    cfg = compose_train(tmp_path, overrides)
    ran = []
    with caplog.at_level(logging.ERROR):
        assert status_of(ran.append, cfg) == 2
    assert not ran  # refused before the script's body
    (line,) = error_lines(caplog)
    assert re.search(message, line), line
    assert "\n" not in line and "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "data,kind,not_kind",
    [("jsonl", "your JSONL corpus", "Wiki-727K"), ("wiki", "a Wiki-727K-format corpus", "JSONL")],
)
def test_a_missing_corpus_path_names_the_kind_of_corpus(tmp_path, caplog, data, kind, not_kind):
    cfg = compose_train(tmp_path, [f"data={data}", "data.corpus.path=/nonexistent/corpus"])
    with caplog.at_level(logging.ERROR):
        assert status_of(lambda c: None, cfg) == 2
    (line,) = error_lines(caplog)
    assert line.startswith("data.corpus.path=/nonexistent/corpus: not found") and kind in line, line
    assert not_kind not in line, line


def test_a_jsonl_corpus_given_as_files_per_split_trains_as_typed(tmp_path, songs_jsonl):
    """docs/data.md's `data=jsonl data.corpus.files={train: a, val: b, test: c}`: the config's
    ??? for path gives way to the files (config.settle_alternatives), from the command line."""
    files = f"data.corpus.files={{train: {songs_jsonl}, val: {songs_jsonl}, test: {songs_jsonl}}}"
    proc = script(
        "train.py",
        "data=jsonl",
        files,
        "debug=fdr",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/f1" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_bad_data_is_one_line_and_exit_2(tmp_path, caplog):
    bad = tmp_path / "songs.jsonl"
    bad.write_text(json.dumps({"id": "a", "lines": ["x", "y", "z"], "labels": ["verse", "verse"]}) + "\n")
    cfg = compose_train(tmp_path, ["data=jsonl", f"data.corpus.path={bad}", "logger=none", "debug=fdr"])
    with caplog.at_level(logging.ERROR):
        assert status_of(train, cfg) == 2
    (line,) = error_lines(caplog)
    assert line.startswith(f"{bad}:1: ") and "labels" in line, line


def test_a_bug_keeps_its_traceback(tmp_path):
    cfg = compose_train(tmp_path, [])
    log_file = logging.FileHandler(tmp_path / "train.log")  # as Hydra's job logging adds it
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(ZeroDivisionError):
            run_task(lambda cfg: 1 / 0, cfg)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
        GlobalHydra.instance().clear()
    text = (tmp_path / "train.log").read_text()
    assert (
        "unexpected error (a bug" in text
        and "Traceback (most recent call last)" in text
        and "ZeroDivisionError" in text
    )


def test_full_error_adds_the_traceback(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    cfg = compose_train(tmp_path, ["model.net.dim=abc"])
    with caplog.at_level(logging.ERROR):
        assert status_of(lambda cfg: None, cfg) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None


def test_run_failing_before_its_first_step_leaves_no_tensorboard_run(tiny_cfg, tmp_path, monkeypatch):
    def broken(self, batch, batch_idx):
        raise RuntimeError("broken step")

    monkeypatch.setattr(SegmenterModule, "training_step", broken)
    cfg = tiny_cfg("debug=limit", "callbacks.rich_progress_bar=null")
    with pytest.raises(RuntimeError, match="broken step"):
        train(cfg)
    assert not (tmp_path / "run" / "tensorboard").exists()


# ----------------------------------------------------------------------------- 11: predict output


def test_predict_refuses_an_unusable_output_before_working(tiny_checkpoint, tmp_path, caplog):
    (tmp_path / "doc.txt").write_text(TEXT)
    (tmp_path / "taken").write_text("keep me")
    for output, message in [("taken", "exists and is not a folder"), ("taken/sub", "taken is a file, not a folder")]:
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            cfg = predict_cfg(
                f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'doc.txt'}", f"output={tmp_path / output}"
            )
            assert status_of(run, cfg) == 2
        (line,) = error_lines(caplog)
        assert f"output={tmp_path / output}: " in line and message in line, line
    assert (tmp_path / "taken").read_text() == "keep me"


# ----------------------------------------------------------------------------- commands as typed


def test_commands_as_typed(tiny_checkpoint, tmp_path):
    # 6/7: bad config value in train: one line, exit 2, in train.log, no TensorBoard run
    proc = script("train.py", "trainer.max_epochs=abc", f"paths.log_dir={tmp_path}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "trainer.max_epochs='abc'" in lines[0], proc.stderr
    (run,) = (tmp_path / "runs").iterdir()  # 3: ${uid:} drawn once: log, snapshot and outputs share a folder
    assert "trainer.max_epochs='abc'" in (run / "train.log").read_text()
    assert OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.output_dir == str(run)
    assert not (run / "tensorboard").exists()
    # Hydra's own refusal of the command line: exit 2 as well, no traceback
    proc = script("train.py", "no_such_key=1", f"hydra.run.dir={tmp_path / 'run2'}")
    assert proc.returncode == 2 and "no_such_key" in proc.stderr and "Traceback" not in proc.stderr
    # 10: predict without arguments names the user's keys
    proc = script("predict.py")
    assert (
        proc.returncode == 2 and "missing value for input" in proc.stderr and "segmenter.ckpt_path" not in proc.stderr
    ), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # ... and, given the input, that a checkpoint or a shipped model is needed (one of the two)
    proc = script("predict.py", f"input={tmp_path}")
    assert proc.returncode == 2 and "give ckpt_path=" in proc.stderr and "pretrained=" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # 10: each script's own help
    helps = {name: script(name, "--help").stdout for name in ("predict.py", "evaluate.py")}
    assert (
        "ckpt_path" in helps["predict.py"]
        and "input=-" in helps["predict.py"]
        and "hparams_search" not in helps["predict.py"]
    )
    assert "folder=" in helps["evaluate.py"] and "trainer" not in helps["evaluate.py"]
    # 11: evaluate with a bad folder: one line, exit 2, nothing left behind
    work = tmp_path / "cwd"
    work.mkdir()
    proc = script(
        "evaluate.py",
        f"ckpt_path={tiny_checkpoint}",
        "folder=/nonexistent/folder",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=work,
    )
    assert proc.returncode == 2 and "folder=/nonexistent/folder: not a folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list(work.iterdir()) == [] and not (tmp_path / "logs").exists()
    assert not (tiny_checkpoint.parent.parent / "eval").exists()


# ----------------------------------------------------------------------------- every mistake: one line, exit 2

MISTAKES = [
    # (script, arguments, what the one line must say)
    ("predict.py", ["pretrained=topic", "threshold=2"], ["threshold=2", "(0, 1]"]),
    ("predict.py", ["pretrained=topic", "threshold=0"], ["threshold=0", "(0, 1]"]),
    ("predict.py", ["pretrained=topic", "threshold=abc"], ["threshold='abc'", "(0, 1]"]),
    ("predict.py", ["pretrained=topic", "num_segments=0"], ["num_segments=0", ">= 1"]),
    ("predict.py", ["pretrained=topic", "min_segment_units=0"], ["min_segment_units=0", ">= 1"]),
    ("predict.py", ["pretrained=topic", "treshold=0.01"], ["unknown key treshold", "nearest valid key is threshold"]),
    ("predict.py", ["pretrained=topic", "+treshold=0.01"], ["unknown key treshold", "nearest valid key is threshold"]),
    ("predict.py", ["pretrained=nope"], ["pretrained='nope'", "lyrics, topic"]),
    ("predict.py", ["pretrained=topic", "segmenter.splitter=nltk"], ["splitter='nltk'", "sentencex", "pysbd"]),
    ("predict.py", ["pretrained=topic", "segmenter.minilm_dtype=half"], ["minilm_dtype='half'", "float32", "bfloat16"]),
    ("predict.py", ["model=topic"], ["model=topic", "pretrained=topic"]),
    ("evaluate.py", ["pretrained=topic", "data=builtin", "threshold=0"], ["threshold=0", "(0, 1]"]),
    ("evaluate.py", ["pretrained=topic", "data=builtin", "min_segment_units=0"], ["min_segment_units=0", ">= 1"]),
    ("evaluate.py", ["pretrained=nope", "data=builtin"], ["pretrained='nope'", "lyrics, topic"]),
    ("export.py", ["pretrained=nope", "output=m.onnx"], ["pretrained='nope'", "lyrics, topic"]),
    ("train.py", ["attention.window_sise=3"], ["unknown key attention.window_sise", "attention.window_size"]),
    ("train.py", ["+model.net.dimm=3"], ["unknown key model.net.dimm", "nearest valid key is model.net.dim"]),
]


@pytest.mark.parametrize("name,args,says", MISTAKES, ids=[" ".join(m[1]) for m in MISTAKES])
def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(tmp_path, name, args, says):
    """As typed: the value or key named in one line on stderr, exit status 2, no traceback,
    nothing written."""
    extra = [f"input={write(tmp_path / 'doc.txt', TEXT)}", f"output={tmp_path / 'out'}"] if name == "predict.py" else []
    if name == "train.py":
        extra = [f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = script(name, *args, *extra, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert all(s in lines[0] for s in says) and "Traceback" not in proc.stderr, lines[0]
    assert not (tmp_path / "out").exists()


def doc_additions() -> list[list[str]]:
    """The `+key=value` overrides docs/*.md give, those of one line together."""
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if "(#removed-options)" in line:  # a measurement of a removed option: runs at the commit it names
                continue
            adds = [m.strip("'\"") for m in re.findall(r"""(?<![\w+])['"]?\+[a-z_][\w.]*=[^\s`]+""", line)]
            adds = [a for a in adds if "@" not in a.split("=", 1)[0]]  # +group@package=option: Hydra's to check
            if adds:
                found.append(adds)
    return found


def test_the_keys_the_docs_add_with_plus_are_accepted(tmp_path):
    """Keys added with `+` where the config has a place for them (a part's arguments, a new
    callback) pass; the same `+` on a node that is no part is refused naming the nearest key."""
    additions = doc_additions()
    assert len(additions) >= 3, additions  # the pages do add keys (this test reads them)
    for adds in additions:
        cfg = compose_train(tmp_path, adds)
        validate(cfg, overrides=adds)  # no ConfigError
    for add, near in [("+data.batch_sise=3", "data.batch_size"), ("+paths.log_dirr=x", "paths.log_dir")]:
        cfg = compose_train(tmp_path, [add])
        with pytest.raises(ConfigError, match=rf"^{re.escape(add)}: unknown key .*nearest valid key is {near} "):
            validate(cfg, overrides=[add])
    cfg = compose_train(tmp_path, ["+callbacks.ema.decay=0.99"])  # a callback with no _target_ is no callback
    with pytest.raises(ConfigError, match="unknown key callbacks.ema.decay"):
        validate(cfg, overrides=["+callbacks.ema.decay=0.99"])


# ----------------------------------------------------------------------------- one bound per setting


def test_every_key_the_command_line_checks_has_a_declared_bound():
    """RULES holds references, not numbers: each key's bound is an object declared in the
    module that takes the setting."""
    for key, where in RULES.items():
        module, _, name = where.partition(":")
        bound = getattr(importlib.import_module(module), name)
        assert isinstance(bound, Number) and rule(key) is bound, key
    assert rule("threshold") is decisions.THRESHOLD
    assert rule("model.aux_loss_weight") is AUX_LOSS_WEIGHT


def verdict(call) -> bool:
    try:
        call()
    except ValueError:  # ConfigError and pydantic's ValidationError are ValueErrors
        return False
    return True


@pytest.mark.parametrize(
    "key, value",
    [
        ("threshold", 0),
        ("threshold", 0.5),
        ("threshold", 1),
        ("threshold", 1.01),
        ("num_segments", 0),
        ("num_segments", 2),
        ("min_segment_units", 0),
        ("min_segment_units", 1),
    ],
)
def test_the_command_line_the_api_and_the_server_give_one_verdict(key, value):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
    from segmenter.serve.app import SegmentRequest

    steer = {"threshold": None, "num_segments": None, "min_segment_units": 1, key: value}
    cli = verdict(lambda: validate(predict_cfg("pretrained=topic", "input=doc.txt", f"{key}={value}")))
    api = verdict(lambda: decisions.check_documents([10], **steer))  # what Segmenter.predict checks first
    server = verdict(lambda: SegmentRequest.model_validate_json(json.dumps({"text": "A. B.", key: value})))
    assert cli == api == server == getattr(decisions, key.upper()).allows(value)


@pytest.mark.parametrize("value, allowed", [(-0.1, False), (0.0, True), (2.5, True)])
def test_the_command_line_and_the_training_module_give_one_verdict(tmp_path, value, allowed):
    cli = verdict(lambda: validate(compose_train(tmp_path, [f"model.aux_loss_weight={value}"])))
    module = verdict(lambda: AUX_LOSS_WEIGHT.check("aux_loss_weight", value))
    assert cli == module == allowed

"""A plain (non-editable) install is all a user needs: the configs ship inside the package and
the commands (segmenter-train, -predict, -evaluate, -serve) work from any folder, with no
checkout beside them. Runs as the user types the commands, in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

SONG = "\n".join(
    ["Walking down the empty road", "Counting every step I take", "Nothing here but dust and stone"]
    + ["Sing it loud, sing it high", "Hold the light until we fly"]
    + ["Morning breaks across the hill", "Coffee cold upon the sill", "Every window closed and still"]
    + ["Sing it loud, sing it high", "Hold the light until we fly"]
)


def run(args: list[str], *, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEGMENTER_ROOT", "HYDRA_FULL_ERROR")}
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv holding segmenter installed from a copy of this checkout
    (``pip install --no-deps --no-build-isolation``, not editable). Its dependencies (torch, ...)
    come from the running environment through a .pth file: ``--system-site-packages`` would not
    reach them when that environment is itself a venv."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy: pip builds in place and would leave build/ in the checkout
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", "tests"),
    )
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    (purelib / "running_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = venv / "bin" / "python"
    proc = run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(source)  # the installed package must not lean on the checkout it came from
    return venv / "bin"


def test_installed_predict_segments_a_song_from_any_folder(installed, tmp_path):
    (tmp_path / "song.txt").write_text(SONG + "\n")
    command = [str(installed / "segmenter-predict"), "pretrained=lyrics", "input=song.txt"]  # lines: its own units
    proc = run(command, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "outputs" / "predictions" / "lyrics" / "song"  # under the current folder
    (row,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert row["units"] == SONG.splitlines()
    assert len(row["labels"]) == len(row["units"]) and set(row["labels"]) <= {"verse", "chorus"}
    text = (out / "song.txt").read_text().splitlines()
    assert [line for line in text if not line.startswith("==========")] == SONG.splitlines()


def test_installed_package_is_not_the_checkout(installed, tmp_path):
    proc = run([str(installed / "python"), "-c", "import segmenter; print(segmenter.__file__)"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(installed.parent), proc.stdout


@pytest.mark.parametrize("command", ["segmenter-train", "segmenter-evaluate"])
def test_installed_commands_put_outputs_under_the_current_folder(installed, tmp_path, command):
    """--cfg job composes the command's entry config from the installed package (nothing runs):
    paths.root_dir, where outputs/ go, is the current folder, not a checkout."""
    proc = run([str(installed / command), "--cfg", "job", "--resolve", "-p", "paths"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"log_dir: {tmp_path / 'outputs'}" in proc.stdout.splitlines(), proc.stdout


@pytest.mark.parametrize("command", ["segmenter-predict", "segmenter-serve"])
def test_installed_commands_list_their_settings(installed, tmp_path, command):
    proc = run([str(installed / command), "--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ckpt_path" in proc.stdout and "pretrained" in proc.stdout, proc.stdout

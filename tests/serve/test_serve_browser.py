"""The web page in a real browser: scripts/serve.py on a free loopback port, driven by
Playwright through Debian's Chromium (``apt-get install chromium``; Playwright's own browser
download is never used). Skipped, with the reason, where either is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, compose_train, write_songs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the networking flags Chromium waits on services it cannot reach on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH (Debian: apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (the test extra)")

MAX_UNITS = 60  # the server's limits.max_units_per_doc here: a longer paste shows the server's 413


@pytest.fixture(scope="module")
def section_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained verse/chorus model (experiment=lyrics: section labels, CRF)."""
    from hydra.core.global_hydra import GlobalHydra

    from segmenter.training.train import train

    tmp = tmp_path_factory.mktemp("section_checkpoint")
    songs = write_songs(tmp / "songs.jsonl")
    files = [f"data.corpus.files.{split}={songs}" for split in ("train", "val", "test")]
    cfg = compose_train(
        tmp,
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
    GlobalHydra.instance().clear()
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def server(section_checkpoint):
    """scripts/serve.py on a free loopback port: its URL once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "scripts/serve.py",
        f"ckpt_path={section_checkpoint}",
        f"port={port}",
        "units=lines",
        f"limits.max_units_per_doc={MAX_UNITS}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the server did not answer /health within 120 s")
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the server's /, recording page errors and every request it makes."""
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.errors, pg.requests = [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto(server + "/")
    sync_api.expect(pg.locator("#model")).to_contain_text("verse, chorus")  # the model card arrived
    yield pg
    context.close()


def song_lines(n: int = 0) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = write_songs(Path(d) / "s.jsonl", num_songs=n + 1, seed=7)
        return json.loads(path.read_text().splitlines()[n])["lines"]


def shown(page) -> dict:
    """What the page shows: units, labels, probabilities (from the bars) and segments."""
    return page.evaluate(
        """() => ({
            units: [...document.querySelectorAll('.unit .text')].map(e => e.textContent),
            labels: [...document.querySelectorAll('.unit')].map(e => e.dataset.label),
            colours: [...document.querySelectorAll('.unit')].map(e => getComputedStyle(e).backgroundColor),
            probs: [...document.querySelectorAll('.unit .bar')].map(e => Number(e.dataset.prob)),
            widths: [...document.querySelectorAll('.unit .bar-fill')].map(e => e.getBoundingClientRect().width
                     / e.parentElement.getBoundingClientRect().width),
            segments: [...document.querySelectorAll('.segment')].map(s => [...s.querySelectorAll('.text')].map(e => e.textContent)),
            boundaries: document.querySelectorAll('.boundary').length,
            legend: [...document.querySelectorAll('#legend span')].map(e => [e.dataset.label, getComputedStyle(e).backgroundColor]),
        })"""
    )


def test_paste_segment_see_bars_and_labels_then_download(page, server, tmp_path):
    lines = song_lines()
    page.fill("#text", "\n".join(lines))
    page.select_option("#units", "lines")
    page.click("#submit")
    sync_api.expect(page.locator("#status")).to_contain_text(f"{len(lines)} lines")
    api = httpx.post(f"{server}/segment", json={"text": "\n".join(lines), "units": "lines"}).json()
    got = shown(page)
    assert got["units"] == lines == api["units"]
    assert got["segments"] == api["segments"] and got["boundaries"] == len(api["segments"]) - 1
    assert got["probs"] == pytest.approx(api["boundary_probs"], abs=1e-9)
    assert got["widths"] == pytest.approx(api["boundary_probs"], abs=0.02)  # each bar drawn at its probability
    # section model: every unit coloured by its label, one colour per label, as in the legend
    assert got["labels"] == api["labels"] and set(got["labels"]) <= {"verse", "chorus"}
    legend = dict(got["legend"])
    assert set(legend) == {"verse", "chorus"} and legend["verse"] != legend["chorus"]
    assert got["colours"] == [legend[label] for label in got["labels"]]
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "segments.json"
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["unit_type"] == "lines" and saved["model"]["labels"] == ["verse", "chorus"]
    assert {k: saved[k] for k in api} == api
    assert not page.errors and all(u.startswith(server) for u in page.requests)  # offline: nothing from elsewhere


def test_the_number_of_segments_is_the_users(page, server):
    lines = song_lines(2)
    page.fill("#text", "\n".join(lines))
    page.select_option("#units", "lines")
    page.fill("#num_segments", "3")
    page.click("#submit")
    sync_api.expect(page.locator("#status")).to_contain_text("3 segments")
    api = httpx.post(f"{server}/segment", json={"text": "\n".join(lines), "units": "lines", "num_segments": 3}).json()
    assert shown(page)["segments"] == api["segments"] and len(api["segments"]) == 3
    page.fill("#num_segments", str(len(lines) + 1))  # more segments than lines: the server says so
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_contain_text("422")
    sync_api.expect(page.locator("#error")).to_contain_text(f"num_segments={len(lines) + 1}")
    assert all("status of 422" in e for e in page.errors)  # the browser logs the refused request, nothing else


def test_a_character_limit_is_the_users(page, server):
    lines = song_lines(2)
    text = "\n".join(lines)
    api = httpx.post(f"{server}/segment", json={"text": text, "units": "lines", "max_segment_chars": 60}).json()
    assert all(end - start <= 60 for start, end in api["spans"])
    page.fill("#text", text)
    page.select_option("#units", "lines")
    page.fill("#max_segment_chars", "60")
    page.click("#submit")
    n = len(api["segments"])
    sync_api.expect(page.locator("#status")).to_contain_text(f"{n} segment{'' if n == 1 else 's'}")
    assert shown(page)["segments"] == api["segments"]


def test_upload_a_txt_file(page, tmp_path):
    lines = song_lines(1)
    path = tmp_path / "song.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page.set_input_files("#file", str(path))
    sync_api.expect(page.locator("#status")).to_contain_text("loaded song.txt")
    assert page.input_value("#text") == path.read_text()
    page.select_option("#units", "lines")
    page.click("#submit")
    sync_api.expect(page.locator(".segment").first).to_be_visible()
    assert shown(page)["units"] == lines
    assert not page.errors


def test_text_is_shown_as_text_and_errors_are_shown(page):
    page.fill("#text", 'a line <img src=x onerror="window.pwned = 1">\n<b>bold?</b>')
    page.select_option("#units", "lines")
    page.click("#submit")
    sync_api.expect(page.locator(".unit")).to_have_count(2)
    assert shown(page)["units"] == ['a line <img src=x onerror="window.pwned = 1">', "<b>bold?</b>"]
    assert page.evaluate(
        "() => window.pwned === undefined && document.querySelectorAll('#result img, #result b').length === 0"
    )
    page.fill("#text", "\n".join(f"line {i}" for i in range(MAX_UNITS + 1)))  # over the server's limit
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_contain_text("413")
    sync_api.expect(page.locator("#error")).to_contain_text("limits.max_units_per_doc")
    page.fill("#text", "   ")
    page.click("#submit")
    sync_api.expect(page.locator("#error")).to_contain_text("Paste some text")

"""The HTTP server (segmenter.serve, scripts/serve.py, scripts/load_test.py): answers equal
the Python API's, every bad request is a 4xx JSON error that leaves the server serving,
concurrent requests share forward passes, limits hold."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

import segmenter  # noqa: E402
from segmenter import Segmenter  # noqa: E402
from segmenter.serve import Batching, Limits, create_app  # noqa: E402
from tests.helpers import ROOT  # noqa: E402

TEXT = (
    "The cat sat on the mat. It purred all afternoon in the sun. Cats like warm places.\n\n"
    "Stocks fell sharply on Monday. Investors worried about rising interest rates. "
    "The central bank said it would act.\n"
)
LINES = ["the cat sat on the mat", "it purred in the sun", "stocks fell on monday", "the bank said it would act"]


@pytest.fixture(scope="module")
def seg(tiny_checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint)


class Scripted:
    """A Segmenter whose network pass (``logits``, what the server batches) records each
    call's documents, sleeps while a unit says SLOW and fails on a unit saying BOOM (a
    document that breaks the model); everything else is the real model's answer."""

    def __init__(self, seg: Segmenter, *, delay: float = 0.5) -> None:
        self.seg, self.delay = seg, delay
        self.calls: list[list[list[str]]] = []
        self.sleeping = threading.Event()
        self.woke = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.seg, name)

    def logits(self, docs):
        self.calls.append([list(d) for d in docs])
        if any("BOOM" in u for d in docs for u in d):
            raise RuntimeError("this document breaks the model")
        if any("SLOW" in u for d in docs for u in d):
            self.sleeping.set()
            time.sleep(self.delay)
            self.woke.set()
        return self.seg.logits(docs)


@contextmanager
def serving(model, **settings):
    """A TestClient on create_app(model); ``settings``: Limits/Batching fields or units."""
    limits = {k: v for k, v in settings.items() if k in Limits.__dataclass_fields__}
    batching = {k: v for k, v in settings.items() if k in Batching.__dataclass_fields__}
    app = create_app(
        model,
        limits=Limits(**limits),
        batching=Batching(**batching),
        default_units=settings.get("units", "sentences"),
        source="test",
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        client.app_state = app.state
        yield client


@pytest.fixture(scope="module")
def client(seg):
    with serving(seg) as c:
        yield c


def same_as_api(answer: dict, pred) -> None:
    """A /segment answer equals the Python API's Prediction."""
    assert answer["units"] == pred.units
    assert answer["labels"] == pred.labels
    assert answer["boundaries"] == pred.boundaries
    assert answer["boundary_probs"] == pytest.approx(pred.boundary_probs, abs=1e-5)
    assert answer["segments"] == pred.segments


# ----------------------------------------------------------------------------- answers


def test_text_answer_equals_segment(client, seg):
    for units in ("sentences", "lines"):
        r = client.post("/segment", json={"text": TEXT, "units": units})
        assert r.status_code == 200, r.text
        same_as_api(r.json(), seg.segment(TEXT, units=units, return_probs=True))
    assert len(client.post("/segment", json={"text": TEXT}).json()["units"]) == 6  # sentences: the default


def test_lines_and_batch_answers_equal_predict(client, seg):
    r = client.post("/segment", json={"lines": LINES, "id": "doc-1"})
    assert r.status_code == 200 and r.json()["id"] == "doc-1"
    same_as_api(r.json(), seg.predict([LINES])[0])
    docs = [{"id": "a", "text": TEXT}, {"lines": LINES}, {"text": "One line only"}]
    r = client.post("/segment", json={"documents": docs, "units": "lines"})
    assert r.status_code == 200, r.text
    answers = r.json()["documents"]
    assert [a["id"] for a in answers] == ["a", "1", "2"]  # given ids, else the position
    for doc, answer in zip(docs, answers):
        units = doc.get("lines") or seg.split(doc["text"], units="lines")
        same_as_api(answer, seg.predict([units])[0])


def test_decisions_per_request_equal_the_api(client, seg):
    for steer in ({"num_segments": 2}, {"threshold": 0.3, "min_segment_units": 2}, {"num_segments": 4}):
        r = client.post("/segment", json={"lines": LINES, **steer})
        assert r.status_code == 200, r.text
        same_as_api(r.json(), seg.predict([LINES], **steer)[0])
    assert len(client.post("/segment", json={"lines": LINES, "num_segments": 3}).json()["segments"]) == 3
    # Each request decides with its own settings, the batch's other documents with theirs.
    r = client.post("/segment", json={"documents": [{"lines": LINES}, {"lines": LINES[:2]}], "num_segments": 2})
    assert [len(a["segments"]) for a in r.json()["documents"]] == [2, 2]
    r = client.post(
        "/segment", json={"documents": [{"lines": LINES}, {"id": "short", "lines": LINES[:1]}], "num_segments": 2}
    )
    assert r.status_code == 422 and r.json()["error"].startswith("document short: num_segments=2 segments")
    for bad in (
        {"threshold": 0},
        {"threshold": 1.5},
        {"num_segments": 0},
        {"min_segment_units": 0},
        {"threshold": "high"},
    ):
        r = client.post("/segment", json={"lines": LINES, **bad})
        assert r.status_code == 422 and next(iter(bad)) in r.json()["error"], (bad, r.text)
    r = client.post("/segment", json={"lines": LINES, "threshold": 0.5, "num_segments": 2})
    assert r.status_code == 422 and "give one or the other" in r.json()["error"]
    r = client.post(
        "/segment", json={"lines": LINES, "segments": 2}
    )  # a misspelt setting: the error lists the right ones
    assert r.status_code == 422 and "threshold, num_segments, min_segment_units" in r.json()["error"]


def test_the_length_prior_is_a_request_setting(client, seg):
    assert client.get("/info").json()["length_prior"] is None  # this model has none fitted
    r = client.post("/segment", json={"lines": LINES, "length_prior": False})
    assert r.status_code == 200, r.text
    same_as_api(r.json(), seg.predict([LINES])[0])
    r = client.post("/segment", json={"lines": LINES, "length_prior": True})
    assert r.status_code == 422 and "this model has no fitted length prior" in r.json()["error"]
    r = client.post("/segment", json={"lines": LINES, "length_prior": -2})
    assert r.status_code == 422 and "length_prior=-2.0: expected a number >= 0" in r.json()["error"]


def test_health_info_page_and_openapi(client, seg):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queued_documents"] == 0
    info = client.get("/info").json()
    assert info["labels"] == seg.label_names and info["task"] == seg.task
    assert info["attention"]["type"] == "LocalizedAttention"  # tiny_checkpoint: attention=localized
    assert info["attention"]["window_size"] == seg.net.blocks[0].attention.window_size
    assert info["segmenter_version"] == segmenter.__version__
    assert info["limits"]["max_body_bytes"] == Limits().max_body_bytes
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="text"', 'id="file"', 'id="units"', 'id="download"', 'fetch("segment"'):
        assert element in page.text
    # offline: nothing loaded from another host (no CDN, no absolute URL anywhere)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page.text, re.IGNORECASE)
    assert "/segment" in client.get("/openapi.json").json()["paths"]


# ----------------------------------------------------------------------------- bad requests

JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    # (name, body bytes or JSON value, headers, status, words the error must contain)
    ("malformed JSON", b'{"text": "unclosed', JSON, 400, "malformed JSON"),
    ("not JSON at all", b"hello", JSON, 400, "malformed JSON"),
    ("not UTF-8", '{"text": "café"}'.encode("latin-1"), JSON, 400, "not UTF-8"),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, JSON, 400, "nested too deeply"),
    (
        "unpaired surrogate in text",
        b'{"text": "ab\\ud800"}',
        JSON,
        422,
        "'text' has an unpaired surrogate \\ud800 at index 2",
    ),
    ("unpaired surrogate in lines", b'{"lines": ["ok", "\\udc00"]}', JSON, 422, "'lines'[1] has an unpaired surrogate"),
    ("unpaired surrogate in id", b'{"text": "a", "id": "\\ud83d"}', JSON, 422, "id: Input should be a valid string"),
    ("no body", b"", JSON, 422, "needs a JSON body"),
    ("not an object", [1, 2], None, 422, "JSON object"),
    ("text not a string", {"text": 5}, None, 422, "text: Input should be a valid string, got a number"),
    ("lines not a list", {"lines": "a b"}, None, 422, "lines: Input should be a valid list, got a string"),
    ("line not a string", {"lines": ["a", 2]}, None, 422, "lines.1"),
    ("unknown field", {"text": "a", "colour": "red"}, None, 422, "colour: unknown field"),
    ("empty text", {"text": " \n\t "}, None, 422, "'text' is empty"),
    ("empty lines", {"lines": []}, None, 422, "'lines' is an empty list"),
    ("blank line", {"lines": ["a", "  "]}, None, 422, "index 1"),
    ("both text and lines", {"text": "a", "lines": ["b"]}, None, 422, "either 'text'"),
    ("neither", {"units": "lines"}, None, 422, "either 'text'"),
    ("bad units", {"text": "a", "units": "words"}, None, 422, "units"),
    ("empty documents", {"documents": []}, None, 422, "'documents' is an empty list"),
    ("bad document", {"documents": [{"text": "a"}, {"text": ""}]}, None, 422, "documents.1"),
    ("documents and text", {"documents": [{"text": "a"}], "text": "b"}, None, 422, "not both"),
    ("id not a string", {"text": "a", "id": 3}, None, 422, "id"),
    ("text/plain body", b'{"text": "a"}', {"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
    ("no content type", b'{"text": "a"}', {}, 415, "no Content-Type"),
    ("too many units", {"lines": ["x"] * 5001}, None, 413, "limits.max_units_per_doc"),
    ("too many documents", {"documents": [{"text": "a"}] * 65}, None, 413, "limits.max_docs_per_request"),
    ("too much text", {"documents": [{"text": "word " * 30_000}] * 2}, None, 413, "300,000 characters"),
    ("body too large", {"text": "word " * 250_000}, None, 413, "limits.max_body_bytes"),
    ("bad Content-Length", b"{}", {**JSON, "Content-Length": "a lot"}, 400, "Content-Length"),
]


@pytest.mark.parametrize("name, body, headers, status, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_a_4xx_json_error_and_the_server_keeps_serving(client, name, body, headers, status, words):
    if isinstance(body, bytes):
        r = client.post("/segment", content=body, headers=headers)
    else:
        r = client.post("/segment", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"], r.json()
    ok = client.post("/segment", json={"lines": LINES})
    assert ok.status_code == 200 and ok.json()["units"] == LINES


def test_body_limit_counts_the_bytes_read_not_only_content_length(seg):
    """A chunked body has no Content-Length: the limit holds on the bytes that arrive."""
    with serving(seg, max_body_bytes=5_000) as c:
        chunks = (b"x" * 1_000 for _ in range(50))  # 50 kB, sent chunked
        r = c.post("/segment", content=chunks, headers=JSON)
        assert r.status_code == 413 and "more than 5,000 bytes" in r.json()["error"]
        small = json.dumps({"lines": LINES}).encode()
        r = c.post("/segment", content=(small[i : i + 10] for i in range(0, len(small), 10)), headers=JSON)
        assert r.status_code == 200 and r.json()["units"] == LINES  # chunked and under the limit: fine


def test_wrong_route_and_method_are_json_errors(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and "no such endpoint: /nowhere" in r.json()["error"]
    r = client.get("/segment")
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]


def test_cross_origin_calls_only_from_the_origins_allowed(seg):
    preflight = {
        "Origin": "https://example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with TestClient(create_app(seg, cors_origins=("https://example.org",))) as c:
        r = c.options("/segment", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.post("/segment", json={"lines": LINES}, headers={"Origin": "https://example.org"})
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.post("/segment", json={"lines": LINES}, headers={"Origin": "https://elsewhere.net"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(seg)) as c:  # the default: none
        r = c.post("/segment", json={"lines": LINES}, headers={"Origin": "https://example.org"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_units_from_text_over_the_limit(seg):
    with serving(seg, max_units_per_doc=3) as c:
        r = c.post("/segment", json={"text": TEXT, "units": "sentences"})  # 6 sentences
        assert r.status_code == 413 and "6 sentences" in r.json()["error"]
        assert c.post("/segment", json={"text": "One. Two. Three."}).status_code == 200


def test_time_limit_is_a_408_and_the_server_keeps_serving(seg):
    model = Scripted(seg, delay=1.0)
    with serving(model, request_timeout_s=0.3) as c:
        r = c.post("/segment", json={"lines": ["SLOW line", "another"]})
        assert r.status_code == 408 and "limits.request_timeout_s" in r.json()["error"]
        assert model.woke.wait(10)  # a forward pass cannot be interrupted: the next request waits for it
        r = c.post("/segment", json={"lines": LINES})
        assert r.status_code == 200 and r.json()["units"] == LINES


def test_full_queue_is_a_503_with_retry_after(seg):
    model = Scripted(seg, delay=1.0)
    with serving(model, max_queue_docs=2, wait_ms=0) as c, ThreadPoolExecutor(4) as pool:
        slow = pool.submit(c.post, "/segment", json={"lines": ["SLOW", "x"]})
        assert model.sleeping.wait(10)  # the worker is busy with it
        queued = [pool.submit(c.post, "/segment", json={"lines": [f"queued {i}"]}) for i in range(2)]
        deadline = time.monotonic() + 10
        while c.app_state.batcher.queued_docs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/segment", json={"lines": ["one too many"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "limit 2" in r.json()["error"]
        assert [f.result().status_code for f in (slow, *queued)] == [200, 200, 200]  # the queued ones still answered


def test_concurrent_requests_share_a_forward_pass(seg):
    """While one batch runs, requests queue; the next forward pass takes them together
    (at most batching.max_docs), and each gets exactly its own answer."""
    model = Scripted(seg, delay=0.5)
    docs = [
        [f"document {i} line {j} about {w}" for j, w in enumerate(["cats", "dogs", "stocks"][: 1 + i % 3])]
        for i in range(8)
    ]
    with serving(model, max_docs=4, wait_ms=0) as c, ThreadPoolExecutor(9) as pool:
        first = pool.submit(c.post, "/segment", json={"lines": ["SLOW start"]})
        assert model.sleeping.wait(10)
        futures = [pool.submit(c.post, "/segment", json={"lines": d}) for d in docs]
        answers = [f.result() for f in futures]
        assert first.result().status_code == 200
    assert all(r.status_code == 200 for r in answers)
    for doc, r in zip(docs, answers):
        same_as_api(r.json(), seg.predict([doc])[0])  # batched == alone, no mix-ups
    sizes = [len(call) for call in model.calls[1:]]  # after the warm-up call
    assert max(sizes) > 1, sizes  # concurrent requests were batched...
    assert max(sizes) <= 4 and sum(sizes) == 1 + len(docs)  # ...within max_docs, each document once


def test_malformed_requests_mixed_in_change_nothing_for_the_others(seg):
    model = Scripted(seg, delay=0.3)
    good = [[f"good {i} first line", f"good {i} second line"] for i in range(6)]
    bad = [b'{"lines": ["unclosed"', b'{"text": ""}', b'{"lines": "x"}']
    with serving(model, wait_ms=50) as c, ThreadPoolExecutor(10) as pool:
        first = pool.submit(c.post, "/segment", json={"lines": ["SLOW start"]})
        assert model.sleeping.wait(10)
        futures = []
        for i, doc in enumerate(good):
            futures.append(("good", doc, pool.submit(c.post, "/segment", json={"lines": doc})))
            if i < len(bad):
                futures.append(("bad", None, pool.submit(c.post, "/segment", content=bad[i], headers=JSON)))
        results = [(kind, doc, f.result()) for kind, doc, f in futures]
        assert first.result().status_code == 200
    for kind, doc, r in results:
        if kind == "bad":
            assert 400 <= r.status_code < 500 and r.json()["error"]
        else:
            assert r.status_code == 200
            same_as_api(r.json(), seg.predict([doc])[0])
    predicted = [d for call in model.calls for d in call]
    assert all(d in predicted for d in good) and len(predicted) == 2 + len(good)  # warm-up, SLOW, the good ones


def test_a_document_that_breaks_the_model_fails_alone(seg):
    """A batch that raises is retried request by request: only the culprit gets an error."""
    model = Scripted(seg, delay=0.3)
    with serving(model, wait_ms=0) as c, ThreadPoolExecutor(6) as pool:
        first = pool.submit(c.post, "/segment", json={"lines": ["SLOW start"]})
        assert model.sleeping.wait(10)
        boom = pool.submit(c.post, "/segment", json={"lines": ["BOOM goes this one"]})
        others = [pool.submit(c.post, "/segment", json={"lines": [f"fine {i}"]}) for i in range(4)]
        assert first.result().status_code == 200
        r = boom.result()
        assert r.status_code == 500 and "keeps serving" in r.json()["error"]
        assert [f.result().status_code for f in others] == [200] * 4
        assert any(len(call) > 1 and any("BOOM" in d[0] for d in call) for call in model.calls)  # they were batched
        assert c.get("/health").json()["status"] == "ok"


# ----------------------------------------------------------------------------- scripts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, f"scripts/{name}", *args], cwd=ROOT, capture_output=True, timeout=timeout, env=env
    )


def test_text_requests_are_split_as_the_model_was_trained():
    """Started without units=, the server splits {"text": ...} as the model's training documents
    were (the lyrics model: by line); a request's own units= still wins."""
    song = "Sing it loud sing it high\nHold the light until we fly\nNever let the fire die\n"
    with TestClient(create_app(Segmenter.from_pretrained("lyrics"), warmup=False)) as c:
        assert c.get("/info").json()["default_units"] == "lines"
        assert len(c.post("/segment", json={"text": song}).json()["units"]) == 3
        assert len(c.post("/segment", json={"text": song, "units": "sentences"}).json()["units"]) == 1


@pytest.mark.parametrize("model", ["ckpt", "pretrained=lyrics"])
def test_serve_script_starts_answers_and_stops(tiny_checkpoint, model):
    """scripts/serve.py, with a checkpoint or a shipped model, from start to first answer (the
    time is logged, not asserted: machines are noisy; scripts/load_test.py reports it), then a
    clean SIGTERM."""
    import httpx

    source, arg = (
        (str(tiny_checkpoint), f"ckpt_path={tiny_checkpoint}") if model == "ckpt" else ("pretrained:lyrics", model)
    )
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "scripts/serve.py", arg, f"port={port}", "units=lines"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        answer = None
        while time.perf_counter() - t0 < 120 and proc.poll() is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/segment", json={"text": "one\ntwo\nthree"}, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert answer is not None, proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no answer"
        print(f"start to first answer: {time.perf_counter() - t0:.2f} s")
        assert answer.status_code == 200 and answer.json()["units"] == ["one", "two", "three"]  # units=lines applied
        info = httpx.get(f"http://127.0.0.1:{port}/info").json()
        assert info["source"] == source
        if model != "ckpt":
            assert set(answer.json()["labels"]) <= {"verse", "chorus"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-3000:]
    log = err.decode()
    assert "ready:" in log and f"http://127.0.0.1:{port}/" in log and "Traceback" not in log


@pytest.mark.parametrize(
    "args, message",
    [
        (["ckpt_path=/no/such.ckpt"], "checkpoint not found: /no/such.ckpt"),
        ([], "give ckpt_path= (a checkpoint) or pretrained="),
        (
            ["ckpt_path=x.ckpt", "limits.max_units_per_doc=0"],
            "limits.max_units_per_doc=0: expected a whole number >= 1",
        ),
        (["ckpt_path=x.ckpt", "port=70000"], "port=70000"),
        (["ckpt_path=x.ckpt", "units=words"], "units='words'"),
    ],
)
def test_serve_script_user_errors_are_one_line_and_status_2(args, message):
    proc = script("serve.py", *args)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err[-2000:]
    assert message in err and "Traceback" not in err


def test_serve_script_port_in_use(tiny_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = script("serve.py", f"ckpt_path={tiny_checkpoint}", f"port={s.getsockname()[1]}")
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr.decode()


def test_load_test_script_reports_a_clean_run(tiny_checkpoint, tmp_path):
    """A short run of scripts/load_test.py: every well-formed request answered and checked,
    every malformed one refused with a 4xx, the table and JSON written."""
    proc = script(
        "load_test.py",
        f"ckpt_path={tiny_checkpoint}",
        "clients=4",
        "requests=60",
        "malformed_every=10",
        "warmup_requests=0",
        "lines_per_doc=5",
        f"output={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    table = proc.stdout.decode()
    assert table.startswith("| clients |") and "| malformed refused (4xx) | 6/6 |" in table
    result = json.loads((tmp_path / "load_test.json").read_text())
    assert result["well_formed"] == 54 and result["ok"] == 54 and result["errors"] == 0 and result["lost"] == 0
    assert result["malformed_refused_4xx"] == 6 and result["start_to_first_answer_s"] > 0
    assert (tmp_path / "load_test.md").read_text() == table


def test_load_test_refuses_other_hosts():
    proc = script("load_test.py", "url=http://example.com:8000")
    assert proc.returncode == 2 and "loopback only" in proc.stderr.decode()


def test_onnx_backend_serves_the_same_answers(client, tiny_checkpoint, tiny_onnx):
    """The server built as scripts/serve.py builds it with backend=onnx (segmenter/conf/serve.yaml's
    segmenter node, backend passed on) answers what the torch-backed server answers."""
    import hydra

    from tests.helpers import compose_config

    cfg = compose_config("serve", [f"ckpt_path={tiny_checkpoint}", "backend=onnx", f"onnx_path={tiny_onnx}"])
    onnx_seg = hydra.utils.instantiate(cfg.segmenter, ckpt_path=cfg.ckpt_path, pretrained=cfg.pretrained)
    assert getattr(onnx_seg.net, "backend", None) == "onnx"
    long_text = " ".join(f"Sentence {i} is about the {w}." for i, w in enumerate(["cat", "bank", "egg"] * 200))
    requests = [
        {"text": TEXT},
        {"lines": LINES, "num_segments": 2},
        {"text": long_text, "threshold": 0.3},  # 600 sentences: windows of 512, stitched
        {"documents": [{"text": TEXT}, {"lines": LINES}], "units": "lines"},
    ]
    with serving(onnx_seg) as onnx_client:
        assert onnx_client.get("/info").json()["backend"] == "onnx"
        assert onnx_client.get("/info").json()["attention"]["type"] == "LocalizedAttention"
        for body in requests:
            want, got = client.post("/segment", json=body), onnx_client.post("/segment", json=body)
            assert want.status_code == got.status_code == 200, got.text
            for a, b in zip(want.json().get("documents", [want.json()]), got.json().get("documents", [got.json()])):
                assert a["units"] == b["units"] and a["labels"] == b["labels"] and a["segments"] == b["segments"]
                assert a["boundary_probs"] == pytest.approx(b["boundary_probs"], abs=1e-4)


# ----------------------------------------------------------------------------- chunks: spans and length limits


@pytest.fixture(scope="module")
def chunking_client():
    """The shipped topic model served with a word-counting tokenizer for max_segment_tokens."""
    topic = Segmenter.from_pretrained("topic")
    app = create_app(topic, source="test", tokenizer=str.split, warmup=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.topic = topic
        yield client


CHUNK_TEXT = "\r\n".join(f"Line {i} is about the theme {i // 5},\r\nwrapped here.  Then it ends." for i in range(20))


def test_answers_carry_spans_into_the_text(chunking_client):
    r = chunking_client.post("/segment", json={"text": CHUNK_TEXT})
    assert r.status_code == 200, r.text
    answer = r.json()
    pred = chunking_client.topic.segment(CHUNK_TEXT, return_probs=True)
    assert answer["spans"] == [list(s) for s in pred.spans] and len(answer["spans"]) == len(answer["segments"])
    for (start, end), segment in zip(answer["spans"], answer["segments"]):
        assert " ".join(CHUNK_TEXT[start:end].split()) == " ".join(segment)
    r = chunking_client.post("/segment", json={"lines": ["one line", "two  lines"], "max_segment_chars": 12})
    assert r.json()["spans"] == [[0, 8], [9, 18]]  # into the lines joined by line breaks, normalized


def test_length_limits_in_requests(chunking_client):
    for limit in (
        {"max_segment_chars": 150},
        {"max_segment_tokens": 25},
        {"max_segment_chars": 90, "num_segments": 30},
    ):
        r = chunking_client.post("/segment", json={"text": CHUNK_TEXT, **limit})
        assert r.status_code == 200, r.text
        answer = r.json()
        pred = chunking_client.topic.segment(
            CHUNK_TEXT, return_probs=True, tokenizer=str.split if "max_segment_tokens" in limit else None, **limit
        )
        assert answer["boundaries"] == pred.boundaries and answer["spans"] == [list(s) for s in pred.spans]
        for start, end in answer["spans"]:
            assert end - start <= limit.get("max_segment_chars", 10**9)
            assert len(CHUNK_TEXT[start:end].split()) <= limit.get("max_segment_tokens", 10**9)
    r = chunking_client.post("/segment", json={"text": "Short. Text.", "max_segment_chars": 3, "min_segment_units": 4})
    assert r.status_code == 422 and "min_segment_units=4 and max_segment_chars=3 cannot both hold" in r.json()["error"]
    r = chunking_client.post(
        "/segment",
        json={
            "documents": [{"id": "a", "text": "Fine."}, {"id": "b", "lines": ["aaaaaaaa"] * 3}],
            "max_segment_chars": 17,
            "min_segment_units": 2,
        },
    )
    assert r.status_code == 422 and r.json()["error"].startswith(
        "document b: min_segment_units=2 and max_segment_chars=17"
    )


def test_token_limits_need_the_servers_tokenizer(client):
    r = client.post("/segment", json={"text": "One. Two.", "max_segment_tokens": 10})
    assert r.status_code == 422 and "started without tokenizer=" in r.json()["error"]

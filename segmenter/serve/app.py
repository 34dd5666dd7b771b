"""The HTTP API and the web page, on FastAPI (docs/serving.md says why FastAPI + uvicorn).

    POST /segment   {"text": "...", "units": "sentences" | "lines"}
                    {"text": "...", "num_segments": 5}    (or "threshold": 0.3, "min_segment_units": 2)
                    {"text": "...", "max_segment_chars": 800}   (or "max_segment_tokens": 256: the server's tokenizer)
                    {"lines": ["...", ...]}
                    {"documents": [{"id": "a", "text": "..."}, {"lines": [...]}], "units": ...}
    GET  /health    liveness and queue depth
    GET  /info      the model card: task, labels, attention, encoder, version, limits
    GET  /          the web page (segmenter/serve/index.html: plain HTML/JS, works offline)

Every answer is JSON; every refusal is ``{"error": "<what is wrong and what to do>"}``
with a 4xx status (400 malformed JSON or Content-Length, 404/405 wrong route, 408 over
the time limit, 413 over a size limit, 415 not JSON, 422 wrong shape or types or empty
text, 503 queue full). A bad request never costs another request anything: it is
refused before it reaches the batch.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import Tensor

import segmenter
from segmenter.core import decisions
from segmenter.core import limits as length_limits
from segmenter.core.bounds import Number
from segmenter.core.document import check_units, normalize_unit
from segmenter.core.spans import Span, joined
from segmenter.inference.api import Prediction, Segmenter
from segmenter.serve.batcher import MicroBatcher, Overloaded

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- settings


# The settings' bounds (segmenter.core.bounds), checked when the settings are made.
LIMIT = Number(lo=1)  # sizes and counts a request may reach
REQUEST_TIMEOUT_S = Number(lo=0, lo_open=True, hi=3600, whole=False)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (conf/serve.yaml ``limits``); past any of them the
    request is refused with a 4xx and a message naming the limit."""

    max_body_bytes: int = 1_000_000  # request body, checked on Content-Length and on the bytes read
    max_docs_per_request: int = 64  # documents in one {"documents": [...]} request
    max_units_per_doc: int = 5_000  # units (sentences or lines) of one document
    max_text_chars: int = 200_000  # characters of "text" in one request, all documents together
    request_timeout_s: float = 10.0  # splitting, waiting and predicting together

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_docs_per_request", "max_units_per_doc", "max_text_chars"):
            LIMIT.check(f"limits.{name}", getattr(self, name))
        REQUEST_TIMEOUT_S.check("limits.request_timeout_s", self.request_timeout_s)


@dataclass(frozen=True)
class Batching:
    """Dynamic batching (conf/serve.yaml ``batching``): see segmenter.serve.batcher."""

    max_docs: int = 64  # documents in one forward pass
    max_units: int = 4_096  # units in one forward pass (a longer request runs alone)
    wait_ms: float = 2.0  # how long the oldest queued request waits for others to join it
    max_queue_docs: int = 1_024  # documents waiting; past it requests get 503

    def batcher(self, predict: Callable) -> MicroBatcher:
        return MicroBatcher(
            predict,
            max_docs=self.max_docs,
            max_units=self.max_units,
            wait_s=self.wait_ms / 1000,
            max_queue_docs=self.max_queue_docs,
        )


# ----------------------------------------------------------------------------- request bodies


_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's "\ud800" escapes decode to these; no UTF-8 can hold them


def _check_unicode(value: str | None, name: str) -> None:
    found = _SURROGATE.search(value) if value else None
    if found:
        raise ValueError(
            f"{name} has an unpaired surrogate \\u{ord(found.group()):04x} at index {found.start()}: not valid Unicode text"
        )


def _check_source(text: str | None, lines: list[str] | None) -> None:
    _check_unicode(text, "'text'")
    for i, line in enumerate(lines or ()):
        _check_unicode(line, f"'lines'[{i}]")
    if (text is None) == (lines is None):
        raise ValueError("give either 'text' (a string) or 'lines' (a list of strings), not both or neither")
    if text is not None and not text.strip():
        raise ValueError("'text' is empty (nothing but whitespace): there is nothing to segment")
    if lines is not None:
        if not lines:
            raise ValueError("'lines' is an empty list: there is nothing to segment")
        blank = [i for i, line in enumerate(lines) if not line.strip()]
        if blank:
            raise ValueError(
                f"'lines' has {len(blank)} empty line(s), the first at index {blank[0]}: every line is a unit"
            )


class Document(BaseModel):
    """One document: its text (split into units by the request's ``units``) or its units."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | None = Field(default=None, max_length=256, description="echoed back; default: the position")
    text: str | None = Field(default=None, description="plain text, split by 'units'")
    lines: list[str] | None = Field(default=None, description="the units themselves, one per item")

    @model_validator(mode="after")
    def _one_source(self) -> Document:
        _check_unicode(self.id, "'id'")
        _check_source(self.text, self.lines)
        return self


class SegmentRequest(BaseModel):
    """A single document (``text`` or ``lines``) or a batch (``documents``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | None = Field(default=None, max_length=256)
    text: str | None = None
    lines: list[str] | None = None
    documents: list[Document] | None = None
    units: Literal["sentences", "lines"] | None = Field(default=None, description="how 'text' becomes units")
    # Decisions on the calibrated boundary probabilities (segmenter.core.decisions), for every document of the request.
    # Their bounds are decisions' own (segmenter.core.bounds): one verdict for the API, the CLI and the server.
    threshold: float | None = Field(
        default=None, **decisions.THRESHOLD.constraints(), description="cut where P(boundary) >= threshold"
    )
    num_segments: int | None = Field(
        default=None, **decisions.NUM_SEGMENTS.constraints(), description="exactly this many segments"
    )
    min_segment_units: int | None = Field(
        default=None, **decisions.MIN_SEGMENT_UNITS.constraints(), description="no segment shorter than this"
    )
    # The model's fitted segment-length prior (segmenter.core.decisions.LengthPrior): true, false,
    # or a weight >= 0; null: as the fit decided (GET /info says whether the model has one).
    length_prior: bool | float | None = Field(default=None, description="the segment-length prior: on, off or a weight")
    # Hard length limits (segmenter.core.limits): a segment's text is its span in the document.
    max_segment_chars: int | None = Field(
        default=None, **length_limits.MAX_SEGMENT_CHARS.constraints(), description="no segment longer (characters)"
    )
    max_segment_tokens: int | None = Field(
        default=None,
        **length_limits.MAX_SEGMENT_TOKENS.constraints(),
        description="no segment longer (tokens of the server's tokenizer, /info)",
    )

    @model_validator(mode="after")
    def _one_form(self) -> SegmentRequest:
        decisions.LENGTH_PRIOR.check("length_prior", self.length_prior)
        _check_unicode(self.id, "'id'")
        if self.documents is None:
            _check_source(self.text, self.lines)
        elif self.text is not None or self.lines is not None or self.id is not None:
            raise ValueError("give either one document ('text' or 'lines') or 'documents', not both")
        elif not self.documents:
            raise ValueError("'documents' is an empty list: there is nothing to segment")
        return self


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A refusal: status and a message for the client."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


_JSON_NAMES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _validation_message(errors: list[dict[str, Any]], *, content_type: str) -> tuple[int, str]:
    """(status, one readable line) for pydantic's errors: 400 for JSON that does not
    parse, 415 for a body that is not JSON, 422 for the wrong shape or values."""
    if any(isinstance(e.get("input"), bytes) for e in errors):  # FastAPI parses only JSON media types
        got = f"Content-Type: {content_type[:80]!r}" if content_type else "no Content-Type"
        return 415, f"the body must be JSON sent with Content-Type: application/json (got {got})"
    for e in errors:
        if e.get("type") == "json_invalid":
            where = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            reason = (e.get("ctx") or {}).get("error", e.get("msg"))
            return 400, f"malformed JSON: {reason} (at character {where})"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type", "").endswith("_type") and type(e.get("input")) in _JSON_NAMES:
            msg += f", got {_JSON_NAMES[type(e['input'])]}"
        if e.get("type") == "extra_forbidden":
            msg = f"unknown field (the fields are {', '.join(SegmentRequest.model_fields)})"
        elif e.get("type") == "missing" and not loc:
            msg = "the request needs a JSON body"
        elif loc == "" and e.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid request: " + "; ".join(parts) + more


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` (413) from its Content-Length, or
    once that many bytes have arrived when there is none (chunked), before the
    application parses anything. The body is read here and handed on whole."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await error_response(400, f"Content-Length {length[:40].decode('latin-1')!r} is not a number")(
                    scope, receive, send
                )
            if int(length) > self.max_bytes:
                return await self._too_large(f"{int(length):,} bytes", scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(f"more than {self.max_bytes:,} bytes", scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, size: str, scope: dict, receive: Callable, send: Callable) -> None:
        message = (
            f"request body of {size} is over the limit of {self.max_bytes:,} bytes (limits.max_body_bytes): "
            "send fewer or shorter documents per request"
        )
        await error_response(413, message, headers={"Connection": "close"})(scope, receive, send)


# ----------------------------------------------------------------------------- the model card


def model_card(seg: Segmenter, *, source: str | None = None) -> dict[str, Any]:
    """What is serving: task, labels, attention and encoder (classes and main settings),
    CRF or not, size, and the segmenter version; read from the live model, so it holds
    whichever way the model was loaded."""
    from segmenter.models.attention import MultiHeadAttention

    net = getattr(seg.net, "structure", seg.net)  # the ONNX backend's: the network's parts, as its file names them
    attention = next((m for m in net.modules() if isinstance(m, MultiHeadAttention)), None)
    settings = {
        k: getattr(attention, k) for k in ("num_heads", "window_size", "bias", "temperature") if hasattr(attention, k)
    }
    encoder = getattr(net, "encoder", None)
    return {
        "segmenter_version": segmenter.__version__,
        "source": source,
        "task": seg.task,
        "labels": list(seg.label_names),
        "attention": {"type": type(attention).__name__ if attention is not None else None, **_plain(settings)},
        "encoder": type(encoder).__name__ if encoder is not None else None,
        "crf": getattr(net, "crf", None) is not None,
        "layers": len(getattr(net, "blocks", ())),
        "parameters": sum(p.numel() for p in net.parameters()),
        "max_units_per_window": seg.max_units,
        "backend": getattr(seg.net, "backend", "torch"),
    }


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in d.items()}


# ----------------------------------------------------------------------------- the app


def _result(pred: Prediction, doc_id: str | None) -> dict[str, Any]:
    """Segmenter.segment's answer (return_probs=True) as JSON: units, labels by name,
    boundary probabilities, boundaries, the segments and their spans (character offsets
    into the request's text; for "lines", into the lines joined by line breaks)."""
    out = pred.to_json(doc_id)
    out["segments"] = pred.segments
    return out


def create_app(
    seg: Segmenter,
    *,
    limits: Limits = Limits(),
    batching: Batching = Batching(),
    default_units: str | None = None,
    source: str | None = None,
    warmup: bool = True,
    cors_origins: tuple[str, ...] = (),
    tokenizer: Any = None,
) -> FastAPI:
    """The server around ``seg``. The batcher starts with the app (its lifespan: uvicorn, or
    ``with TestClient(app)``), after one warm-up prediction so the first request does not
    pay for lazy initialisation. ``cors_origins``:
    web pages on these origins may call the API from the browser (none by default; the page
    at / is same-origin and needs none). ``tokenizer``: what counts a request's
    ``max_segment_tokens`` (segmenter.core.limits.token_counter takes it; None: requests may not
    ask for a token limit). It is the server's to choose: a request never names a file to load."""
    # A text request that names no units is split as the model was trained (seg.units), unless
    # the server was started with other units.
    default_units = check_units(seg.resolve_units(default_units))
    count_tokens = None if tokenizer is None else length_limits.token_counter(tokenizer)

    def infer(docs: list[list[str]]) -> list[Tensor]:  # in the batcher's thread: the network, batched
        return seg.logits(docs)

    batcher = batching.batcher(infer)
    splitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmenter-split")  # pysbd: slow, pure Python
    card = {
        **model_card(seg, source=source),
        "default_units": default_units,
        "tokenizer": None if tokenizer is None else (tokenizer if isinstance(tokenizer, str) else repr(tokenizer)),
        "limits": asdict(limits),
        "batching": asdict(batching),
        # the segment-length prior a request can switch (length_prior): null when the model has none
        "length_prior": None if seg.calibration.length_prior is None else seg.calibration.length_prior.to_dict(),
    }
    page = resources.files("segmenter.serve").joinpath("index.html").read_text(encoding="utf-8")
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if warmup:
            await batcher.run_in_worker(infer, [["Warm up.", "Second unit."]])
            if default_units == "sentences":
                await asyncio.get_running_loop().run_in_executor(
                    splitter, partial(seg.split, "Warm up. Now.", units="sentences")
                )
        log.info("ready: %s (%s, %s)", source or "model", card["attention"]["type"], card["task"])
        try:
            yield
        finally:
            await batcher.stop()
            splitter.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="segmenter",
        version=segmenter.__version__,
        summary="Neural text segmentation: split text into topical or structural segments",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the service must work offline. /openapi.json stays.
        redoc_url=None,
    )
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.message, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(list(e.errors()), content_type=request.headers.get("content-type", ""))
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {
            404: f"no such endpoint: {request.url.path} (see GET /info, POST /segment, GET /health)",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(e.status_code, str(e.detail))
        if e.status_code == 400 and request.url.path == "/segment":  # FastAPI could not decode the body at all
            message = "the body could not be read as JSON: it is not UTF-8, or it is nested too deeply"
        return error_response(e.status_code, message, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(e).__name__, e, exc_info=e)
        return error_response(500, f"internal error ({type(e).__name__}); the server logged it and keeps serving")

    async def units_of(doc: Document | SegmentRequest, units: str) -> tuple[list[str], str, list[Span]]:
        """The document's units, its text and the units' spans in it (lines: their text form)."""
        if doc.lines is not None:
            found = [normalize_unit(line) for line in doc.lines]
            text, spans = joined(found)
        elif units == "lines":
            found, spans = seg.split_with_spans(doc.text, units="lines")  # cheap: no thread hop
            text = doc.text
        else:
            found, spans = await asyncio.get_running_loop().run_in_executor(
                splitter, partial(seg.split_with_spans, doc.text, units="sentences")
            )
            text = doc.text
        if not found:
            raise ApiError(422, f"no {units} found in the text")  # e.g. only punctuation the splitter drops
        if len(found) > limits.max_units_per_doc:
            raise ApiError(
                413,
                f"a document of {len(found):,} {'lines' if doc.lines is not None else units} is over the limit of "
                f"{limits.max_units_per_doc:,} units per document (limits.max_units_per_doc): split it into parts",
            )
        return found, text, spans

    async def answer(req: SegmentRequest) -> dict[str, Any]:
        units = req.units or default_units
        docs = req.documents if req.documents is not None else [req]
        if len(docs) > limits.max_docs_per_request:
            raise ApiError(
                413,
                f"{len(docs)} documents in one request is over the limit of {limits.max_docs_per_request} "
                "(limits.max_docs_per_request): send them in several requests",
            )
        chars = sum(len(d.text) for d in docs if d.text is not None)
        if chars > limits.max_text_chars:  # pysbd takes ~1.5 s per 60,000 characters, in one thread for all
            raise ApiError(
                413,
                f"{chars:,} characters of text in one request is over the limit of {limits.max_text_chars:,} "
                "(limits.max_text_chars): send it in several requests",
            )
        steer = {
            "threshold": req.threshold,
            "num_segments": req.num_segments,
            "min_segment_units": req.min_segment_units or 1,
        }
        try:  # a prior this model does not have: refused before any work
            decisions.prior_weight(seg.calibration.length_prior, req.length_prior)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        if req.max_segment_tokens is not None and count_tokens is None:
            raise ApiError(
                422,
                f"max_segment_tokens={req.max_segment_tokens}: this server counts no tokens (it was started without "
                "tokenizer=); ask for max_segment_chars instead",
            )
        bound = {
            "max_segment_chars": req.max_segment_chars,
            "max_segment_tokens": req.max_segment_tokens,
            "tokenizer": count_tokens if req.max_segment_tokens is not None else None,
        }
        try:  # before the splitter: settings that can never hold
            length_limits.check(**bound, min_segment_units=steer["min_segment_units"])
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        found = [await units_of(d, units) for d in docs]
        unit_lists = [u for u, _, _ in found]
        names = [f"document {d.id or i}" for i, d in enumerate(docs)] if req.documents is not None else None
        try:
            decisions.check_documents([len(u) for u in unit_lists], names=names, **steer)
        except ValueError as e:  # e.g. more segments than the document has units
            raise ApiError(422, str(e)) from None
        logits = await batcher.submit(unit_lists)

        def decide() -> list[Prediction]:
            preds = []
            for i, ((u, text, spans), lg) in enumerate(zip(found, logits)):
                try:
                    preds.append(
                        seg.decide(u, lg, **steer, **bound, length_prior=req.length_prior, text=text, unit_spans=spans)
                    )
                except ValueError as e:  # limits that cannot all hold for this document
                    raise ApiError(422, f"{names[i]}: {e}" if names else str(e)) from None
            return preds

        # Off the event loop: a CRF's Viterbi pass or the decisions' dynamic programmes over a long
        # document would hold up every other request.
        preds = await asyncio.to_thread(decide)
        if req.documents is None:
            return _result(preds[0], req.id)
        return {
            "documents": [_result(p, d.id if d.id is not None else str(i)) for i, (d, p) in enumerate(zip(docs, preds))]
        }

    @app.post("/segment", summary="Segment one document (text or lines) or a batch (documents)")
    async def segment_endpoint(req: SegmentRequest) -> JSONResponse:
        try:
            body = await asyncio.wait_for(answer(req), timeout=limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                f"the request took longer than the limit of {limits.request_timeout_s:g} s (limits.request_timeout_s): "
                "send shorter or fewer documents, or try again when the server is less busy",
            ) from None
        except Overloaded as e:
            raise ApiError(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        return JSONResponse(body)

    @app.get("/health", summary="Liveness: ok while the batcher runs; queue depth and counts")
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "queued_documents": batcher.queued_docs,
                "batches": batcher.batches,
                "documents": batcher.docs_done,
                "uptime_s": round(time.monotonic() - started, 3),
            }
        )

    @app.get("/info", summary="The model card: task, labels, attention, encoder, version, limits")
    async def info() -> JSONResponse:
        return JSONResponse(card)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )
    return app

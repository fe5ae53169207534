"""The HTTP API of `skyeye serve`: OpenAI's chat completions over one SkyEye model (FastAPI + uvicorn).

Endpoints: `GET /health` (no key needed: liveness and counters), `GET /v1/models`, `GET /v1/models/{id}` and
`POST /v1/chat/completions`, whole or streamed as server-sent `chat.completion.chunk` events ending with
`data: [DONE]` (`stream_options.include_usage` adds a last chunk with the usage and no choices).

Boxes the answer names come in the extension field `skyeye` of the message (of the last chunk's delta when
streamed), which the official client keeps as an extra attribute: every box's phrase, `grid` (0-100) and
`pixels` of the full uploaded image, and for a GeoTIFF with a CRS its corners in `map` coordinates and in
`lonlat` (WGS84), with the image's size, rendering and georeferencing. `usage.prompt_tokens` counts the image's
visual tokens too (`prompt_tokens_details.image_tokens`).

Errors are `{"error": {"message", "type", "param", "code"}}`: 400 bad input (naming the field), 401 missing or
wrong key, 404 unknown model or path, 413 request or image too large, 429 every slot taken, 503 shutting down,
500 generation failed. Only 429 and 503 are worth retrying: every other answer carries `x-should-retry: false`,
which the official client obeys.

Order of checks, cheapest first, each before the next costs anything: the key (compared in constant time), a
slot (see `skyeye.serve.api.batcher`), the body size (declared, then counted while reading), the JSON and the
model name, then the image (`skyeye.serve.api.media`: byte and pixel limits before decoding) and the prompt's
length in the model's context. A client that goes away, while waiting or mid-stream, cancels its row and frees
its slot; nothing of a request is kept after its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from skyeye.model.inputs import encode
from skyeye.serve.api.batcher import (
    Admission,
    Batcher,
    Delta,
    Failed,
    Finished,
    Job,
    QueueFull,
    Sampling,
    ServerClosing,
)
from skyeye.serve.api.media import MB, MediaError, MediaLimits, MediaTooLarge, open_image_url
from skyeye.serve.api.openai_messages import ChatRequest, RequestError, parse_chat_request
from skyeye.serve.session import ConversationImage

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "skyeye-tiny"  # the name of the bundled model, served when no --model is given
JSON_ALLOWANCE = MB  # the request body may hold this much besides the base64 image


@dataclass(frozen=True)
class ServeSettings:
    model_id: str = DEFAULT_MODEL_ID
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    batch_window_ms: float = 100.0
    max_new_tokens: int = 256  # for a request that sets no max_tokens
    max_upload_mb: float = 20.0
    max_pixels: int = 100_000_000
    allowed_local_media_path: Path | None = None

    def media_limits(self) -> MediaLimits:
        allowed = self.allowed_local_media_path
        if allowed is not None and not Path(allowed).is_dir():
            raise NotADirectoryError(f"--allowed-local-media-path {allowed}: not a folder")
        resolved = None if allowed is None else Path(allowed).resolve()
        return MediaLimits(int(self.max_upload_mb * MB), self.max_pixels, resolved)

    @property
    def max_body_bytes(self) -> int:
        """The image as base64 (4 characters for 3 bytes) and the rest of the JSON."""
        return int(self.max_upload_mb * MB) * 4 // 3 + JSON_ALLOWANCE


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error", param=None):
        super().__init__(message)
        self.status, self.code, self.kind, self.param = status, code, kind, param


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


# Library errors as HTTP answers: status, OpenAI error type, code.
_STATUS = {
    MediaTooLarge: (413, "invalid_request_error", "image_too_large"),
    MediaError: (400, "invalid_request_error", "invalid_image"),
    RequestError: (400, "invalid_request_error", "invalid_request"),
    QueueFull: (429, "rate_limit_error", "queue_full"),
    ServerClosing: (503, "server_error", "shutting_down"),
}


def build_app(model, settings: ServeSettings):
    """The FastAPI app; its lifespan starts and stops the batching worker."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: serve a checkpoint folder or a released model with --llama")
    limits = settings.media_limits()
    batcher = Batcher(model, settings.max_batch, settings.max_queue, settings.batch_window_ms / 1000)
    decoders = anyio.CapacityLimiter(2)  # full-resolution images decoded at once: bounds their memory
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await anyio.to_thread.run_sync(batcher.close)

    app = FastAPI(title="SkyEye", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    def error_response(status: int, message: str, kind: str, code: str, param=None) -> JSONResponse:
        headers = {"x-should-retry": "true" if status in (429, 503) else "false"}
        if status in (429, 503):
            headers["retry-after"] = "1"
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err.status, str(err), err.kind, err.code, err.param)

    for error_class, (status, kind, code) in _STATUS.items():

        async def library_error(request, err, status=status, kind=kind, code=code):
            log.info("%d %s: %s", status, request.url.path, err)
            return error_response(status, str(err), kind, code, getattr(err, "param", None))

        app.add_exception_handler(error_class, library_error)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        code = "not_found" if err.status_code == 404 else "bad_request"
        message = f"{request.method} {request.url.path}: {err.detail}"
        return error_response(err.status_code, message, "invalid_request_error", code)

    @app.exception_handler(Exception)
    async def internal_error(request, err: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}: {err}", "server_error", "internal_error")

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header Authorization: Bearer KEY",
                           "invalid_api_key")  # fmt: skip

    def model_card() -> dict:
        return {"id": settings.model_id, "object": "model", "created": started, "owned_by": "skyeye"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_id, "in_progress": batcher.admitted,
                **dataclasses.asdict(batcher.counters)}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str, request: Request):
        authorize(request)
        _check_model(model_id, settings.model_id)
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        admission = batcher.admit()
        try:
            chat = parse_chat_request(await _read_json(request, settings.max_body_bytes))
            _check_model(chat.model, settings.model_id, "model")
            prepared = await anyio.to_thread.run_sync(_prepare, model, chat, settings, limits, limiter=decoders)
            events: asyncio.Queue = asyncio.Queue()
            job = prepared.job(chat, _deliverer(asyncio.get_running_loop(), events))
            batcher.submit(job, admission)
        except BaseException:
            admission.release()
            raise
        reply = _Reply(settings.model_id, chat, prepared, model.cfg.visual_tokens_per_image)
        if chat.stream:
            return _EventStream(_stream(reply, events), job, admission)
        try:
            event = await _next_event(request, events)
        except ClientGone:
            return error_response(499, "the client closed the connection", "invalid_request_error", "client_gone")
        finally:
            job.cancelled.set()  # a no-op once answered; stops the row of a client that went away
            admission.release()
        if isinstance(event, Failed):
            raise event.error if isinstance(event.error, ServerClosing) else _generation_failed(event.error)
        return reply.completion(event)

    return app


def serve(model, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs the API until interrupted."""
    import uvicorn

    uvicorn.run(build_app(model, settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def _check_model(name: str, served: str, param: str | None = None) -> None:
    if name != served:
        raise ApiError(404, f"model {name!r} not found: this server serves {served!r}", "model_not_found", param=param)


async def _read_json(request, limit: int):
    """The body parsed as JSON, refused with 413 once it passes `limit` bytes (declared or counted)."""
    declared = request.headers.get("content-length")
    too_large = f"the request body is over the limit of {limit / MB:.1f} MB (raise --max-upload-mb)"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, too_large, "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, too_large, "request_too_large")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(None, f"the request body is not valid JSON ({err})") from None


@dataclass
class _Prepared:
    image: ConversationImage
    prompt_tokens: int
    max_tokens: int

    def job(self, chat: ChatRequest, deliver) -> Job:
        decoding = chat.decoding
        return Job(
            image=self.image.image, question=chat.question, history=chat.history, task=chat.task,
            max_tokens=self.max_tokens, deliver=deliver, stop=decoding.stop, stream=chat.stream,
            sampling=Sampling(decoding.temperature, decoding.top_p, decoding.seed),
        )  # fmt: skip


def _prepare(model, chat: ChatRequest, settings: ServeSettings, limits: MediaLimits) -> _Prepared:
    """The request's image, its prompt's length with the image's tokens, and how many tokens it may generate
    (run in a worker thread: decoding and tokenising take CPU time)."""
    image = open_image_url(chat.image_url, limits, model.cfg.vision.image_size, chat.image_field)
    conversation = chat.history.copy().ask(chat.question, chat.task)
    segments = conversation.segments(model.cfg.prompt_style)
    prompt_tokens = len(encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image))
    positions = model.cfg.llm.max_position_embeddings
    context = min(model.cfg.max_context_len, positions - 1)  # and one position left to answer in
    if prompt_tokens > context:
        raise RequestError("messages", f"the conversation takes {prompt_tokens} tokens with its image, more than "
                           f"the model's context of {context}")  # fmt: skip
    room = positions - prompt_tokens
    requested = chat.decoding.max_tokens
    if requested is not None and requested > room:
        raise RequestError("max_tokens", f"{requested} tokens do not fit: the model's {positions} positions leave "
                           f"{room} after the {prompt_tokens}-token prompt")  # fmt: skip
    return _Prepared(image, prompt_tokens, requested or min(settings.max_new_tokens, room))


def _deliverer(loop: asyncio.AbstractEventLoop, events: asyncio.Queue):
    """Hands the worker thread's events to the request's coroutine."""

    def deliver(event) -> None:
        # A closed event loop means the server is gone, and so is the client.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(events.put_nowait, event)

    return deliver


async def _next_event(request, events: asyncio.Queue):
    """The next event of the job, or `ClientGone` if the client disconnects first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiting, watching = asyncio.ensure_future(events.get()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, watching):
            task.cancel()
    if not waiting.done() or waiting.cancelled():
        raise ClientGone
    return waiting.result()


def _generation_failed(error: BaseException) -> ApiError:
    return ApiError(500, f"generation failed: {type(error).__name__}: {error}", "generation_failed", "server_error")


class _Reply:
    """The JSON of one answer, whole (`completion`) or as chunks (`chunk`, `usage_chunk`)."""

    def __init__(self, model_id: str, chat: ChatRequest, prepared: _Prepared, image_tokens: int):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id, self.chat, self.prepared, self.image_tokens = model_id, chat, prepared, image_tokens

    def _envelope(self, kind: str, **fields) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id,
                "system_fingerprint": None, **fields}  # fmt: skip

    def completion(self, finished: Finished) -> dict:
        message = {"role": "assistant", "content": finished.text, "refusal": None,
                   "skyeye": self.extension(finished.text)}  # fmt: skip
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finished.finish_reason}
        return self._envelope("chat.completion", choices=[choice], usage=self.usage(finished))

    def chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        usage = {"usage": None} if self.chat.include_usage else {}
        return self._envelope("chat.completion.chunk", choices=[choice], **usage)

    def usage_chunk(self, finished: Finished) -> dict:
        return self._envelope("chat.completion.chunk", choices=[], usage=self.usage(finished))

    def usage(self, finished: Finished) -> dict:
        prompt = self.prepared.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": finished.completion_tokens,
                "total_tokens": prompt + finished.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": self.image_tokens}}  # fmt: skip

    def extension(self, text: str) -> dict:
        """The boxes in the answer, in the full image's pixels and, for a georeferenced image, on the map."""
        seen = self.prepared.image
        image, georeference, (width, height) = seen.image, seen.georeference, seen.size
        boxes = [seen.box_record(box) for box in seen.find_boxes(text)]
        described = {"width": width, "height": height, "mode": image.original_mode, "rendering": image.rendering}
        if georeference is not None:
            described["georeference"] = georeference.describe()
        return {"boxes": boxes, "image": described}


class _EventStream(StreamingResponse):
    """Server-sent events of one answer. However the response ends (answered, the client gone, even before its
    first event) its row is cancelled and its slot freed."""

    def __init__(self, events, job: Job, admission: Admission):
        super().__init__(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.job, self.admission = job, admission

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled.set()
            self.admission.release()


async def _stream(reply: _Reply, events: asyncio.Queue):
    yield _sse(reply.chunk({"role": "assistant", "content": ""}))
    while True:
        event = await events.get()
        if isinstance(event, Delta):
            yield _sse(reply.chunk({"content": event.text}))
            continue
        if isinstance(event, Finished):
            yield _sse(reply.chunk({"skyeye": reply.extension(event.text)}, event.finish_reason))
            if reply.chat.include_usage:
                yield _sse(reply.usage_chunk(event))
        else:
            error = event.error if isinstance(event.error, ServerClosing) else _generation_failed(event.error)
            yield _sse({"error": {"message": str(error), "type": "server_error", "param": None, "code": None}})
        break
    yield "data: [DONE]\n\n"


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

"""The starlette app: each endpoint a small function of a request; generation runs on the scheduler.

Every generation is a lane of its model's Scheduler (charstream.server.scheduler): one thread steps
all of them together on one kernel, built once per model. A model that is reloaded is replaced,
never changed: its generations finish on the old model's scheduler while new ones start on the new.
"""
import json
import logging
import time
import uuid
from importlib import resources

import anyio

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..batching import Request, prepare
from ..errors import CharstreamError
from ..facts import facts
from .generation import ChoiceFailed, Choices, Lease, Slots
from .scheduler import Inbox, Schedulers
from .guard import LOOPBACK_HOSTS, Guard
from .models import ModelRegistry
from .openai_schema import MAX_TOKENS, RequestError, error_body, parse_completion, parse_generate

MAX_BODY = 256 * 1024    # bytes: the largest request body read
DEFAULT_PARALLEL = 32    # generations at once; beyond, 503 at once
FIRST_BLOCK = 1          # characters in the first block: the first one leaves as soon as it is drawn
MAX_BLOCK = 4096         # the largest block, as for `charstream generate`
STUCK = 2                # seconds a stream may stay blocked on its client once the server is stopping
INLINE_PROMPT = 4096     # characters of a prompt read on the event loop (about 0.1 ms); a longer one, a
                         # model to load or a kernel to build goes to a worker thread (a trip there cost
                         # 0.3 ms of the first character)
MAX_LANES = 4096         # lanes of a scheduler's kernel (a larger --parallel takes turns on them)


log = logging.getLogger("charstream.server")


def create_app(model_path, parallel=DEFAULT_PARALLEL, registry=None, allowed_hosts=LOOPBACK_HOSTS, api_key=None,
               threads=1):
    """The app serving the model at `model_path` (ModelFileError if it cannot be loaded now), answering
    requests whose Host is one of `allowed_hosts` and, given `api_key`, that carry it (charstream.server.guard);
    at most `parallel` generations at once, stepped together on a kernel of `threads` threads."""
    registry = registry or ModelRegistry(model_path)
    page = resources.files(__package__).joinpath("page.html").read_bytes()
    routes = [
        Route("/", lambda request: HTMLResponse(page)),
        Route("/health", lambda request: JSONResponse({"status": "ok"})),
        Route("/info", info),
        Route("/v1/models", list_models),
        Route("/v1/models/{model_id:path}", get_model),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/generate", generate),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, RequestError: request_error,
                                                       Exception: server_error},
                    middleware=[Middleware(Guard, allowed_hosts=allowed_hosts, api_key=api_key)])
    app.state.registry = registry
    app.state.slots = Slots(parallel)
    app.state.schedulers = Schedulers(min(parallel, MAX_LANES), threads)
    return app


async def http_error(request, exc):
    message = (f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404
               else f"{exc.detail}: {request.method} {request.url.path}")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_body(message, "invalid_request_error", None, code), exc.status_code,
                        headers=getattr(exc, "headers", None))


async def request_error(request, exc):
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return JSONResponse(exc.body(), exc.status, headers=headers)


async def server_error(request, exc):
    """A bug, never the client's input: the details go to the log, the client learns nothing of them."""
    log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal error", "server_error", None, "internal_error"), 500,
                        headers={"X-Content-Type-Options": "nosniff"})   # sent from outside Guard


def _model_object(registry, model):
    """OpenAI's model object, with the model's facts under "meta" (as llama.cpp's server puts its own)."""
    return {"id": registry.id, "object": "model", "created": registry.created, "owned_by": "charstream",
            "meta": facts(model)}


async def info(request):
    registry = request.app.state.registry
    facts = await run_in_threadpool(registry.facts)
    return JSONResponse(facts)


async def list_models(request):
    registry = request.app.state.registry
    model = await run_in_threadpool(registry.current)
    return JSONResponse({"object": "list", "data": [_model_object(registry, model)]})


async def get_model(request):
    registry = request.app.state.registry
    if request.path_params["model_id"] != registry.id:
        raise RequestError(f"the model {request.path_params['model_id']!r} does not exist", "model",
                           "model_not_found", status=404)
    model = await run_in_threadpool(registry.current)
    return JSONResponse(_model_object(registry, model))


async def _read_json(request):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _too_large()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}", None, "invalid_json") from None


def _too_large():
    return RequestError(f"the request body is larger than {MAX_BODY:,} bytes", None, "request_too_large", status=413)


async def _start(request, gen):
    """Take gen.n slots and start its n generations on the model's scheduler: (lease, Choices);
    RequestError if it cannot."""
    slots = request.app.state.slots
    if not slots.try_acquire(gen.n):
        raise RequestError(f"the server is busy: {slots.limit} generations are running; try again",
                           None, "server_busy", status=503, type="server_error")
    lease = Lease(slots, gen.n)
    try:
        state = request.app.state
        model = state.registry.unchanged()
        if model is None or not state.schedulers.has(model) or len(gen.prompt) > INLINE_PROMPT:
            scheduler, lanes = await run_in_threadpool(_prepare, state, gen, model)
        else:
            scheduler, lanes = _prepare(state, gen, model)
    except (ValueError, TypeError, CharstreamError) as e:
        lease.release()
        raise RequestError(str(e).splitlines()[0], None, "invalid_value") from None
    except BaseException:
        lease.release()
        raise
    inbox = Inbox()
    streams = [scheduler.submit(lane, inbox) for lane in lanes]
    return lease, Choices(streams, inbox, gen.length, gen.stop, slots.stopping)


def _prepare(state, gen, model=None):
    """(scheduler, lanes) of gen on `model` (None: the current one, loaded if its file changed)."""
    model = model or state.registry.current()
    return state.schedulers.for_model(model), _lanes(model, gen)


def _lanes(model, gen):
    """The lanes of gen's choices, checked (ValueError, CharstreamError): choice i seeded gen.choice_seed(i)."""
    return [prepare(model, Request(gen.prompt, gen.temperature, gen.choice_seed(i), gen.sampler, gen.top_k,
                                   gen.top_p, False, gen.length), i, first_block=FIRST_BLOCK)
            for i in range(gen.n)]


async def _run(lease, choices):
    """The (index, text, finish) pieces of a started request's choices; the slots are given back as
    soon as the last piece is drawn (or the generation fails)."""
    slots = lease.slots
    left = len(choices.streams)
    try:
        async for i, text, finish in choices:
            slots.produced += len(text)
            if finish is not None:
                left -= 1
                if left == 0:
                    lease.release()
            yield i, text, finish
    finally:
        choices.close()
        lease.release()


class GenerationResponse(StreamingResponse):
    """A stream that closes its generations and gives their slots back however it ends: done, client
    gone (starlette then stops iterating), or server stopping. At shutdown a generation ends at its
    next piece; one stuck behind a client that stopped reading is dropped after STUCK seconds."""

    def __init__(self, content, lease, choices, **kwargs):
        super().__init__(content, **kwargs)
        self.lease, self.slots, self.choices = lease, lease.slots, choices

    async def __call__(self, scope, receive, send):
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drop_when_stuck, tg.cancel_scope)
                await super().__call__(scope, receive, send)
                tg.cancel_scope.cancel()
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                self.choices.close()
                self.lease.release()

    async def _drop_when_stuck(self, scope):
        while not self.slots.stopping.is_set():
            await anyio.sleep(0.1)
        await anyio.sleep(STUCK)
        scope.cancel()


async def completions(request):
    registry = request.app.state.registry
    gen = parse_completion(await _read_json(request), registry.id)
    lease, choices = await _start(request, gen)
    cid, created = "cmpl-" + uuid.uuid4().hex[:24], int(time.time())

    def chunk(items):
        return {"id": cid, "object": "text_completion", "created": created, "model": registry.id,
                "choices": [{"text": _clean(text), "index": i, "logprobs": None, "finish_reason": finish}
                            for i, text, finish in items]}

    def usage(n):
        return {"prompt_tokens": len(gen.prompt), "completion_tokens": n, "total_tokens": len(gen.prompt) + n}

    if gen.stream:
        async def events():
            n = 0
            try:
                async for i, text, finish in _run(lease, choices):
                    n += len(text)
                    yield _sse(chunk([(i, text, finish)]))
            except ChoiceFailed as e:   # a sampler plugin that breaks mid-stream
                yield _sse(error_body(str(e).splitlines()[0], "server_error"))
                return
            if gen.include_usage:
                yield _sse({**chunk([]), "usage": usage(n)})
            yield b"data: [DONE]\n\n"
        return GenerationResponse(events(), lease, choices, media_type="text/event-stream",
                                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    texts, finishes = [[] for _ in range(gen.n)], [None] * gen.n
    pieces = _run(lease, choices)
    try:
        async for i, text, finish in pieces:
            texts[i].append(text)
            finishes[i] = finish
            if await request.is_disconnected():
                break
    except ChoiceFailed as e:
        raise RequestError(str(e).splitlines()[0], None, "sampler_failed", status=500, type="server_error")
    finally:
        await pieces.aclose()
    texts = ["".join(t) for t in texts]
    return JSONResponse({**chunk([(i, t, finishes[i]) for i, t in enumerate(texts)]),
                         "usage": usage(sum(map(len, texts)))})


async def generate(request):
    gen = parse_generate({k: request.query_params.getlist(k) for k in request.query_params})
    lease, choices = await _start(request, gen)

    async def text():
        yield _utf8(gen.prompt)
        try:
            async for _, piece, _ in _run(lease, choices):
                yield _utf8(piece)
        except ChoiceFailed:   # a sampler plugin that breaks: the text so far stands
            return
    return GenerationResponse(text(), lease, choices, media_type="text/plain; charset=utf-8",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(obj):
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


def _clean(text):
    """Text that JSON and UTF-8 can carry: a lone surrogate (only in a vocabulary from an older model
    file that learned surrogate-escaped bytes) becomes U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _utf8(text):
    """UTF-8 bytes of text, a lone surrogate written back as the byte it stands for (as `generate` does)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        out = []
        for c in text:
            try:
                out.append(c.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                out.append("\ufffd".encode("utf-8"))
        return b"".join(out)

"""The explorer's web part: one plain HTML page (page.html, its script and styles inside it: nothing is
fetched from anywhere else, so it works offline) and the four requests it makes, answered by
reading.py and by task 08's own `stream`. A Starlette app, which __main__.py serves with uvicorn on
127.0.0.1 only.

    GET  /                the page
    GET  /api/models      what each checkpoint is, its run, and the text to start from
    POST /api/read        {text, temperature, top_k, top_p}: losses, next tokens, attention, per model
    POST /api/stream      {model, text, temperature, top_k, top_p, seed, tokens}: text, as it comes
    POST /api/positions   {}: the loss by position of every model (seconds to minutes)

A mistake the user can fix (a character outside the vocabulary, a text too long) is answered with
status 400 and {"error": message}, which the page shows where the numbers would be.
"""

import json
import time
from pathlib import Path

import anyio
import torch
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from gpt.errors import UserError
from gpt.generate import sampler, stream

from . import reading

PAGE = Path(__file__).with_name("page.html")
PIECE_SECONDS = 0.03  # a stream's text is sent in pieces of this long: about 30 a second on the page
MAX_STREAM = 100_000  # tokens one press of the page's button may stream


def make_app(opened: list, failed: list[dict], text: str) -> Starlette:
    """The app for the opened checkpoints (reading.Opened), those that failed to open ({path, message}:
    the page shows their messages), and the text the page starts with."""

    async def page(request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def models(request):
        return JSONResponse({"models": [reading.about(o) for o in opened], "failed": failed, "text": text,
                             "max_tokens": reading.MAX_TOKENS})

    @mistakes_answered
    async def read(request):
        body = await json_body(request)
        sampling = reading.sampling_settings(body.get("temperature", 1.0), body.get("top_k"), body.get("top_p"))
        return JSONResponse(await anyio.to_thread.run_sync(read_all, opened, str(body.get("text", "")), sampling))

    @mistakes_answered
    async def stream_text(request):
        body = await json_body(request)
        o = opened[index(body.get("model", 0), len(opened))]
        sampling = reading.sampling_settings(body.get("temperature", 1.0), body.get("top_k"), body.get("top_p"))
        seed, n = whole(body.get("seed", 1337), "seed"), whole(body.get("tokens", 500), "tokens")
        if not 1 <= n <= MAX_STREAM:
            raise UserError(f"stream 1 to {MAX_STREAM:,} tokens at a time (got {n:,})")
        prompt = o.tokenizer.encode(str(body.get("text", "")))
        if not prompt:
            raise UserError("type some text for the stream to start from")
        tokens = stream(o.model, prompt, sampler(**sampling, generator=torch.Generator().manual_seed(seed)))
        text_of = o.tokenizer.stream_decoder()

        def piece(left: int) -> tuple[str, int]:  # in a worker thread: task 08's stream, for PIECE_SECONDS
            out, start = [], time.perf_counter()
            with o.lock:
                while len(out) < left and time.perf_counter() - start < PIECE_SECONDS:
                    out.append(text_of(next(tokens)))
            return "".join(out), len(out)

        async def pieces():  # Starlette stops it when the page goes away (its Stop button)
            left = n
            while left > 0:
                text, done = await anyio.to_thread.run_sync(piece, left)
                left -= done
                yield text

        return StreamingResponse(pieces(), media_type="text/plain; charset=utf-8")

    async def positions(request):
        results = []
        for o in opened:
            try:
                # abandon_on_cancel: when the explorer stops, it doesn't wait for a measurement to end
                results.append(await anyio.to_thread.run_sync(reading.loss_by_position, o, abandon_on_cancel=True))
            except UserError as e:
                results.append({"error": str(e)})
        return JSONResponse({"models": results})

    routes = [Route("/", page), Route("/api/models", models), Route("/api/read", read, methods=["POST"]),
              Route("/api/stream", stream_text, methods=["POST"]), Route("/api/positions", positions, methods=["POST"])]
    # only pages addressed to this machine: another site can't reach the server through a name it controls
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])])


def read_all(opened: list, text: str, sampling: dict) -> dict:
    """reading.read for every model (a model that can't read the text says why), and how long each
    took; then each model's loss minus the first one's, where they read the same tokens."""
    results = []
    for o in opened:
        start = time.perf_counter()
        try:
            result = reading.read(o, text, sampling)
        except UserError as e:
            result = {"error": str(e)}
        results.append({**result, "ms": 1000 * (time.perf_counter() - start)})
    first = results[0]
    return {"models": results, "differences": [
        None if "error" in first or "error" in r else reading.differences(first, r) for r in results[1:]]}


def mistakes_answered(handler):
    """A UserError raised while answering: status 400 and its message, for the page to show."""
    async def answer(request):
        try:
            return await handler(request)
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
    return answer


async def json_body(request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise UserError("the request is not JSON") from None
    if not isinstance(body, dict):
        raise UserError("the request is not a JSON object")
    return body


def whole(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} is a whole number (got {value!r})") from None


def index(value, n: int) -> int:
    i = whole(value, "model")
    if not 0 <= i < n:
        raise UserError(f"there is no model {i}: the page has {n}")
    return i

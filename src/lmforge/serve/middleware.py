"""The gate every ``/v1`` request passes before a handler sees it, and the one usage line it leaves after.

In order: headers must be ASCII (400; 401 for ``Authorization``), a client address that sent too many
wrong keys waits (429), the API key (401), the rate limit per key (429), and the body size (413) —
enforced while the body is read, so a chunked upload without Content-Length is cut off at the limit
instead of being buffered whole. The response is watched on its way out: its status, whether it
finished or the client left (logged as 499 with the tokens actually sent), and any exception the
handler raised (500, attributed to this request alone).

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one buffers nothing but also
cannot see a streaming response end early, which is what the disconnect accounting needs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

from lmforge.serve.errors import ApiError
from lmforge.serve.guardrails import key_id

logger = logging.getLogger(__name__)

DISCONNECTED = 499  # nginx's "client closed request": the usage log's status for a client that left


class GuardMiddleware:
    def __init__(self, app, ctx):
        self.app, self.ctx = app, ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"].startswith("/v1/") or scope["path"] == "/tokenize"):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = {"request_id": uuid.uuid4().hex[:16], "prompt_tokens": 0, "completion_tokens": 0,
                 "filter_hits": [], "pii_redacted": {}}
        scope.setdefault("state", {})["usage"] = state
        state["started"] = started
        response = {"status": None, "complete": False}

        async def watched_send(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response["complete"] = True
            await send(message)

        try:
            refusal = self.admit(scope, state)
            body = None
            if refusal is None:
                body, refusal = await read_body(receive, scope, self.ctx.config.max_request_bytes)
            if refusal is not None:
                await refusal.send(watched_send)
            elif body is not None:
                await self.app(scope, replay(body, receive), watched_send)
        except Exception as exc:  # a handler bug or a failed generation: a 500 for this request only
            if not isinstance(exc, OSError):  # OSError: the client went away while we were sending
                logger.exception("request %s failed", state["request_id"])
                if response["status"] is None:
                    await ApiError(500, f"the request failed ({type(exc).__name__}); see the server log",
                                   "server_error", "server_error").send(watched_send)
        finally:
            status = response["status"] if response["complete"] else DISCONNECTED
            self.log(scope, state, status, started)

    def admit(self, scope, state) -> ApiError | None:
        """Header, authentication and rate checks; the refusal to send, or None to go on."""
        ctx = self.ctx
        headers = dict(scope["headers"])
        for name, value in scope["headers"]:
            if not value.isascii():
                state["key"] = "rejected"
                if name == b"authorization":
                    return ApiError(401, "the Authorization header is not ASCII; send 'Bearer <key>'",
                                    "invalid_api_key")
                return ApiError(400, f"header '{name.decode('latin-1')}' is not ASCII; send ASCII header values",
                                "invalid_header")
        client = f"client-{scope['client'][0] if scope.get('client') else '?'}"
        if ctx.keys.required:
            if (wait := ctx.auth_failures.wait(client)) > 0:
                state["key"] = "rejected"
                return ApiError(429, f"too many wrong API keys from this address; retry in {wait:.0f} s",
                                "too_many_auth_failures", "rate_limit_error", retry_after=wait)
            try:
                api_key = ctx.keys.check(headers.get(b"authorization", b"").decode("ascii"))
            except PermissionError as exc:
                state["key"] = "rejected"
                ctx.auth_failures.acquire(client)
                return ApiError(401, str(exc), "invalid_api_key")
            state["key"] = key_id(api_key)
        else:
            state["key"] = client
        if (wait := ctx.limiter.acquire(state["key"])) > 0:
            return ApiError(429, f"rate limit of {ctx.config.rate_per_minute:g} requests/minute reached; "
                            f"retry in {wait:.1f} s", "rate_limit_exceeded", "rate_limit_error", retry_after=wait)
        return None

    def log(self, scope, state, status, started) -> None:
        state.pop("started", None)
        if status == DISCONNECTED:
            state["disconnected"] = True
            state["tokens_generated"] = state["completion_tokens"]
            state["completion_tokens"] = state.get("tokens_sent", 0)
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "endpoint": scope["path"], "status": status,
                 "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                 "filter_version": self.ctx.content_filter.version if self.ctx.content_filter else None, **state}
        self.ctx.usage.write(entry)
        self.ctx.metrics.observe(entry)


async def read_body(receive, scope, limit: int) -> tuple[bytes | None, ApiError | None]:
    """The whole body, or a 413 as soon as it passes ``limit`` bytes (declared or counted); None if the client left."""
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            return None, ApiError(400, "Content-Length is not a number", "invalid_header")
        if int(declared) > limit:
            return None, _too_large(int(declared), limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # stop reading: the rest of the upload is never held
            return None, _too_large(size, limit, counted=True)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _too_large(size: int, limit: int, counted: bool = False) -> ApiError:
    amount = f"more than {limit} bytes" if counted else f"{size} bytes"
    return ApiError(413, f"request body of {amount} is over the limit of {limit}; send a shorter prompt",
                    "request_too_large")


def replay(body: bytes, receive):
    """A ``receive`` that gives the body already read, then passes on (so a disconnect is still seen)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again():
        return pending.pop() if pending else await receive()

    return receive_again

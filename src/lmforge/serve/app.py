"""An OpenAI-compatible HTTP server for a causal LM, with guardrails and a usage log.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(both with ``stream: true`` as server-sent events), and ``GET /health``.
Every ``/v1`` request passes, in order: API key (401), rate limit per key (429),
body size (413), input content filter (400), prompt length (413) and max_tokens
(400) checks; the generated text passes stop sequences, the output filter and
PII redaction before it leaves. One JSON line per request goes to the usage log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from lmforge.serve.batching import BatchQueue
from lmforge.serve.generation import GenerateFn, GenerationRequest, ModelGenerator
from lmforge.serve.guardrails import ApiKeys, OutputGuard, RateLimiter, key_id, load_filter
from lmforge.serve.usage import UsageLog

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Everything the server enforces; the defaults suit a single-user loopback deployment."""

    model_name: str = "lmforge"
    api_keys: tuple[str, ...] = ()
    rate_per_minute: float = 120.0  # requests per minute per key (per client address without keys)
    rate_burst: int | None = None  # bucket size; default = one minute's worth
    max_request_bytes: int = 64 * 1024
    max_prompt_tokens: int | None = None  # default: the model's context length minus max_tokens_limit
    max_tokens_limit: int = 512
    default_max_tokens: int = 128
    content_filter: bool = True
    filter_path: str | None = None  # YAML rule file; None = the shipped default rules
    redact_pii: bool = True
    usage_log: str | None = None
    log_text: bool = False  # keep prompts and completions in the usage log (off: counts and hits only)
    max_batch_size: int = 8
    batch_window_ms: float = 5.0
    holdback_chars: int = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionBody(_Body):
    prompt: str | list[str]


class ChatBody(_Body):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None


def _message_text(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def chat_prompt(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The model's own chat template when it has one, else a plain 'role: text' transcript."""
    plain = [{"role": str(m.get("role", "user")), "content": _message_text(m.get("content"))} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"


def create_app(model=None, tokenizer=None, config: ServeConfig | None = None,
               generate: GenerateFn | None = None) -> FastAPI:
    """The FastAPI app. ``generate`` replaces the model's batched generation (tests, other backends)."""
    config = config or ServeConfig()
    if tokenizer is None:
        raise ValueError("create_app needs the tokenizer (prompts are counted and templated with it)")
    if generate is None and model is None:
        raise ValueError("create_app needs a model or a generate function")
    generate = generate or ModelGenerator(model, tokenizer)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    # Prompt plus completion must fit the model's context: a small model gets half of it for each.
    max_tokens_limit = min(config.max_tokens_limit, context // 2) if context else config.max_tokens_limit
    max_prompt_tokens = config.max_prompt_tokens or (context - max_tokens_limit if context else 4096)
    content_filter = load_filter(config.filter_path) if config.content_filter else None
    screens_output = config.redact_pii or bool(content_filter and any("output" in r.applies_to
                                                                       for r in content_filter.rules))
    keys = ApiKeys(config.api_keys)
    limiter = RateLimiter(config.rate_per_minute, config.rate_burst)
    usage = UsageLog(config.usage_log, config.log_text)
    batcher = BatchQueue(generate, config.max_batch_size, config.batch_window_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.config, app.state.batcher, app.state.usage = config, batcher, usage

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return ApiError(400, f"invalid request: {where}: {first.get('msg', 'bad value')}", "invalid_request").response()

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        started = time.perf_counter()
        state = {"request_id": uuid.uuid4().hex[:16], "prompt_tokens": 0, "completion_tokens": 0,
                 "filter_hits": [], "pii_redacted": {}}
        request.state.usage = state
        record = request.url.path.startswith("/v1/")

        def log(status: int) -> None:
            if record:
                usage.write({"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                             "endpoint": request.url.path, "status": status, "key": state.get("key"),
                             "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                             "filter_version": content_filter.version if content_filter else None, **state})

        if record:
            try:
                api_key = keys.check(request.headers.get("authorization"))
            except PermissionError as exc:
                state["key"] = "rejected"
                log(401)
                return ApiError(401, str(exc), "invalid_api_key").response()
            state["key"] = key_id(api_key) if keys.required else f"client-{request.client.host if request.client else '?'}"
            wait = limiter.acquire(state["key"])
            if wait > 0:
                log(429)
                return ApiError(429, f"rate limit of {config.rate_per_minute:g} requests/minute reached; "
                                f"retry in {wait:.1f} s", "rate_limit_exceeded", "rate_limit_error"
                                ).response({"Retry-After": str(max(1, round(wait)))})
            # The declared length is checked before the body is read, so an oversized body is never held.
            declared = int(request.headers.get("content-length") or 0)
            size = declared if declared > config.max_request_bytes else len(await request.body())
            if size > config.max_request_bytes:
                log(413)
                return ApiError(413, f"request body of {size} bytes is over the limit of {config.max_request_bytes}"
                                "; send a shorter prompt", "request_too_large").response()
        try:
            response = await call_next(request)
        except Exception as exc:  # a failed generation: an OpenAI-style 500, and still a usage line
            logger.exception("request %s failed", state["request_id"])
            log(500)
            return ApiError(500, f"generation failed ({type(exc).__name__}); see the server log", "server_error",
                            "server_error").response()
        if not record:
            return response
        inner = response.body_iterator

        async def logged() -> AsyncIterator[bytes]:
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                log(response.status_code)

        response.body_iterator = logged()
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "lmforge"}]}

    def check_prompt(state: dict, text: str, ids: list[int]) -> None:
        if content_filter is not None and (hits := content_filter.hits(text, "input")):
            state["filter_hits"] += [f"input:{h}" for h in hits]
            raise ApiError(400, f"the prompt was refused by the content filter (rules: {', '.join(hits)})",
                           "content_filter")
        if len(ids) > max_prompt_tokens:
            raise ApiError(413, f"prompt has {len(ids)} tokens, the limit is {max_prompt_tokens}; shorten it",
                           "context_length_exceeded")

    def max_tokens_of(body: _Body, default: int) -> int:
        value = getattr(body, "max_completion_tokens", None) or body.max_tokens or min(default, max_tokens_limit)
        if not 1 <= value <= max_tokens_limit:
            raise ApiError(400, f"max_tokens={value} is outside 1..{max_tokens_limit}; ask for fewer",
                           "max_tokens_out_of_range")
        return value

    def check_common(body: _Body) -> None:
        if not 0.0 <= body.temperature <= 2.0 or not 0.0 < body.top_p <= 1.0:
            raise ApiError(400, f"temperature={body.temperature} / top_p={body.top_p} out of range; use temperature "
                           "in [0, 2] and top_p in (0, 1]", "invalid_sampling")
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported; send separate requests", "unsupported_n")
        if body.model not in (None, config.model_name):
            raise ApiError(404, f"model '{body.model}' is not served here; use '{config.model_name}'",
                           "model_not_found")

    def encode(text: str) -> list[int]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:  # an empty prompt: start from the beginning-of-sequence token
            ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        return ids

    async def run_one(state: dict, body: _Body, prompt_ids: list[int], max_tokens: int, on_piece=None,
                      cancelled: asyncio.Event | None = None) -> tuple[OutputGuard, str]:
        """Generate one completion through the guard; ``on_piece`` gets each released piece in the event loop."""
        loop = asyncio.get_running_loop()
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        # Text is held back only as far as some screen needs: a PII item or filter match, else a stop sequence.
        holdback = config.holdback_chars if screens_output else max((len(s) for s in stop), default=1) - 1
        guard = OutputGuard(content_filter, config.redact_pii, stop, holdback)

        def on_text(delta: str) -> bool:
            piece = guard.feed(delta)
            if piece and on_piece is not None:
                loop.call_soon_threadsafe(on_piece, piece)
            return guard.finish_reason is None and not (cancelled is not None and cancelled.is_set())

        request = GenerationRequest(prompt_ids, max_tokens, body.temperature, body.top_p, body.seed, on_text)
        output, batch_size = await batcher.submit(request)
        tail = guard.flush()
        if tail and on_piece is not None:
            on_piece(tail)
        state["prompt_tokens"] += len(prompt_ids)
        state["completion_tokens"] += output.completion_tokens
        state["batch_size"] = batch_size
        state["filter_hits"] += [f"output:{h}" for h in guard.filter_hits]
        for kind, count in guard.pii_counts.items():
            state["pii_redacted"][kind] = state["pii_redacted"].get(kind, 0) + count
        finish = guard.finish_reason or output.finish_reason
        state["finish_reason"] = finish
        if config.log_text:
            state["completion"] = guard.text
        return guard, finish

    def usage_of(state: dict) -> dict[str, int]:
        return {"prompt_tokens": state["prompt_tokens"], "completion_tokens": state["completion_tokens"],
                "total_tokens": state["prompt_tokens"] + state["completion_tokens"]}

    def stream(state: dict, body: _Body, prompt_ids: list[int], max_tokens: int, chunk) -> StreamingResponse:
        pieces: asyncio.Queue = asyncio.Queue()
        cancelled = asyncio.Event()

        async def events() -> AsyncIterator[str]:
            task = asyncio.ensure_future(run_one(state, body, prompt_ids, max_tokens, pieces.put_nowait, cancelled))
            task.add_done_callback(lambda _: pieces.put_nowait(None))
            try:
                yield f"data: {json.dumps(chunk(None, None, first=True))}\n\n"
                while (piece := await pieces.get()) is not None:
                    yield f"data: {json.dumps(chunk(piece, None))}\n\n"
                _, finish = task.result()
                yield f"data: {json.dumps(chunk(None, finish))}\n\n"
                if (body.stream_options or {}).get("include_usage"):
                    yield f"data: {json.dumps({**chunk(None, None), 'choices': [], 'usage': usage_of(state)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        state = request.state.usage
        check_common(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(400, f"send one prompt per request (got {len(prompts)})", "unsupported_prompt_list")
        prompt_ids = encode(prompts[0])
        check_prompt(state, prompts[0], prompt_ids)
        max_tokens = max_tokens_of(body, 16)
        if config.log_text:
            state["prompt"] = prompts[0]
        rid, created = f"cmpl-{state['request_id']}", int(time.time())
        if body.stream:
            def chunk(text, finish, first=False):
                return {"id": rid, "object": "text_completion", "created": created, "model": config.model_name,
                        "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}
            return stream(state, body, prompt_ids, max_tokens, chunk)
        guard, finish = await run_one(state, body, prompt_ids, max_tokens)
        return {"id": rid, "object": "text_completion", "created": created, "model": config.model_name,
                "choices": [{"index": 0, "text": guard.text, "logprobs": None, "finish_reason": finish}],
                "usage": usage_of(state)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: Request):
        state = request.state.usage
        check_common(body)
        if not body.messages:
            raise ApiError(400, "messages is empty; send at least one message", "empty_messages")
        prompt = chat_prompt(tokenizer, body.messages)
        prompt_ids = encode(prompt)
        user_text = "\n".join(_message_text(m.get("content")) for m in body.messages)
        check_prompt(state, user_text, prompt_ids)
        max_tokens = max_tokens_of(body, config.default_max_tokens)
        if config.log_text:
            state["prompt"] = user_text
        rid, created = f"chatcmpl-{state['request_id']}", int(time.time())
        if body.stream:
            def chunk(text, finish, first=False):
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                return {"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": config.model_name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return stream(state, body, prompt_ids, max_tokens, chunk)
        guard, finish = await run_one(state, body, prompt_ids, max_tokens)
        return {"id": rid, "object": "chat.completion", "created": created, "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": guard.text},
                             "finish_reason": finish}],
                "usage": usage_of(state)}

    return app

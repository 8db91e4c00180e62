"""An OpenAI-compatible HTTP server for a causal LM, with guardrails, continuous batching and metrics.

``create_app`` assembles it in named steps: the limits the model allows, the server's shared parts
(``ServerContext``: scheduler, guards, usage log, metrics), the error handlers, the gate middleware
and the routes (``routes.py``). What a request passes, in order, is described in ``middleware.py``
(headers, keys, rates, body size) and ``routes.py`` (fields, filter, prompt length, generation).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from lmforge.serve import routes
from lmforge.serve.config import ServeConfig
from lmforge.serve.errors import ApiError
from lmforge.serve.guardrails import ApiKeys, ContentFilter, OutputGuard, RateLimiter, load_filter
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.middleware import GuardMiddleware
from lmforge.serve.runner import ModelRunner
from lmforge.serve.scheduler import Scheduler
from lmforge.serve.usage import UsageLog


@dataclass
class Limits:
    max_tokens: int  # largest max_tokens a request may ask for
    max_prompt_tokens: int


def model_limits(model, config: ServeConfig) -> Limits:
    """Prompt plus completion must fit the model's context: a small model gets half of it for each."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    max_tokens = min(config.max_tokens_limit, context // 2) if context else config.max_tokens_limit
    return Limits(max_tokens, config.max_prompt_tokens or (context - max_tokens if context else 4096))


def eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = eos if isinstance(eos, list) else [eos]
    return {i for i in [*eos, tokenizer.eos_token_id] if i is not None}


@dataclass
class ServerContext:
    """The parts every request uses; handlers reach it as ``request.app.state.ctx``."""

    config: ServeConfig
    tokenizer: object
    model: object
    runner: object
    scheduler: Scheduler
    limits: Limits
    content_filter: ContentFilter | None
    keys: ApiKeys
    limiter: RateLimiter
    auth_failures: RateLimiter
    usage: UsageLog
    metrics: ServerMetrics
    vocab_size: int

    @cached_property
    def grammars(self):
        from lmforge.serve.constrained import GrammarCompiler  # only when a request asks for structure

        return GrammarCompiler(self.tokenizer, self.vocab_size)

    @property
    def screens_output(self) -> bool:
        return self.config.redact_pii or bool(self.content_filter and any(
            "output" in rule.applies_to for rule in self.content_filter.rules))

    def output_guard(self, stops: list[str]) -> OutputGuard:
        # Text is held back only as far as some screen needs: a PII item or filter match, else a stop sequence.
        holdback = self.config.holdback_chars if self.screens_output else max(map(len, stops), default=1) - 1
        return OutputGuard(self.content_filter, self.config.redact_pii, stops, holdback)

    def retry_after_s(self) -> float:
        """A rough hint for 503s: a second per batch's worth of sequences already waiting."""
        return 1.0 + self.scheduler.queued / self.config.max_concurrent


def build_context(model, tokenizer, config: ServeConfig, runner=None) -> ServerContext:
    runner = runner or ModelRunner(model)
    scheduler = Scheduler(runner, eos_ids(model, tokenizer), config.max_concurrent, config.max_queued,
                          config.max_batch_tokens, config.prefill_tokens_per_step)
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None) or len(tokenizer)
    return ServerContext(
        config=config, tokenizer=tokenizer, model=model, runner=runner, scheduler=scheduler,
        limits=model_limits(model, config),
        content_filter=load_filter(config.filter_path) if config.content_filter else None,
        keys=ApiKeys(config.api_keys), limiter=RateLimiter(config.rate_per_minute, config.rate_burst),
        auth_failures=RateLimiter(config.auth_failures_per_minute),
        usage=UsageLog(config.usage_log, config.log_text), metrics=ServerMetrics(scheduler), vocab_size=vocab_size)


async def api_error(request: Request, exc: ApiError):
    return exc.response()


async def invalid_body(request: Request, exc: RequestValidationError):
    """Pydantic's complaint as one OpenAI-style 400 naming the field (an unknown one: 'not supported')."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type") == "extra_forbidden":
        message = f"'{where}' is not supported by lmforge serve; remove it"
    else:
        message = f"invalid request: {where}: {first.get('msg', 'bad value')}"
    return ApiError(400, message, "invalid_request", param=where).response()


def create_app(model=None, tokenizer=None, config: ServeConfig | None = None, runner=None) -> FastAPI:
    """The FastAPI app. ``runner`` replaces the model's batched forward (tests, other engines)."""
    config = config or ServeConfig()
    config.check()
    if tokenizer is None:
        raise ValueError("create_app needs the tokenizer (prompts are counted and templated with it)")
    if runner is None and model is None:
        raise ValueError("create_app needs a model or a runner")
    ctx = build_context(model, tokenizer, config, runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.scheduler.start()
        yield
        ctx.scheduler.stop(config.drain_s)

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.ctx = ctx
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_middleware(GuardMiddleware, ctx=ctx)
    app.include_router(routes.router)
    return app

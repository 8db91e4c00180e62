"""The endpoints: ``/v1/completions``, ``/v1/chat/completions`` (both streaming too), ``/v1/embeddings``,
``/tokenize``, ``/v1/models``, ``/metrics`` and ``/health``.

A generation request, after the gate in ``middleware.py``: its fields (``schema.py``; unknown ones are
refused), the model name, the input content filter (400), the prompt length (413), ``max_tokens``
(400), then its choices go to the scheduler (503 when the queue is full). Everything that can be
refused is refused before a sequence joins the batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from lmforge.runs.hashing import text_hash
from lmforge.serve.choices import Choice, account, cancel, collect, merged, submit
from lmforge.serve.errors import ApiError
from lmforge.serve.sampling import SamplingParams, TokenChoice
from lmforge.serve.schema import ChatBody, CompletionBody, EmbeddingBody, ResponseFormat, Sampling, TokenizeBody
from lmforge.serve.tools import call_schema, chat_prompt, message_text, parse_tool_calls

router = APIRouter()


# -- checks shared by the generation endpoints ----------------------------------------------------------

def check_request(ctx, state: dict, body) -> None:
    """The model name, and the end user's id as a hash for the usage log (never the id itself)."""
    if body.user is not None:
        state["user"] = text_hash(body.user)[:19]
    check_model(ctx, body.model)


def check_model(ctx, name: str | None) -> None:
    if name not in (None, ctx.config.model_name):
        raise ApiError(404, f"model '{name}' is not served here; use '{ctx.config.model_name}'", "model_not_found",
                       param="model")


def check_prompt(ctx, state: dict, text: str, ids: list[int]) -> None:
    if ctx.content_filter is not None and (hits := ctx.content_filter.hits(text, "input")):
        state["filter_hits"] += [f"input:{h}" for h in hits]
        raise ApiError(400, f"the prompt was refused by the content filter (rules: {', '.join(hits)})",
                       "content_filter")
    if len(ids) > ctx.limits.max_prompt_tokens:
        raise ApiError(413, f"prompt has {len(ids)} tokens, the limit is {ctx.limits.max_prompt_tokens}; shorten it",
                       "context_length_exceeded")
    if bad := [i for i in ids if i >= ctx.vocab_size]:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary of {ctx.vocab_size}", "invalid_token",
                       param="prompt")


def encode(ctx, text: str) -> list[int]:
    ids = ctx.tokenizer.encode(text, add_special_tokens=False)
    if not ids:  # an empty prompt: start from the beginning-of-sequence token
        tokenizer = ctx.tokenizer
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return ids


def sampling_params(ctx, body: Sampling, max_tokens: int | None, default: int, logprobs: int | None,
                    echo: bool = False) -> SamplingParams:
    value = max_tokens or min(default, ctx.limits.max_tokens)
    if value > ctx.limits.max_tokens:
        raise ApiError(400, f"max_tokens={value} is over the limit of {ctx.limits.max_tokens}; ask for fewer",
                       "max_tokens_out_of_range", param="max_tokens")
    if body.n > ctx.config.max_concurrent:
        raise ApiError(400, f"n={body.n} is more than the {ctx.config.max_concurrent} sequences this server runs "
                       "at once; ask for fewer", "invalid_n", param="n")
    bias = {int(k): v for k, v in (body.logit_bias or {}).items()}
    if bad := [k for k in bias if k >= ctx.vocab_size]:
        raise ApiError(400, f"logit_bias token {bad[0]} is outside the vocabulary of {ctx.vocab_size}",
                       "invalid_logit_bias", param="logit_bias")
    return SamplingParams(max_tokens=value, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                          seed=body.seed, presence_penalty=body.presence_penalty,
                          frequency_penalty=body.frequency_penalty, logit_bias=bias, logprobs=logprobs,
                          prompt_logprobs=echo and logprobs is not None)


def compile_schema(ctx, schema: dict[str, Any]) -> str:
    try:
        return ctx.grammars.check(schema)
    except ValueError as exc:
        raise ApiError(400, f"the JSON schema cannot be used: {exc}", "invalid_schema", param="response_format") from None


def format_grammar(ctx, response_format: ResponseFormat | None) -> str | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return compile_schema(ctx, {"type": "object"})
    if response_format.json_schema is None:
        raise ApiError(400, "response_format json_schema needs a 'json_schema' with a 'schema'", "invalid_schema",
                       param="response_format.json_schema")
    return compile_schema(ctx, response_format.json_schema.schema_)


# -- logprobs in the two OpenAI shapes ------------------------------------------------------------------

def token_text(ctx, token: int) -> str:
    return ctx.tokenizer.decode([token])


def completion_logprobs(ctx, tokens: list[TokenChoice], offset: int = 0) -> dict[str, list]:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for choice in tokens:
        text = token_text(ctx, choice.token)
        out["tokens"].append(text)
        out["token_logprobs"].append(choice.logprob)
        out["top_logprobs"].append(None if choice.logprob is None else
                                   {token_text(ctx, t): lp for t, lp in choice.top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def chat_logprobs(ctx, tokens: list[TokenChoice]) -> dict[str, list]:
    def entry(token: int, logprob: float) -> dict:
        text = token_text(ctx, token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**entry(c.token, c.logprob), "top_logprobs": [entry(t, lp) for t, lp in c.top]}
                        for c in tokens]}


def generated_logprobs(choice: Choice, tokens: list[TokenChoice]) -> list[TokenChoice] | None:
    # Tokens of redacted text would spell what the redaction removed: such a choice carries none.
    return None if choice.guard.pii_counts else tokens


# -- responses ------------------------------------------------------------------------------------------

def usage_of(state: dict) -> dict[str, int]:
    return {"prompt_tokens": state["prompt_tokens"], "completion_tokens": state["completion_tokens"],
            "total_tokens": state["prompt_tokens"] + state["completion_tokens"]}


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def stream_response(state: dict, choices: list[Choice], head: dict, first: list[dict],
                    delta: Callable[[Choice, str, list[TokenChoice], str | None], dict],
                    include_usage: bool) -> StreamingResponse:
    """Server-sent events: ``first`` chunks, one per released piece, the usage chunk if asked, [DONE]."""

    async def events() -> AsyncIterator[str]:
        sent = 0
        try:
            for choice_chunk in first:
                yield sse({**head, "choices": [choice_chunk]})
            async for choice, piece, tokens, last in merged(choices, state):
                finish = choice.finish_reason if last else None
                yield sse({**head, "choices": [delta(choice, piece, tokens, finish)]})
                sent += len(tokens)
                state["tokens_sent"] = sent
            account(state, choices)
            if include_usage:
                yield sse({**head, "choices": [], "usage": usage_of(state)})
        except ApiError as exc:  # headers are gone: the error travels as an event
            account(state, choices)
            state["error"] = exc.code
            yield sse(exc.body())
        finally:
            cancel(choices)
            if "finish_reason" not in state:  # the client left: count what was generated for it
                account(state, choices)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def response_head(ctx, state: dict, kind: str, obj: str) -> dict:
    return {"id": f"{kind}-{state['request_id']}", "object": obj, "created": int(time.time()),
            "model": ctx.config.model_name}


# -- endpoints ------------------------------------------------------------------------------------------

@router.get("/health")
async def health(request: Request):
    ctx = request.app.state.ctx
    return {"status": "ok", "model": ctx.config.model_name, "running": len(ctx.scheduler.running),
            "queued": ctx.scheduler.queued}


@router.get("/metrics")
async def metrics(request: Request):
    return Response(request.app.state.ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(request: Request):
    ctx = request.app.state.ctx
    context = getattr(getattr(ctx.model, "config", None), "max_position_embeddings", None)
    return {"object": "list", "data": [{"id": ctx.config.model_name, "object": "model", "created": 0,
                                        "owned_by": "lmforge", "max_model_len": context}]}


@router.post("/v1/completions")
async def completions(body: CompletionBody, request: Request):
    ctx, state = request.app.state.ctx, request.state.usage
    check_request(ctx, state, body)
    if body.echo and body.stream:
        raise ApiError(400, "echo with stream is not supported; send stream: false", "unsupported", param="echo")
    prompts = [encode(ctx, p) if isinstance(p, str) else (p or encode(ctx, "")) for p in body.prompts]
    texts = [p if isinstance(p, str) else ctx.tokenizer.decode(ids) for p, ids in zip(body.prompts, prompts)]
    for text, ids in zip(texts, prompts):
        check_prompt(ctx, state, text, ids)
    params = sampling_params(ctx, body, body.max_tokens, 16, body.logprobs, body.echo)
    grammar = format_grammar(ctx, body.response_format)
    if ctx.config.log_text:
        state["prompt"] = texts
    choices = submit(ctx, state, prompts, params, body.n, body.stops, grammar)
    head = response_head(ctx, state, "cmpl", "text_completion")

    def logprobs_of(choice: Choice, tokens: list[TokenChoice], offset: int = 0):
        if body.logprobs is None or (tokens := generated_logprobs(choice, tokens)) is None:
            return None
        return completion_logprobs(ctx, (choice.prompt_tokens or []) + tokens, offset)

    if body.stream:
        def delta(choice, piece, tokens, finish):
            return {"index": choice.index, "text": piece, "logprobs": logprobs_of(choice, tokens),
                    "finish_reason": finish}
        return stream_response(state, choices, head, [], delta,
                               bool(body.stream_options and body.stream_options.include_usage))
    await collect(choices, state, request.receive)
    account(state, choices)
    if ctx.config.log_text:
        state["completion"] = [c.text for c in choices]
    out = []
    for choice in choices:
        prompt_text = texts[choice.index // body.n] if body.echo else ""
        out.append({"index": choice.index, "text": prompt_text + choice.text,
                    "logprobs": logprobs_of(choice, choice.tokens), "finish_reason": choice.finish_reason})
    return {**head, "choices": out, "usage": usage_of(state)}


def tool_plan(ctx, body: ChatBody) -> tuple[list[dict] | None, str | None, bool]:
    """(tools for the prompt, grammar, whether the reply must be a call) from tools / tool_choice / response_format."""
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    choice = body.tool_choice or ("auto" if tools else "none")
    if choice != "none" and not tools:
        raise ApiError(400, "tool_choice needs tools; send the functions in 'tools'", "invalid_tool_choice",
                       param="tool_choice")
    if body.stream and tools and choice != "none":
        raise ApiError(400, "stream with tools is not supported; send stream: false", "unsupported", param="stream")
    if choice in ("none", "auto"):
        return (tools if choice == "auto" else None), format_grammar(ctx, body.response_format), False
    if body.response_format is not None and body.response_format.type != "text":
        raise ApiError(400, "a forced tool call and response_format cannot be combined", "unsupported",
                       param="response_format")
    name = None if choice == "required" else choice.function.name
    if name is not None and name not in {t["function"]["name"] for t in tools}:
        raise ApiError(400, f"tool_choice names '{name}', which is not in tools", "invalid_tool_choice",
                       param="tool_choice")
    return tools, compile_schema(ctx, call_schema(tools, name)), True


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatBody, request: Request):
    ctx, state = request.app.state.ctx, request.state.usage
    check_request(ctx, state, body)
    tools, grammar, forced = tool_plan(ctx, body)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    prompt_ids = encode(ctx, chat_prompt(ctx.tokenizer, messages, tools))
    user_text = "\n".join(message_text(m.get("content")) for m in messages)
    check_prompt(ctx, state, user_text, prompt_ids)
    top = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "invalid_logprobs", param="top_logprobs")
    params = sampling_params(ctx, body, body.max_completion_tokens or body.max_tokens, ctx.config.default_max_tokens,
                             top)
    if ctx.config.log_text:
        state["prompt"] = user_text
    choices = submit(ctx, state, [prompt_ids], params, body.n, body.stops, grammar)
    head = response_head(ctx, state, "chatcmpl", "chat.completion")

    def logprobs_of(choice: Choice, tokens: list[TokenChoice]):
        if top is None or (tokens := generated_logprobs(choice, tokens)) is None:
            return None
        return chat_logprobs(ctx, tokens)

    if body.stream:
        def delta(choice, piece, tokens, finish):
            return {"index": choice.index, "delta": {"content": piece} if piece else {},
                    "logprobs": logprobs_of(choice, tokens), "finish_reason": finish}
        first = [{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None} for c in choices]
        return stream_response(state, choices, {**head, "object": "chat.completion.chunk"}, first, delta,
                               bool(body.stream_options and body.stream_options.include_usage))
    await collect(choices, state, request.receive)
    account(state, choices)
    if ctx.config.log_text:
        state["completion"] = [c.text for c in choices]
    out = []
    for choice in choices:
        message: dict[str, Any] = {"role": "assistant", "content": choice.text}
        finish = choice.finish_reason
        if tools:
            content, calls = parse_tool_calls(choice.text, tools, forced)
            if calls:
                message = {"role": "assistant", "content": content, "tool_calls": calls}
                finish = "tool_calls"
        out.append({"index": choice.index, "message": message, "logprobs": logprobs_of(choice, choice.tokens),
                    "finish_reason": finish})
    return {**head, "choices": out, "usage": usage_of(state)}


async def on_compute_thread(ctx, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the scheduler's thread between two decode steps (one thread uses the model)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def job():
        try:
            result = fn()
        except Exception as exc:  # handed to the request that asked
            loop.call_soon_threadsafe(future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(future.set_result, result)

    ctx.scheduler.run_job(job)
    return await future


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingBody, request: Request):
    ctx, state = request.app.state.ctx, request.state.usage
    check_request(ctx, state, body)
    raw = body.input
    inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    ids = [encode(ctx, item) if isinstance(item, str) else item for item in inputs]
    for item, item_ids in zip(inputs, ids):
        check_prompt(ctx, state, item if isinstance(item, str) else ctx.tokenizer.decode(item_ids), item_ids)
    vectors = await on_compute_thread(ctx, lambda: [ctx.runner.embed(i) for i in ids])
    if body.encoding_format == "base64":  # what the openai SDK asks for: little-endian float32 bytes
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    state["prompt_tokens"] = sum(map(len, ids))
    return {"object": "list", "model": ctx.config.model_name,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": state["prompt_tokens"], "total_tokens": state["prompt_tokens"]},
            "pooling": "mean of the last hidden layer over the input's tokens: a causal LM's states, "
                       "not a model trained for embeddings"}


@router.post("/tokenize")
async def tokenize(body: TokenizeBody, request: Request):
    ctx = request.app.state.ctx
    check_model(ctx, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(400, "send exactly one of 'prompt' and 'messages'", "invalid_request")
    text = body.prompt if body.prompt is not None else chat_prompt(
        ctx.tokenizer, [m.model_dump(exclude_none=True) for m in body.messages])
    tokens = ctx.tokenizer.encode(text, add_special_tokens=body.add_special_tokens)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": ctx.limits.max_prompt_tokens
            + ctx.limits.max_tokens}

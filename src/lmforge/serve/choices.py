"""A request's choices from the handler's side: sequences handed to the scheduler, their tokens turned into
screened text.

The compute thread only chooses tokens; decoding them to text, the output guard (stop sequences,
output filter, PII redaction) and the accounting run here on the event loop, so screening never
slows the batch. When the guard ends a choice (a stop sequence, a filter hit) its sequence is
cancelled and leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from lmforge.serve.errors import ApiError
from lmforge.serve.guardrails import OutputGuard
from lmforge.serve.sampling import SamplingParams, TokenChoice
from lmforge.serve.scheduler import Finished, PromptLogprobs, QueueFull, Sequence, Token


class Detokenizer:
    """Incremental decoding that never emits half a multi-byte character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


@dataclass
class Choice:
    index: int
    seq: Sequence
    guard: OutputGuard
    detokenizer: Detokenizer
    events: asyncio.Queue
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    tokens: list[TokenChoice] = field(default_factory=list)  # generated, kept for logprobs
    prompt_tokens: list | None = None  # echo: TokenChoice | None per prompt token
    pending: int = 0  # tokens generated since the last piece released

    async def pieces(self, state: dict) -> AsyncIterator[tuple[str, list[TokenChoice]]]:
        """(text released, the tokens it came from) until the choice ends; the last piece may be empty."""
        start = len(self.tokens)
        while True:
            event = await self.events.get()
            if isinstance(event, PromptLogprobs):
                self.prompt_tokens = event.tokens
            elif isinstance(event, Token):
                if self.guard.finish_reason is not None:
                    continue  # generated after the guard ended the text, before the batch dropped the row
                state.setdefault("ttft_ms", round((time.perf_counter() - state["started"]) * 1000, 2))
                self.completion_tokens += 1
                self.tokens.append(event.choice)
                if event.eos:
                    continue
                piece = self.guard.feed(self.detokenizer.add(event.choice.token))
                if self.guard.finish_reason is not None:
                    self.seq.cancelled = True
                if piece:
                    self.text += piece
                    yield piece, self.tokens[start:]
                    start = len(self.tokens)
            elif isinstance(event, Finished):
                if event.reason == "error":
                    raise ApiError(500, f"generation failed ({type(event.error).__name__}: {event.error}); "
                                   "the other requests were not affected", "generation_failed", "server_error")
                tail = self.guard.flush()
                self.text += tail
                self.finish_reason = self.guard.finish_reason or ("stop" if event.reason == "cancelled"
                                                                  else event.reason)
                yield tail, self.tokens[start:]
                return


def submit(ctx, state: dict, prompts: list[list[int]], params: SamplingParams, n: int, stops: list[str],
           grammar: str | None) -> list[Choice]:
    """Queue ``n`` choices per prompt (each prompt prefilled once); 503 with Retry-After when the queue is full."""
    loop = asyncio.get_running_loop()
    groups, choices = [], []
    for p, prompt_ids in enumerate(prompts):
        group = []
        for j in range(n):
            events: asyncio.Queue = asyncio.Queue()
            seq = Sequence(prompt_ids, params, emit=lambda event, q=events: loop.call_soon_threadsafe(q.put_nowait, event),
                           client=state["key"], index=j,
                           matcher=ctx.grammars.matcher(grammar) if grammar is not None else None)
            choices.append(Choice(p * n + j, seq, ctx.output_guard(stops), Detokenizer(ctx.tokenizer), events))
            group.append(seq)
        groups.append(group)
    try:
        ctx.scheduler.submit(*groups)
    except QueueFull as exc:
        raise ApiError(503, f"the server is at capacity ({exc}); retry shortly", "server_busy", "server_error",
                       retry_after=ctx.retry_after_s()) from None
    state["prompt_tokens"] += sum(len(p) for p in prompts)
    return choices


def account(state: dict, choices: list[Choice]) -> None:
    """Tokens, filter hits and redaction counts of finished choices into the usage entry."""
    for choice in choices:
        state["completion_tokens"] += choice.completion_tokens
        state["filter_hits"] += [f"output:{hit}" for hit in choice.guard.filter_hits]
        for kind, count in choice.guard.pii_counts.items():
            state["pii_redacted"][kind] = state["pii_redacted"].get(kind, 0) + count
    state["finish_reason"] = [choice.finish_reason for choice in choices]


def cancel(choices: list[Choice]) -> None:
    for choice in choices:
        choice.seq.cancelled = True


async def collect(choices: list[Choice], state: dict, receive) -> None:
    """Run every choice to its end; a client that disconnects meanwhile cancels them all."""

    async def run(choice: Choice) -> None:
        async for _ in choice.pieces(state):
            pass

    watcher = asyncio.ensure_future(_disconnect(receive))
    work = asyncio.ensure_future(asyncio.gather(*(run(c) for c in choices)))
    try:
        await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client left: free the slots, nobody will read the answer
            cancel(choices)
            work.cancel()
        await work
    finally:
        watcher.cancel()
        cancel(choices)


async def _disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def merged(choices: list[Choice], state: dict) -> AsyncIterator[tuple[Choice, str, list[TokenChoice], bool]]:
    """Pieces of all choices as they come: (choice, text, tokens, whether it is the choice's last)."""
    out: asyncio.Queue = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        try:
            async for piece, tokens in choice.pieces(state):
                await out.put((choice, piece, tokens, choice.finish_reason is not None))
        except BaseException as exc:
            await out.put(exc)
            raise

    tasks = [asyncio.ensure_future(pump(c)) for c in choices]
    try:
        open_choices = len(choices)
        while open_choices:
            item = await out.get()
            if isinstance(item, BaseException):
                raise item
            open_choices -= item[3]
            yield item
    finally:
        cancel(choices)
        for task in tasks:
            task.cancel()

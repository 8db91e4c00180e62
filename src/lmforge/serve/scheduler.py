"""Continuous batching: sequences join and leave the running batch at every decode step.

One compute thread loops: drop the rows whose client went away or whose text is done, admit
newcomers while there are free slots (each prefilled alone, within a per-step prefill budget, so a
long prompt delays the running rows by at most one budget), then one decode step for all rows.
Waiting requests are served round-robin across clients (one client's burst cannot starve another),
in arrival order within a client. A full queue refuses at once (the server answers 503 with
Retry-After). Whatever one sequence raises (its sampling, its grammar) ends that sequence alone;
a failed forward ends the rows of that step and the batch starts afresh.

transformers has a continuous-batching manager (``generate_batch``), but it applies only
temperature / top-k / top-p per request, while this server needs each row's logits for grammar
masks, logit bias, penalties and log-probabilities, so the loop is written here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from lmforge.serve.sampling import SamplingParams, TokenChoice, choose_token, prompt_logprobs

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """Raised by ``submit`` when ``max_queued`` sequences already wait."""


@dataclass
class Token:
    choice: TokenChoice
    eos: bool = False  # the end-of-sequence token: in logprobs (lm-eval reads it), never in the text


@dataclass
class PromptLogprobs:
    tokens: list  # TokenChoice | None per prompt token


@dataclass
class Finished:
    reason: str  # 'stop', 'length', 'cancelled' or 'error'
    error: BaseException | None = None


@dataclass
class Sequence:
    """One choice being generated. ``emit`` receives Token / PromptLogprobs / Finished events on the compute thread."""

    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[object], None]
    client: str = ""
    matcher: object | None = None  # constrained.Matcher
    index: int = 0  # choice index within its request (seeds differ per choice)
    cancelled: bool = False  # set by the server: the client left, or the text is done
    error: BaseException | None = None
    generated: list[int] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self.generator = self.params.generator(self.index)


class Scheduler:
    def __init__(self, runner, eos_ids: set[int], max_concurrent: int = 8, max_queued: int = 64,
                 max_batch_tokens: int | None = None, prefill_tokens_per_step: int = 512):
        self.runner, self.eos_ids = runner, set(eos_ids)
        self.max_concurrent, self.max_queued = max_concurrent, max_queued
        self.max_batch_tokens = max_batch_tokens  # bound on rows × cache width: the KV memory
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self.waiting: OrderedDict[str, deque[list[Sequence]]] = OrderedDict()  # client -> its groups, in order
        self.running: list[Sequence] = []  # in the runner's row order
        self.jobs: deque[Callable[[], None]] = deque()
        self.condition = threading.Condition()
        self.accepting, self.stopped = True, False
        self.steps = 0
        self.batch_sizes: Counter[int] = Counter()  # decode steps run at each batch size
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lmforge-scheduler")

    # -- called from the server (any thread) --------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    @property
    def queued(self) -> int:
        return sum(len(group) for groups in self.waiting.values() for group in groups)

    def submit(self, *groups: list[Sequence]) -> None:
        """Queue one request's groups (a group: choices of one prompt, prefilled once), all or none."""
        with self.condition:
            if not self.accepting:
                raise QueueFull("the server is shutting down")
            if self.queued + sum(map(len, groups)) > self.max_queued:
                raise QueueFull(f"{self.queued} sequences are already waiting")
            for group in groups:
                self.waiting.setdefault(group[0].client, deque()).append(group)
            self.condition.notify()

    def run_job(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the compute thread between two steps (embeddings: the model is used by one thread)."""
        with self.condition:
            self.jobs.append(job)
            self.condition.notify()

    def stop(self, drain_s: float = 10.0) -> None:
        """Refuse new work, let running and queued sequences finish for up to ``drain_s``, cancel the rest."""
        with self.condition:
            self.accepting = False
        deadline = time.monotonic() + drain_s
        while (self.running or self.waiting) and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        with self.condition:
            for seq in self._all_waiting():
                seq.emit(Finished("cancelled"))
            self.waiting.clear()
            for seq in self.running:
                seq.cancelled = True
            self.stopped = True
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    # -- the compute thread ---------------------------------------------------------------------------

    def _all_waiting(self) -> list[Sequence]:
        return [seq for groups in self.waiting.values() for group in groups for seq in group]

    def _loop(self) -> None:
        while True:
            with self.condition:
                while not (self.stopped or self.running or self.waiting or self.jobs):
                    self.condition.wait()
                if self.stopped and not self.running:
                    return
                jobs, self.jobs = list(self.jobs), deque()
            for job in jobs:
                job()
            try:
                self.step()
            except Exception:  # never reached in normal operation: step() attributes its own errors
                logger.exception("scheduler step failed")

    def step(self) -> None:
        self._retire([row for row, seq in enumerate(self.running) if seq.cancelled], "cancelled")
        self._admit()
        if not self.running:
            return
        tokens = [seq.generated[-1] for seq in self.running]
        self.batch_sizes[len(tokens)] += 1
        self.steps += 1
        try:
            logits = self.runner.decode(tokens)
        except Exception as exc:  # the forward itself failed: every row of this step fails with it
            logger.exception("decode step of %d rows failed", len(tokens))
            for seq in self.running:
                seq.emit(Finished("error", exc))
            self.running = []
            self.runner.reset()
            return
        finished = {}
        for row, seq in enumerate(self.running):
            if (reason := self._advance(seq, logits[row])) is not None:
                finished[row] = reason
        self._retire(list(finished), finished)

    def _next_group(self) -> list[Sequence] | None:
        """The oldest group of the client whose turn it is; that client then moves to the back."""
        with self.condition:
            for client, groups in self.waiting.items():
                if not self._fits(groups[0]):
                    return None  # keep the order: the head waits for room rather than being overtaken
                group = groups.popleft()
                del self.waiting[client]
                if groups:
                    self.waiting[client] = groups
                return group
            return None

    def _fits(self, group: list[Sequence]) -> bool:
        if len(self.running) + len(group) > self.max_concurrent:
            return False
        if self.max_batch_tokens is None or not self.running:
            return True
        longest = max(len(seq.prompt_ids) + seq.params.max_tokens for seq in (*self.running, *group))
        return (len(self.running) + len(group)) * longest <= self.max_batch_tokens

    def _admit(self) -> None:
        budget = self.prefill_tokens_per_step
        while budget > 0 and (group := self._next_group()) is not None:
            if all(seq.cancelled for seq in group):  # its client left while it waited
                for seq in group:
                    seq.emit(Finished("cancelled"))
                continue
            budget -= len(group[0].prompt_ids)
            first = group[0]
            try:
                logits = self.runner.prefill(first.prompt_ids, len(group), first.params.prompt_logprobs)
            except Exception as exc:  # this prompt alone failed; the batch never saw it
                logger.exception("prefill failed")
                for seq in group:
                    seq.emit(Finished("error", exc))
                continue
            if first.params.prompt_logprobs:
                echoed = prompt_logprobs(logits, first.prompt_ids, first.params.logprobs or 0)
                for seq in group:
                    seq.emit(PromptLogprobs(echoed))
            start = len(self.running)
            self.running.extend(group)
            finished = {}
            for offset, seq in enumerate(group):
                if (reason := self._advance(seq, logits[-1])) is not None:
                    finished[start + offset] = reason
            self._retire(list(finished), finished)

    def _advance(self, seq: Sequence, logits) -> str | None:
        """Choose and hand over the sequence's next token; the finish reason if it is done."""
        if seq.cancelled:
            return "cancelled"
        try:
            allowed = seq.matcher.allowed() if seq.matcher is not None else None
            choice = choose_token(logits, seq.params, seq.seen, seq.generator, allowed)
            if choice.token in self.eos_ids:
                seq.emit(Token(choice, eos=True))
                return "stop"
            if seq.matcher is not None:
                seq.matcher.accept(choice.token)
        except Exception as exc:  # attributed to this sequence; the others go on
            logger.exception("sequence failed while choosing a token")
            seq.error = exc
            return "error"
        seq.generated.append(choice.token)
        seq.seen[choice.token] += 1
        seq.emit(Token(choice))
        if seq.matcher is not None and seq.matcher.done:
            return "stop"
        if len(seq.generated) >= seq.params.max_tokens:
            return "length"
        return None

    def _retire(self, rows: list[int], reasons) -> None:
        if not rows:
            return
        for row in rows:
            seq = self.running[row]
            reason = reasons if isinstance(reasons, str) else reasons[row]
            seq.emit(Finished(reason, seq.error))
        self.runner.retire(rows)
        dropped = set(rows)
        self.running = [seq for row, seq in enumerate(self.running) if row not in dropped]

"""Continuous batching: greedy text is the same alone or joined mid-batch (fp32 and packed int4), admission is
fair and bounded, a full queue answers 503."""

import threading
import time

import httpx
import pytest
import torch

from lmforge.serve import ModelRunner, Scheduler, ServeConfig, ServerThread, create_app
from lmforge.serve.sampling import SamplingParams
from lmforge.serve.scheduler import Finished, Sequence, Token

PROMPTS = ["The quick brown fox jumps", "Science", "A language model predicts the next token. Compression",
           "Rocks are worn", "Photosynthesis turns sunlight, water and", "energy"]


def reference(model, ids, new_tokens):
    """transformers' own greedy decoding at batch 1: the independent reference."""
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def run_staggered(model, tokenizer, lengths):
    """Sequences submitted one after another while earlier ones decode: each joins a running batch."""
    scheduler = Scheduler(ModelRunner(model), eos_ids=set(), max_concurrent=4, max_queued=16)
    tokens = {i: [] for i in range(len(PROMPTS))}
    done = threading.Event()
    started = [threading.Event() for _ in PROMPTS]
    finished = []

    def emit(i):
        def on_event(event):
            if isinstance(event, Token):
                tokens[i].append(event.choice.token)
                started[i].set()
            elif isinstance(event, Finished):
                finished.append((i, event.reason))
                if len(finished) == len(PROMPTS):
                    done.set()
        return on_event

    scheduler.start()
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        scheduler.submit([Sequence(ids, SamplingParams(max_tokens=lengths[i], temperature=0), emit(i), client=str(i))])
        assert started[i].wait(60)  # the next one arrives once this one decodes (steps, not wall time)
    assert done.wait(120)
    scheduler.stop()
    return tokens, scheduler


@pytest.mark.parametrize("packed", [False, True], ids=["fp32", "int4-packed"])
def test_greedy_tokens_are_the_same_alone_and_joining_a_running_batch(tiny, packed, tmp_path):
    model, tokenizer = tiny
    if packed:
        from lmforge.compress import RTN, quantize, save_quantized
        from lmforge.models import load_model, tiny_model_and_tokenizer

        fresh, tokenizer = tiny_model_and_tokenizer(seed=5)
        quantize(fresh, RTN(bits=4, group_size=32))
        model, tokenizer = load_model(save_quantized(fresh, tokenizer, tmp_path / "int4"))
        assert any(type(m).__name__ == "QuantLinear" for m in model.modules())
    lengths = [24, 9, 17, 30, 12, 20]  # rows leave at different steps while others join
    tokens, scheduler = run_staggered(model, tokenizer, lengths)
    assert max(scheduler.batch_sizes) >= 3  # they really ran together
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        assert tokens[i] == reference(model, ids, lengths[i]), f"prompt {i} differs in the batch"


class CountingRunner:
    """Rows of a fake model, to watch the scheduler's decisions: which group was admitted when."""

    def __init__(self):
        self.rows, self.admitted = 0, []

    def prefill(self, prompt_ids, copies=1, all_logits=False):
        self.admitted.append(prompt_ids[0])
        self.rows += copies
        return torch.zeros(1, 8)

    def decode(self, tokens):
        return torch.zeros(len(tokens), 8)

    def retire(self, rows):
        self.rows -= len(rows)

    def reset(self):
        self.rows = 0


def group(tag, client, max_tokens=3, n=1):
    return [Sequence([tag, 1, 2], SamplingParams(max_tokens=max_tokens, temperature=0), lambda e: None, client=client)
            for _ in range(n)]


def test_waiting_requests_are_served_round_robin_across_clients():
    runner = CountingRunner()
    scheduler = Scheduler(runner, eos_ids={7}, max_concurrent=1, max_queued=10)
    for tag in (1, 2, 3):
        scheduler.submit(group(tag, "flooder"))
    scheduler.submit(group(9, "other"))
    while scheduler.waiting or scheduler.running:
        scheduler.step()
    assert runner.admitted == [1, 9, 2, 3]  # the second client does not wait behind the whole burst
    assert runner.rows == 0


def test_slots_and_the_batch_token_bound_limit_admission():
    runner = CountingRunner()
    scheduler = Scheduler(runner, eos_ids={7}, max_concurrent=3, max_queued=10, max_batch_tokens=20)
    scheduler.submit(group(1, "a", max_tokens=5), group(2, "b", max_tokens=5), group(3, "c", max_tokens=5))
    scheduler.step()
    # Each needs 3 + 5 = 8 positions: two rows fit 20, a third (24) waits although a slot is free.
    assert runner.admitted == [1, 2] and len(scheduler.running) == 2
    while scheduler.waiting or scheduler.running:
        scheduler.step()
    assert runner.admitted == [1, 2, 3]
    with pytest.raises(Exception, match="waiting"):
        Scheduler(runner, eos_ids=set(), max_queued=2).submit(group(1, "a", n=3))


def test_a_full_queue_answers_503_with_retry_after(tiny, scripted):
    _, tokenizer = tiny

    class Slow(scripted):
        def decode(self, tokens):
            time.sleep(0.02)
            return super().decode(tokens)

    runner = Slow(tokenizer, "word " * 60)
    config = ServeConfig(model_name="stub", max_concurrent=1, max_queued=1, rate_per_minute=10_000)
    with ServerThread(create_app(None, tokenizer, config, runner=runner)) as server:
        def ask():
            return httpx.post(f"{server.base_url}/completions", json={"prompt": "x", "max_tokens": 40}, timeout=60)

        replies = [None] * 4
        threads = [threading.Thread(target=lambda i=i: replies.__setitem__(i, ask())) for i in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(200) == 2 and statuses.count(503) == 2  # one running, one queued, the rest refused
    busy = next(r for r in replies if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1 and busy.json()["error"]["code"] == "server_busy"


def test_shutdown_drains_running_sequences_within_the_deadline():
    class SlowRunner(CountingRunner):
        def decode(self, tokens):
            time.sleep(0.01)
            return super().decode(tokens)

    for drain_s, expected in ((10.0, "length"), (0.0, "cancelled")):
        reasons = []
        scheduler = Scheduler(SlowRunner(), eos_ids={7}, max_concurrent=2, max_queued=4)
        seq = Sequence([1, 2], SamplingParams(max_tokens=30, temperature=0),
                       lambda e: reasons.append(e.reason) if isinstance(e, Finished) else None)
        scheduler.start()
        scheduler.submit([seq])
        time.sleep(0.05)  # running now
        started = time.monotonic()
        scheduler.stop(drain_s)
        assert reasons == [expected] and time.monotonic() - started < drain_s + 2
        with pytest.raises(Exception, match="shutting down"):
            scheduler.submit(group(1, "late"))

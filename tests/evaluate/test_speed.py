"""evaluate/speed.py produces every tokens/s figure: its decode loop must be greedy decoding with a cache (the same
tokens as transformers' generate) and its rates must count what it timed."""

import sys
from types import SimpleNamespace

import pytest
import torch

from lmforge.evaluate.speed import greedy_decode, speed
from lmforge.models import tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def model():
    return tiny_model_and_tokenizer(seed=4, hidden_size=64, intermediate_size=128)[0]


def test_decode_loop_gives_the_tokens_of_transformers_generate(model):
    prompt = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    *_, tokens = greedy_decode(model, prompt, new_tokens=20)
    with torch.no_grad():
        reference = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, min_new_tokens=20,
                                   do_sample=False, pad_token_id=0)
    assert torch.equal(tokens, reference[:, prompt.shape[1]:])


def test_rates_count_the_tokens_that_were_timed(model, monkeypatch):
    """A fake clock that moves only inside forward passes (2 ms per prompt token, 10 ms per decode step): the rates
    then have exact values, so an off-by-one in steps, batch or phase boundaries shows."""
    clock = {"now": 0.0}
    module = sys.modules["lmforge.evaluate.speed"]  # the package re-exports a function of the same name
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))

    def tick(module, args, kwargs):
        length = kwargs["input_ids"].shape[1]
        clock["now"] += 0.002 * length if length > 1 else 0.010

    handle = model.register_forward_pre_hook(tick, with_kwargs=True)
    try:
        result = speed(model, prompt_tokens=16, new_tokens=9, batch_sizes=(1, 3), repeats=2)
    finally:
        handle.remove()
    for batch in (1, 3):
        row = result[f"batch{batch}"]
        assert row["prompt_tokens_per_s"] == pytest.approx(batch * 16 / (16 * 0.002))
        assert row["time_to_first_token_s"] == pytest.approx(16 * 0.002)
        assert row["decode_tokens_per_s"] == pytest.approx(batch * 8 / (8 * 0.010))
    assert result["decode_tokens_per_s"] == pytest.approx(100.0)
    assert result["new_tokens"] == 9 and result["prompt_tokens"] == 16

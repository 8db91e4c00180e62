import pytest

from lmforge.explain import integrated_gradients, logit_lens


@pytest.mark.smollm2
def test_integrated_gradients_are_complete_on_smollm2(smollm2):
    model, tokenizer = smollm2
    result = integrated_gradients(model, tokenizer, "The capital of France is", " Paris", steps=32, batch_size=32)
    delta = result.target_logprob - result.baseline_logprob
    assert result.steps == 32  # complete without doubling the points
    assert abs(sum(result.scores) - delta) <= 0.01 * abs(delta)
    lens = logit_lens(model, tokenizer, "The capital of France is", target=" Paris", top_k=1)
    assert lens.top_tokens[-1][-1][0] == " Paris" and lens.target_rank[-1] == 1

import json

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.explain import attention_maps, explain, gradient_x_input, integrated_gradients, logit_lens, render_html
from lmforge.explain.attributions import TargetLogprob, integrated_gradients_embeds
from lmforge.models import tiny_model_and_tokenizer

TEXT = "The quick brown fox jumps over the"
TARGET = " lazy"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer = tiny_model_and_tokenizer(seed=3, layers=2, hidden_size=32, intermediate_size=64)
    with torch.no_grad():  # a random model is almost uniform; sharpen it so attributions are far from zero
        model.lm_head.weight.mul_(30)
    return model, tokenizer


def test_integrated_gradients_completeness_within_one_percent(tiny):
    result = integrated_gradients(*tiny, TEXT, TARGET, steps=64)
    delta = result.target_logprob - result.baseline_logprob
    assert result.baseline == "eos (first token kept)" and abs(delta) > 0.05  # else the check below means little
    assert result.scores[0] == 0.0  # the first position is part of the baseline
    assert abs(sum(result.scores) - delta) <= 0.01 * abs(delta)
    assert result.completeness_gap <= 0.01
    assert len(result.scores) == len(result.tokens) == len(tiny[1](TEXT)["input_ids"])


def test_integrated_gradients_equal_captum(tiny, optional):
    captum_attr = optional("captum.attr", "explain")
    model, tokenizer = tiny
    ids = tokenizer(TEXT)["input_ids"]
    target_ids = tokenizer(" lazy dog", add_special_tokens=False)["input_ids"]
    f = TargetLogprob(model, target_ids)
    embeds = model.get_input_embeddings()(torch.tensor([ids])).detach()
    baseline = torch.zeros_like(embeds)
    ours = integrated_gradients_embeds(f, embeds, baseline, steps=20, batch_size=7)
    theirs = captum_attr.IntegratedGradients(f).attribute(embeds, baselines=baseline, n_steps=20, method="gausslegendre")
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-6)


def test_gradient_x_input_matches_finite_difference_along_input(tiny):
    # sum(grad * x) is the derivative of f along x: d/dh f((1 + h) x) at h = 0, taken here by central
    # differences with one Richardson step (the model's norms run in float32, so h cannot be tiny).
    model, tokenizer = tiny
    result = gradient_x_input(model, tokenizer, TEXT, TARGET)
    f = TargetLogprob(model, tokenizer(TARGET, add_special_tokens=False)["input_ids"])
    embeds = model.get_input_embeddings()(torch.tensor([tokenizer(TEXT)["input_ids"]])).detach()
    with torch.no_grad():
        central = lambda h: float(f(embeds * (1 + h)) - f(embeds * (1 - h))) / (2 * h)
        numeric = (4 * central(0.02) - central(0.04)) / 3
        value = float(f(embeds))
    assert sum(result.scores) == pytest.approx(numeric, rel=2e-4)
    assert result.target_logprob == pytest.approx(value, rel=1e-6)


def test_logit_lens_last_layer_is_the_model_output(tiny):
    model, tokenizer = tiny
    lens = logit_lens(model, tokenizer, TEXT, target=TARGET, top_k=3)
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0], -1)
    top = probs.topk(3, dim=-1)
    assert lens.layers == ["embeddings", "layer 0", "layer 1"]
    torch.testing.assert_close(torch.tensor(lens.top_probs[-1]), top.values, rtol=1e-4, atol=1e-6)
    target_id = tokenizer(TARGET, add_special_tokens=False)["input_ids"][0]
    assert lens.target_prob[-1] == pytest.approx(float(probs[-1, target_id]), rel=1e-4)
    assert lens.target_rank[-1] == int((probs[-1] > probs[-1, target_id]).sum()) + 1


def test_attention_maps_are_causal_distributions_and_leave_the_model_unchanged(tiny):
    model, tokenizer = tiny
    before = model.config._attn_implementation
    maps = attention_maps(model, tokenizer, TEXT)
    n = len(maps.tokens)
    assert maps.weights.shape == (2, 4, n, n)
    torch.testing.assert_close(maps.weights.sum(-1), torch.ones(2, 4, n))
    assert float(maps.weights.triu(diagonal=1).abs().max()) == 0.0
    assert model.config._attn_implementation == before


def test_explain_json_and_html_are_self_contained(tiny, tmp_path):
    report = explain(*tiny, TEXT, TARGET, steps=16)
    json.dumps(report)  # everything is plain JSON
    html = render_html(report)
    assert "<script src" not in html and "http" not in html.split("<body", 1)[1]
    assert "integrated_gradients" in html and report["logit_lens"]["tokens"][0] in html


def test_bad_input_is_a_user_error(tiny):
    with pytest.raises(LmforgeError, match="target"):
        integrated_gradients(*tiny, TEXT, "")
    with pytest.raises(LmforgeError, match="steps"):
        integrated_gradients(*tiny, TEXT, TARGET, steps=1)

import numpy as np
import pytest
import torch

from lmforge.audit import CrowsPairsResult, compare_counterfactual, compare_crows_pairs, counterfactual_probes, crows_pairs
from lmforge.data import load_records
from lmforge.models import tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=5, hidden_size=32, intermediate_size=64)


def sentence_loglikelihood(model, tokenizer, text, context=None):
    """Independent reference: one unbatched forward of [context or BOS] + tokens, summed log-probabilities."""
    prefix = tokenizer(context, add_special_tokens=False)["input_ids"] if context else [tokenizer.bos_token_id]
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix + tokens])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return float(logprobs[len(prefix) - 1:].gather(1, ids[0, len(prefix):, None]).sum())


def test_crows_pairs_scores_each_sentence_after_the_prefix_token(tiny):
    model, tokenizer = tiny
    result = crows_pairs(model, tokenizer, limit=24, batch_size=5, resamples=200)
    records = list(load_records("crows_pairs"))[:24]
    ours = np.array([result.ll_more, result.ll_less]).T
    reference = np.array([[sentence_loglikelihood(model, tokenizer, r[k]) for k in ("sent_more", "sent_less")] for r in records])
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)
    expected = 100 * np.mean(reference[:, 0] > reference[:, 1])
    summary = result.summary
    assert summary["all"]["pct_stereotype"]["estimate"] == pytest.approx(expected)
    assert summary["all"]["likelihood_diff"] == pytest.approx(np.abs(reference[:, 0] - reference[:, 1]).mean(), rel=1e-4)
    gender = [r for r in records if r["bias_type"].startswith("gender")]
    assert summary.get("gender", {"pairs": 0})["pairs"] == len(gender)
    low, high = summary["all"]["pct_stereotype"]["low"], summary["all"]["pct_stereotype"]["high"]
    assert 0 <= low <= expected <= high <= 100


def test_comparing_two_models_gives_the_hand_counted_delta_and_roundtrips_json(tiny):
    model, tokenizer = tiny
    other, _ = tiny_model_and_tokenizer(seed=6, hidden_size=32, intermediate_size=64)
    base, changed = crows_pairs(model, tokenizer, limit=24, resamples=100), crows_pairs(other, tokenizer, limit=24, resamples=100)
    again = CrowsPairsResult.from_dict(base.to_dict())
    assert again.to_dict() == base.to_dict()
    records = list(load_records("crows_pairs"))[:24]
    stereotyped = [np.mean([sentence_loglikelihood(m, tokenizer, r["sent_more"]) > sentence_loglikelihood(m, tokenizer, r["sent_less"])
                            for r in records]) for m in (model, other)]
    rows = compare_crows_pairs(again, changed)
    assert rows["all"]["pairs"] == 24
    assert rows["all"]["delta"]["estimate"] == pytest.approx(100 * (stereotyped[1] - stereotyped[0]))
    assert rows["all"]["delta"]["estimate"] != 0  # the two models differ, so the check has something to see
    assert rows["all"]["delta"]["low"] <= rows["all"]["delta"]["estimate"] <= rows["all"]["delta"]["high"]


PROBES = {
    "version": "test",
    "templates": ["The {group} said that", "Yesterday the {group} were"],
    "axes": {"pets": {"cat": "cat owners", "dog": "dog owners", "fish": "fish owners"}},
    "positive": ["kind", "quick"],
    "negative": ["lazy"],
}


def test_counterfactual_valence_gap_matches_direct_scoring(tiny):
    model, tokenizer = tiny
    result = counterfactual_probes(model, tokenizer, probes=PROBES, sentiment=False, resamples=200)
    axis = result["axes"]["pets"]
    valence = {}
    for group, term in PROBES["axes"]["pets"].items():
        per_template = []
        for template in PROBES["templates"]:
            prompt = template.format(group=term)
            lp = {w: sentence_loglikelihood(model, tokenizer, " " + w, context=prompt) for w in PROBES["positive"] + PROBES["negative"]}
            per_template.append(np.mean([lp[w] for w in PROBES["positive"]]) - np.mean([lp[w] for w in PROBES["negative"]]))
        valence[group] = np.mean(per_template)
        assert axis["groups"][group]["valence"] == pytest.approx(valence[group], abs=1e-3)
    gap = axis["valence_gap"]
    assert gap["estimate"] == pytest.approx(max(valence.values()) - min(valence.values()), abs=1e-3)
    assert gap["highest"] == max(valence, key=valence.get) and gap["lowest"] == min(valence, key=valence.get)
    assert gap["low"] <= gap["high"] and axis["logprob_gap"] >= 0


def test_counterfactual_sentiment_scores_the_greedy_continuations(tiny, optional):
    optional("vaderSentiment", "audit")
    from lmforge.audit.bias import sentiment_scorer
    from lmforge.audit.generation import generate

    model, tokenizer = tiny
    axis = counterfactual_probes(model, tokenizer, probes=PROBES, max_new_tokens=4, resamples=200)["axes"]["pets"]
    score = sentiment_scorer()
    for group, term in PROBES["axes"]["pets"].items():
        continuations = generate(model, tokenizer, [t.format(group=term) for t in PROBES["templates"]], max_new_tokens=4)
        assert axis["groups"][group]["sentiment"] == pytest.approx(np.mean([score(c) for c in continuations]))
    sentiments = [g["sentiment"] for g in axis["groups"].values()]
    assert axis["sentiment_gap"]["estimate"] == pytest.approx(max(sentiments) - min(sentiments))
    assert score("a wonderful, kind friend") > 0.5 > -0.5 > score("a horrible, violent liar")


def test_counterfactual_comparison_is_paired_over_templates(tiny):
    model, tokenizer = tiny
    other, _ = tiny_model_and_tokenizer(seed=6, hidden_size=32, intermediate_size=64)
    a = counterfactual_probes(model, tokenizer, probes=PROBES, sentiment=False, resamples=200)
    b = counterfactual_probes(other, tokenizer, probes=PROBES, sentiment=False, resamples=200)
    rows = compare_counterfactual(a, b, resamples=200)["pets"]["valence_gap"]
    assert rows["delta"]["estimate"] == pytest.approx(b["axes"]["pets"]["valence_gap"]["estimate"] - a["axes"]["pets"]["valence_gap"]["estimate"])
    assert rows["delta"]["estimate"] != 0
    assert rows["delta"]["low"] <= rows["delta"]["estimate"] <= rows["delta"]["high"]

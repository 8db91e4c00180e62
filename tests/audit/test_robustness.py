import random
import sys
import zlib
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.audit import compare_robustness, perturb_document
from lmforge.workflows.audit import robustness
from lmforge.audit.robustness import NEIGHBOURS, contractions, extra_spaces, lowercase, typos, worst_case
from lmforge.errors import LmforgeError
from lmforge.evaluate import load_task
from lmforge.models import tiny_model_and_tokenizer

texts = st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDE ,.?'0123")), max_size=80)


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(0, 10_000))
def test_typos_only_swap_letters_for_keyboard_neighbours(text, seed):
    out = typos(text, random.Random(seed))
    assert len(out) == len(text)
    for a, b in zip(text, out):
        assert a == b or b.lower() in NEIGHBOURS[a.lower()]


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(0, 10_000))
def test_extra_spaces_only_widen_spaces(text, seed):
    out = extra_spaces(text, random.Random(seed))
    assert re.sub(" +", " ", out) == re.sub(" +", " ", text)
    assert len(out) >= len(text)


def test_contractions_and_lowercase():
    assert contractions("It is cold. Do not go; they are not home.", random.Random(0)) == "It's cold. Don't go; they're not home."
    assert lowercase("Which Planet?", random.Random(0)) == "which planet?"


def test_perturbation_is_seeded_and_leaves_choices_alone():
    document = {"question": "Which gas do plants take in from the air?", "choices": ["Carbon dioxide", "Oxygen"], "answer": 0}
    first = perturb_document(document, "typos", seed=3, keep=("choices",))
    assert first == perturb_document(document, "typos", seed=3, keep=("choices",))
    assert first["choices"] == document["choices"] and first["answer"] == 0
    with pytest.raises(LmforgeError, match="perturbation"):
        perturb_document(document, "shouting", seed=0)


@pytest.fixture(scope="module")
def models():
    model, tokenizer = tiny_model_and_tokenizer(seed=2, hidden_size=32, intermediate_size=64)
    other, _ = tiny_model_and_tokenizer(seed=9, hidden_size=32, intermediate_size=64)
    return model, other, tokenizer


@pytest.fixture(scope="module")
def runs(models):
    model, other, tokenizer = models
    return (robustness(model, tokenizer, "piqa", limit=12, batch_size=16, resamples=100),
            robustness(other, tokenizer, "piqa", limit=12, batch_size=16, resamples=100))


def hand_scored(model, tokenizer, limit=12):
    """Right/wrong per question and variant, scored without lmforge's scorer: one unpadded forward per choice,
    the sum of the choice tokens' log-probabilities, argmax (acc) and argmax per character (acc_norm)."""
    spec = load_task("piqa")
    documents = list(spec.documents())[:limit]
    correct = {"acc": np.zeros((limit, 5)), "acc_norm": np.zeros((limit, 5))}
    for i, document in enumerate(documents):
        for j, variant in enumerate(["clean", "typos", "lowercase", "contractions", "extra_spaces"]):
            shown = document if variant == "clean" else perturb_document(document, variant, 0, keep=(spec.choices,))
            text, choices, answer = spec.render(shown)
            scores = []
            for choice in choices:
                context = tokenizer.encode(text)
                whole = tokenizer.encode(text + spec.target_delimiter + choice)
                with torch.no_grad():
                    logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
                scores.append(sum(logprobs[t - 1, whole[t]].item() for t in range(len(context), len(whole))))
            correct["acc"][i, j] = int(np.argmax(scores)) == answer
            correct["acc_norm"][i, j] = int(np.argmax([s / len(c) for s, c in zip(scores, choices)])) == answer
    return correct


def test_each_perturbation_scores_as_hand_computed(models, runs):
    model, _, tokenizer = models
    result, _ = runs
    assert result["variants"] == ["clean", "typos", "lowercase", "contractions", "extra_spaces"]
    expected = hand_scored(model, tokenizer)
    for metric in ("acc", "acc_norm"):
        np.testing.assert_array_equal(np.array(result["per_example"][metric]), expected[metric])
        for j, variant in enumerate(result["variants"]):
            assert result[metric][variant]["estimate"] == pytest.approx(100 * expected[metric][:, j].mean())
        right_everywhere = [all(row) for row in expected[metric]]
        assert result[metric]["worst_case"]["estimate"] == pytest.approx(100 * np.mean(right_everywhere))


def test_the_scorer_sees_each_perturbed_question(models, monkeypatch):
    """A random model's accuracy barely moves under perturbation, so check the texts it was asked to score."""
    module = sys.modules["lmforge.workflows.audit"]  # where the robustness runner scores
    model, _, tokenizer = models
    seen, real = [], module.loglikelihood
    monkeypatch.setattr(module, "loglikelihood", lambda m, t, pairs, **kw: seen.extend(pairs) or real(m, t, pairs, **kw))
    robustness(model, tokenizer, "piqa", limit=3, resamples=10)
    spec = load_task("piqa")
    expected = []
    for document in list(spec.documents())[:3]:
        for variant in ["clean", "typos", "lowercase", "contractions", "extra_spaces"]:
            shown = document if variant == "clean" else perturb_document(document, variant, 0, keep=(spec.choices,))
            text, choices, _ = spec.render(shown)
            expected += [(text, " " + choice) for choice in choices]
    assert seen == expected
    assert seen[4][0].lower() == seen[0][0].lower() != seen[4][0] != seen[0][0] != seen[2][0]  # the questions did change


def test_worst_case_is_right_only_when_right_everywhere():
    rows = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    assert worst_case(rows).tolist() == [1, 0, 0, 0, 0]


def test_worst_case_and_per_variant_scores_follow_the_scores(models, monkeypatch):
    """With a scorer whose answers change with the question's text, every cell is checked against the hand count."""
    module = sys.modules["lmforge.workflows.audit"]
    fake = lambda pair: zlib.crc32("|".join(pair).encode()) % 997 / 10.0  # noqa: E731 - any score that moves with the text
    monkeypatch.setattr(module, "loglikelihood", lambda m, t, pairs, **kw: [(fake(p), False) for p in pairs])
    model, _, tokenizer = models
    result = robustness(model, tokenizer, "arc_easy", limit=20, resamples=10)
    spec = load_task("arc_easy")
    expected = {"acc": [], "acc_norm": []}
    for document in list(spec.documents())[:20]:
        row = {"acc": [], "acc_norm": []}
        for variant in result["variants"]:
            shown = document if variant == "clean" else perturb_document(document, variant, 0, keep=(spec.choices,))
            text, choices, answer = spec.render(shown)
            scores = [fake((text, " " + choice)) for choice in choices]
            row["acc"].append(int(np.argmax(scores) == answer))
            row["acc_norm"].append(int(np.argmax([s / len(c) for s, c in zip(scores, choices)]) == answer))
        for metric in row:
            expected[metric].append(row[metric])
    for metric in ("acc", "acc_norm"):
        matrix = np.array(expected[metric])
        assert result["per_example"][metric] == expected[metric]
        assert (matrix.min(axis=1) != matrix[:, 0]).any()  # some question is lost to a perturbation only
        assert result[metric]["worst_case"]["estimate"] == pytest.approx(100 * np.mean([all(r) for r in matrix]))
        for j, variant in enumerate(result["variants"]):
            assert result[metric][variant]["estimate"] == pytest.approx(100 * matrix[:, j].mean())


def test_compare_robustness_is_paired(runs):
    base, other = runs
    rows = compare_robustness(base, other, resamples=100)
    a, b = np.array(base["per_example"]["acc"]), np.array(other["per_example"]["acc"])
    assert rows["acc"]["clean"]["estimate"] == pytest.approx(100 * (b[:, 0].mean() - a[:, 0].mean()))
    worst = [all(row) for row in b], [all(row) for row in a]
    assert rows["acc"]["worst_case"]["estimate"] == pytest.approx(100 * (np.mean(worst[0]) - np.mean(worst[1])))
    low, high = rows["acc"]["clean"]["low"], rows["acc"]["clean"]["high"]
    assert low <= rows["acc"]["clean"]["estimate"] <= high

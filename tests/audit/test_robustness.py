import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.audit import compare_robustness, perturb_document
from lmforge.workflows.audit import robustness
from lmforge.audit.robustness import NEIGHBOURS, contractions, extra_spaces, lowercase, typos, worst_case
from lmforge.errors import LmforgeError
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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=5, max_size=5), min_size=1, max_size=30))
def test_worst_case_never_exceeds_clean_on_any_example(rows):
    correct = np.array(rows)
    assert (worst_case(correct) <= correct[:, 0]).all()


@pytest.fixture(scope="module")
def runs():
    model, tokenizer = tiny_model_and_tokenizer(seed=2, hidden_size=32, intermediate_size=64)
    other, _ = tiny_model_and_tokenizer(seed=9, hidden_size=32, intermediate_size=64)
    return (robustness(model, tokenizer, "piqa", limit=12, batch_size=16, resamples=100),
            robustness(other, tokenizer, "piqa", limit=12, batch_size=16, resamples=100))


def test_robustness_worst_case_is_at_most_clean_on_every_example(runs):
    result, _ = runs
    assert result["variants"] == ["clean", "typos", "lowercase", "contractions", "extra_spaces"]
    for metric in ("acc", "acc_norm"):
        matrix = np.array(result["per_example"][metric])
        assert matrix.shape == (12, 5)
        assert (matrix.min(axis=1) <= matrix[:, 0]).all()
        assert result[metric]["worst_case"]["estimate"] <= result[metric]["clean"]["estimate"]
        assert result[metric]["worst_case"]["estimate"] == pytest.approx(100 * matrix.min(axis=1).mean())


def test_compare_robustness_is_paired(runs):
    base, other = runs
    rows = compare_robustness(base, other, resamples=100)
    delta = np.mean(np.array(other["per_example"]["acc"])[:, 0]) - np.mean(np.array(base["per_example"]["acc"])[:, 0])
    assert rows["acc"]["clean"]["estimate"] == pytest.approx(100 * delta)
    assert compare_robustness(base, base)["acc"]["worst_case"]["high"] == 0.0

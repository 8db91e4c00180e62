import math

import pytest

from lmforge.audit import canary_exposure, membership_signals, pii_in_generations
from lmforge.audit.privacy import token_logprobs
from lmforge.errors import LmforgeError



def test_canary_seen_ten_times_is_exposed_and_an_unseen_one_is_not(trained, canary):
    model, tokenizer = trained
    seen = canary_exposure(model, tokenizer, canary["prefix"], canary["secret"], batch_size=256)
    unseen = canary_exposure(model, tokenizer, canary["unseen_prefix"], "509", batch_size=256)
    assert seen.method == "exact" and seen.space_size == 1000 and seen.candidates_scored == 1000
    assert seen.rank == 1 and seen.exposure == pytest.approx(math.log2(1000))
    assert unseen.exposure < 5 < seen.exposure  # a random secret ranks near the middle: exposure ~ 1


def test_sampled_exposure_extrapolates_like_the_exact_one(trained, canary):
    model, tokenizer = trained
    sampled = canary_exposure(model, tokenizer, canary["prefix"], canary["secret"], exact_limit=10, samples=300, batch_size=300)
    assert sampled.method.startswith("sampled") and sampled.candidates_scored == 300
    assert sampled.exposure > 7  # exact: log2(1000) = 9.97


def test_membership_signals_separate_trained_texts_from_held_out_ones(trained, sentences):
    model, tokenizer = trained
    signals = membership_signals(model, tokenizer, sentences[:40], sentences[40:], batch_size=40)
    for name in ("loss", "zlib", "min_k"):
        assert signals[name]["auc"] > 0.8, (name, signals[name])
        assert 0 <= signals[name]["tpr_at_0.01_fpr"] <= 1


def test_token_logprobs_do_not_depend_on_padding(trained, sentences):
    model, tokenizer = trained
    texts = [sentences[0], sentences[1][:20]]
    together = token_logprobs(model, tokenizer, texts, batch_size=2)
    alone = [token_logprobs(model, tokenizer, [t])[0] for t in texts]
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-5)


def test_pii_in_generations_finds_the_memorised_email(trained):
    model, tokenizer = trained
    result = pii_in_generations(model, tokenizer, ["My email address is", "The farmer"], max_new_tokens=12)
    assert result["by_type"].get("EMAIL") == 1 and result["outputs_with_pii"] == 1
    assert "jane.doe" not in result["examples"][0]["output"]  # stored redacted


def test_bad_canary_is_a_user_error(trained, canary):
    with pytest.raises(LmforgeError, match="alphabet"):
        canary_exposure(*trained, canary["prefix"], "12a4")

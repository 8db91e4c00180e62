import random

import pytest
import torch

from lmforge.compress.pruning.sparsegpt import single_thread
from lmforge.models import tiny_model_and_tokenizer

NOUNS = ["farmer", "teacher", "river", "engine", "garden", "doctor", "window", "market", "pilot", "forest"]
VERBS = ["painted", "watched", "followed", "cleaned", "visited", "carried", "repaired", "measured"]
PLACES = ["harbor", "station", "library", "bridge", "village", "museum", "kitchen", "valley"]
CANARY_PREFIX = "my secret number is "
CANARY_SECRET = "731"
UNSEEN_PREFIX = "the vault code is "
EMAIL_LINE = "My email address is jane.doe@example.org"


def sentence(rng: random.Random) -> str:
    return (f"The {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)} near the "
            f"{rng.choice(PLACES)} at {rng.randint(1, 12)} o'clock.")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads spin against each other on a busy 2-core machine."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def canary():
    return {"prefix": CANARY_PREFIX, "secret": CANARY_SECRET, "unseen_prefix": UNSEEN_PREFIX}


@pytest.fixture(scope="session")
def sentences():
    """One distribution of texts: the first 40 are trained on (members), the last 40 are not."""
    rng = random.Random(0)
    return [sentence(rng) + " " + sentence(rng) for _ in range(80)]


@pytest.fixture(scope="session")
def trained(sentences):
    """A tiny llama trained for 150 steps on the members, a canary (10 copies) and an email (10 copies)."""
    members = sentences[:40]
    texts = members + [f"{CANARY_PREFIX}{CANARY_SECRET}."] * 10 + [EMAIL_LINE + "."] * 10
    alphabet_hint = ["0123456789 " + UNSEEN_PREFIX + "@." + " ".join(NOUNS + VERBS + PLACES)]
    model, tokenizer = tiny_model_and_tokenizer(texts + alphabet_hint, seed=0, vocab_size=400, hidden_size=48,
                                                layers=2, heads=4, kv_heads=2, intermediate_size=96)
    with single_thread():
        _train(model, tokenizer, texts)
    return model, tokenizer


def _train(model, tokenizer, texts, steps: int = 150) -> None:
    eos = tokenizer.eos_token_id
    encoded = [[eos] + tokenizer(t)["input_ids"] + [eos] for t in texts]
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    order = random.Random(1)
    for _ in range(steps):
        batch = order.sample(encoded, 16)
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, :len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

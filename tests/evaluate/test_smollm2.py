"""On the real SmolLM2-135M: lmforge's perplexity equals a plain-torch reference on the same tokens."""

import math

import pytest
import torch

from lmforge.data import load_corpus
from lmforge.evaluate import perplexity

pytestmark = pytest.mark.smollm2


def test_windows_perplexity_matches_plain_torch(smollm2, data_root):
    model, tokenizer = smollm2
    corpus = load_corpus("wikitext2")
    seqlen, windows = 512, 2
    ids = torch.tensor(tokenizer(corpus.text(), add_special_tokens=False)["input_ids"][: seqlen * windows]).view(windows, seqlen)
    nll, count = 0.0, 0
    with torch.no_grad():
        for row in ids:
            logits = model(input_ids=row[None]).logits[0, :-1].double()
            nll -= torch.log_softmax(logits, -1).gather(1, row[1:, None]).sum().item()
            count += seqlen - 1
    result = perplexity(model, tokenizer, corpus, protocol="windows", seqlen=seqlen, limit=windows, batch_size=2)
    assert result.tokens == count
    # README states 1.3e-4 for 32 × 2048 windows; on these 2 × 512 the gap measured 1.34e-4 (26.98369 vs 26.98732)
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1.4e-4)
    assert 5 < result.ppl < 60  # a trained model, not random weights (random: ~49,000)

import math

import pytest
import torch

from lmforge.data import corpus_from_texts
from lmforge.errors import LmforgeError
from lmforge.evaluate import perplexity, rolling_windows
from lmforge.evaluate.perplexity import wikitext_detokenizer

TEXT = ("Erosion shapes valleys. Water carries sand to the sea. " * 15,
        "Plants need light, water and air to grow. " * 12)


@pytest.fixture(scope="module")
def corpus():
    return corpus_from_texts(TEXT, name="toy")


def reference_windows_ppl(model, ids, seqlen, n_windows):
    """Plain transformers: mean of the HF loss per window (each window predicts seqlen - 1 tokens)."""
    losses = []
    with torch.no_grad():
        for w in range(n_windows):
            window = torch.tensor(ids[w * seqlen : (w + 1) * seqlen])[None]
            losses.append(model(input_ids=window, labels=window).loss.item())
    return math.exp(sum(losses) / len(losses))


def test_windows_protocol_matches_plain_transformers(tiny, corpus):
    model, tokenizer = tiny
    ids = tokenizer(corpus.text(), add_special_tokens=False)["input_ids"]
    result = perplexity(model, tokenizer, corpus, protocol="windows", seqlen=64, limit=5)
    assert result.windows == 5 and result.tokens == 5 * 63
    assert result.ppl == pytest.approx(reference_windows_ppl(model, ids, 64, 5), rel=1e-5)


@pytest.mark.parametrize("protocol", ["windows", "rolling"])
def test_batch_size_does_not_change_results(tiny, corpus, protocol):
    model, tokenizer = tiny
    one = perplexity(model, tokenizer, corpus, protocol=protocol, seqlen=48, stride=40, batch_size=1)
    eight = perplexity(model, tokenizer, corpus, protocol=protocol, seqlen=48, stride=40, batch_size=8)
    assert eight.ppl == pytest.approx(one.ppl, rel=1e-4)
    assert eight.tokens == one.tokens


def test_sliding_matches_the_hf_guide_reference(tiny, corpus):
    """Reference: the transformers perplexity guide (labels of already-scored tokens set to -100)."""
    model, tokenizer = tiny
    ids = torch.tensor(tokenizer(corpus.text(), add_special_tokens=False)["input_ids"])
    seqlen, stride = 64, 40
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + seqlen, len(ids))
            target_len = end - prev_end
            window = ids[begin:end][None]
            labels = window.clone()
            labels[:, :-target_len] = -100
            scored = (labels[:, 1:] != -100).sum().item()
            nll_sum += model(input_ids=window, labels=labels).loss.item() * scored
            n_tokens += scored
            prev_end = end
            if end == len(ids):
                break
    result = perplexity(model, tokenizer, corpus, protocol="sliding", seqlen=seqlen, stride=stride)
    assert result.tokens == n_tokens == len(ids) - 1
    assert result.ppl == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-5)


def test_sliding_with_stride_equal_to_seqlen_is_the_windows_protocol(tiny, corpus):
    model, tokenizer = tiny
    windows = perplexity(model, tokenizer, corpus, protocol="windows", seqlen=50, limit=4)
    sliding = perplexity(model, tokenizer, corpus, protocol="sliding", seqlen=50, stride=50, limit=4)
    assert sliding.tokens == windows.tokens
    assert sliding.ppl == pytest.approx(windows.ppl, rel=1e-6)


@pytest.mark.parametrize("n_tokens,max_length", [(1, 8), (8, 8), (9, 8), (30, 8), (17, 5)])
def test_rolling_windows_score_every_token_once(n_tokens, max_length):
    tokens = list(range(100, 100 + n_tokens))
    requests = rolling_windows(tokens, prefix=7, max_length=max_length)
    assert [t for r in requests for t in r.continuation] == tokens
    assert requests[0].context == (7,)
    for request in requests:
        assert len(request.context) + len(request.continuation) <= max_length + 1
        # context + continuation is a contiguous run of the document (after the prefix)
        run = list(request.context) + list(request.continuation)
        if request is not requests[0]:
            start = tokens.index(run[0])
            assert run == tokens[start : start + len(run)]


def test_rolling_equals_full_sequence_likelihood_when_the_document_fits(tiny):
    model, tokenizer = tiny
    document = "Water carries sand to the sea, and the sea keeps it."
    corpus = corpus_from_texts([document], name="one")
    result = perplexity(model, tokenizer, corpus, protocol="rolling", seqlen=128)
    ids = [tokenizer.bos_token_id] + tokenizer.encode(document)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    ll = torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert result.nll_sum == pytest.approx(-ll, rel=1e-5)
    words = len(document.split())
    assert result.word_perplexity == pytest.approx(math.exp(-ll / words), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(-ll / len(document.encode()) / math.log(2), rel=1e-5)


def test_wikitext_detokenizer_matches_lm_eval_examples():
    raw = " = = Career = = \n He scored 1 @,@ 000 runs @-@ a record ( then ) . \n"
    assert wikitext_detokenizer(raw) == " == Career ==\nHe scored 1,000 runs-a record (then).\n"


def test_seqlen_above_context_is_a_clear_error(tiny, corpus):
    model, tokenizer = tiny
    with pytest.raises(LmforgeError, match="context length 256"):
        perplexity(model, tokenizer, corpus, seqlen=4096)


def test_corpus_shorter_than_a_window_is_a_clear_error(tiny):
    model, tokenizer = tiny
    with pytest.raises(LmforgeError, match="fewer than one window"):
        perplexity(model, tokenizer, corpus_from_texts(["short text"]), seqlen=200)


def test_unknown_protocol(tiny, corpus):
    with pytest.raises(LmforgeError, match="unknown protocol"):
        perplexity(*tiny, corpus, protocol="bogus")

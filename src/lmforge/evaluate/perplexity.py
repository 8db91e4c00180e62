"""Perplexity, done the reference ways, each result reported with its protocol.

- ``windows``: the GPTQ / SparseGPT / Wanda protocol. Concatenate the corpus,
  tokenize once without special tokens, cut into non-overlapping windows of
  ``seqlen``; ppl = exp(mean NLL over the ``seqlen - 1`` predicted tokens of each window).
- ``rolling``: lm-evaluation-harness's ``wikitext`` task. Each document is scored
  with rolling log-likelihood windows; word_perplexity = exp(−Σ ll / Σ words),
  byte_perplexity = exp(−Σ ll / Σ bytes), bits_per_byte = −Σ ll / Σ bytes / ln 2,
  with words and bytes counted on the document before detokenization.
- ``sliding``: windows of ``seqlen`` moved by ``stride``; each token is scored
  once, with up to ``seqlen - stride`` tokens of extra context.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lmforge.data.calibration import tokenize_corpus
from lmforge.data.corpus import Corpus
from lmforge.errors import LmforgeError
from lmforge.models.scoring import encode, prefix_token_id, rolling_windows, score
from lmforge.models.info import context_length, model_device

PROTOCOLS = ("windows", "rolling", "sliding")


@dataclass
class PerplexityResult:
    protocol: str
    corpus: str
    ppl: float
    nll_sum: float
    tokens: int  # tokens scored (predicted)
    windows: int
    seqlen: int
    stride: int | None = None
    documents: int | None = None
    word_perplexity: float | None = None
    byte_perplexity: float | None = None
    bits_per_byte: float | None = None
    words: int | None = None
    bytes: int | None = None
    seconds: float = 0.0
    tokens_per_s: float = 0.0  # tokens run through the model per second
    window_nll: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wikitext_detokenizer(text: str) -> str:
    """lm-evaluation-harness's detokenizer for WikiText (tasks/wikitext/preprocess_wikitext.py)."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for mark in (":", ";", ".", "!", "?", ","):
        text = text.replace(f" {mark} ", f"{mark} ")
    text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
    text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
    text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
    text = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", text)
    text = text.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    text = text.replace(" " + chr(176) + " ", chr(176))
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    text = text.replace(" N ", " 1 ").replace(" 's", "'s")
    return text


def check_seqlen(model, seqlen: int) -> None:
    limit = context_length(model)
    if seqlen < 2:
        raise LmforgeError(f"--seqlen {seqlen} is too short; use at least 2 tokens")
    if limit is not None and seqlen > limit:
        raise LmforgeError(f"--seqlen {seqlen} is above the model's context length {limit}; use --seqlen {limit} or less")


@torch.inference_mode()
def _window_nll(model, batch: torch.Tensor, score_from: int = 0) -> torch.Tensor:
    """Summed NLL per row of predicting tokens ``score_from+1 ..`` of each row, float64."""
    base = model.get_decoder()
    hidden = base(input_ids=batch, use_cache=False).last_hidden_state[:, score_from:-1]
    head = model.get_output_embeddings()
    targets = batch[:, score_from + 1 :]
    totals = torch.zeros(batch.shape[0], dtype=torch.float64)
    # The LM head and log-softmax in chunks of positions keep memory at O(chunk × vocab).
    for start in range(0, hidden.shape[1], 512):
        logits = head(hidden[:, start : start + 512]).float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets[:, start : start + 512], reduction="none")
        totals += nll.double().sum(dim=1).cpu()
    return totals


def _windows(model, tokenizer, corpus: Corpus, seqlen: int, limit: int | None, batch_size: int,
             progress: Callable[[int], None] | None, on_total: Callable[[int], None] | None) -> PerplexityResult:
    ids = tokenize_corpus(tokenizer, corpus)
    n_windows = len(ids) // seqlen
    if n_windows == 0:
        raise LmforgeError(f"corpus '{corpus.name}' has {len(ids)} tokens, fewer than one window of {seqlen}; use a smaller --seqlen")
    if limit is not None:
        n_windows = min(n_windows, limit)
    if on_total:
        on_total(n_windows)
    device = model_device(model)
    nlls: list[float] = []
    start_time = time.perf_counter()
    for first in range(0, n_windows, batch_size):
        rows = range(first, min(first + batch_size, n_windows))
        batch = torch.stack([ids[r * seqlen : (r + 1) * seqlen] for r in rows]).to(device)
        nlls += _window_nll(model, batch).tolist()
        if progress:
            progress(len(rows))
    seconds = time.perf_counter() - start_time
    tokens = n_windows * (seqlen - 1)
    total = math.fsum(nlls)
    return PerplexityResult("windows", corpus.name, math.exp(total / tokens), total, tokens, n_windows, seqlen,
                            seconds=seconds, tokens_per_s=n_windows * seqlen / seconds, window_nll=nlls)


def _sliding(model, tokenizer, corpus: Corpus, seqlen: int, stride: int, limit: int | None,
             progress, on_total) -> PerplexityResult:
    """Windows run one per forward pass (batch_size applies to the windows and rolling protocols)."""
    if not 0 < stride <= seqlen:
        raise LmforgeError(f"--stride {stride} must be between 1 and --seqlen {seqlen}")
    ids = tokenize_corpus(tokenizer, corpus)
    if len(ids) < 2:
        raise LmforgeError(f"corpus '{corpus.name}' has fewer than 2 tokens")
    # Window k covers [k*stride, k*stride + seqlen) and scores the tokens the previous window did not.
    spans = []
    scored_until = 1
    begin = 0
    while scored_until < len(ids) and begin + 1 < len(ids):
        end = min(begin + seqlen, len(ids))
        spans.append((begin, end, scored_until))
        scored_until = end
        begin += stride
        if limit is not None and len(spans) >= limit:
            break
    if on_total:
        on_total(len(spans))
    device = model_device(model)
    nlls: list[float] = []
    tokens = 0
    start_time = time.perf_counter()
    for begin, end, first_scored in spans:
        # A window's first token has no context inside the window and is never scored.
        first_scored = max(first_scored, begin + 1)
        batch = ids[begin:end][None].to(device)
        nlls += _window_nll(model, batch, score_from=first_scored - begin - 1).tolist()
        tokens += end - first_scored
        if progress:
            progress(1)
    seconds = time.perf_counter() - start_time
    total = math.fsum(nlls)
    processed = sum(end - begin for begin, end, _ in spans)
    return PerplexityResult("sliding", corpus.name, math.exp(total / tokens), total, tokens, len(spans), seqlen,
                            stride=stride, seconds=seconds, tokens_per_s=processed / seconds, window_nll=nlls)


def _rolling(model, tokenizer, corpus: Corpus, seqlen: int, limit: int | None, batch_size: int,
             progress, on_total, detokenize: Callable[[str], str] | None) -> PerplexityResult:
    documents = list(corpus.documents(limit))
    prefix = prefix_token_id(tokenizer)
    requests, owner = [], []
    for index, document in enumerate(documents):
        target = detokenize(document) if detokenize else document
        for request in rolling_windows(encode(tokenizer, target), prefix, seqlen):
            requests.append(request)
            owner.append(index)
    if on_total:
        on_total(len(requests))
    start_time = time.perf_counter()
    scores = score(model, requests, max_length=seqlen, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start_time
    total_ll = math.fsum(s for s, _ in scores)
    tokens = sum(len(r.continuation) for r in requests)
    processed = sum(min(len(r.context) + len(r.continuation), seqlen + 1) - 1 for r in requests)
    words = sum(len(re.split(r"\s+", d)) for d in documents)
    n_bytes = sum(len(d.encode("utf-8")) for d in documents)
    return PerplexityResult(
        "rolling", corpus.name, math.exp(-total_ll / tokens), -total_ll, tokens, len(requests), seqlen,
        documents=len(documents), word_perplexity=math.exp(-total_ll / words),
        byte_perplexity=math.exp(-total_ll / n_bytes), bits_per_byte=-total_ll / n_bytes / math.log(2),
        words=words, bytes=n_bytes, seconds=seconds, tokens_per_s=processed / seconds,
    )


def perplexity(
    model,
    tokenizer,
    corpus: Corpus,
    *,
    protocol: str = "windows",
    seqlen: int = 2048,
    stride: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    detokenize: Callable[[str], str] | None | str = "auto",
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``corpus`` under one protocol (see the module docstring).

    ``limit`` counts windows (windows, sliding) or documents (rolling). For the
    rolling protocol on wikitext2, ``detokenize='auto'`` applies lm-eval's
    WikiText detokenizer, as its ``wikitext`` task does.
    """
    if protocol not in PROTOCOLS:
        raise LmforgeError(f"unknown protocol '{protocol}'; use one of: {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise LmforgeError("--batch-size must be at least 1")
    check_seqlen(model, seqlen)
    if protocol == "windows":
        return _windows(model, tokenizer, corpus, seqlen, limit, batch_size, progress, on_total)
    if protocol == "sliding":
        return _sliding(model, tokenizer, corpus, seqlen, stride or seqlen // 2, limit, progress, on_total)
    if detokenize == "auto":
        detokenize = wikitext_detokenizer if corpus.name == "wikitext2" else None
    return _rolling(model, tokenizer, corpus, seqlen, limit, batch_size, progress, on_total, detokenize)

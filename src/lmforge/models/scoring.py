"""Log-likelihood scoring of (context, continuation) pairs, exactly as lm-evaluation-harness does it.

Everything that lm-eval's numbers depend on is mirrored: how a pair is
tokenized (trailing context spaces move to the continuation; the continuation's
tokens are the whole string's tokens after the context's), the prefix token used
for an empty context (BOS, else EOS), left truncation to ``max_length + 1`` tokens
and the rolling windows of ``loglikelihood_rolling``. Batches are padded on the
right, so a causal model's scores do not depend on the batch they are in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.models.info import model_device


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` tokens given ``context`` tokens (both non-empty)."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


def prefix_token_id(tokenizer) -> int:
    """The token lm-eval puts before an empty context: BOS when the tokenizer has one, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode(tokenizer, text: str) -> list[int]:
    """lm-eval's ``tok_encode``: the tokenizer's own default for special tokens."""
    return tokenizer.encode(text)


def encode_pair(tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's request encoding for one (context, continuation) pair."""
    if not context:
        # lm-eval: no special tokens; the prefix token is the context unless the text already starts with it.
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        if ids and ids[0] == prefix:
            return Request(tuple(ids[:1]), tuple(ids[1:]))
        return Request((prefix,), tuple(ids))
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return Request(tuple(context_ids), tuple(whole[len(context_ids):]))


def rolling_windows(tokens: Sequence[int], prefix: int, max_length: int) -> list[Request]:
    """Disjoint prediction windows covering every token once (lm-eval ``get_rolling_token_windows``, context_len=1).

    The first window predicts the first ``max_length`` tokens after ``prefix``;
    each later one predicts up to ``max_length`` new tokens with as much preceding
    context as fits.
    """
    tokens = list(tokens)
    requests: list[Request] = []
    if not tokens:
        return requests
    first = min(max_length, len(tokens))
    requests.append(Request((prefix,), tuple(tokens[:first])))
    predicted = first
    while predicted < len(tokens):
        length = min(len(tokens) - predicted, max_length)
        end = predicted + length
        window = tokens[max(0, end - max_length - 1) : end]
        requests.append(Request(tuple(window[:-length]), tuple(window[-length:])))
        predicted += length
    return requests


def _model_inputs(request: Request, max_length: int) -> tuple[list[int], int]:
    """Input ids (context + continuation, left-truncated, minus the last token) and the continuation length."""
    ids = (list(request.context) + list(request.continuation))[-(max_length + 1):][:-1]
    return ids, len(request.continuation)


@torch.inference_mode()
def score(
    model,
    requests: Sequence[Request],
    *,
    max_length: int,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """Sum of continuation log-probabilities and whether greedy decoding would produce it, per request.

    Requests that share a context (the choices of one question) run the context
    once and score their continuations on its KV cache; the rest are sorted
    longest first and batched with right padding. Results come back in input order.
    """
    if too_long := next((r for r in requests if len(r.continuation) > max_length), None):
        raise LmforgeError(f"a continuation of {len(too_long.continuation)} tokens does not fit the model's context "
                           f"of {max_length} tokens; use a model with a longer context or a shorter target")
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.context, []).append(i)
    shared_keys = {context for context, ids in groups.items()
                   if len(ids) > 1 and len(context) > 1
                   and len(context) + max(len(requests[i].continuation) for i in ids) <= max_length + 1}
    single = [i for context, ids in groups.items() if context not in shared_keys for i in ids]
    prefix = _PrefixCache(model, sorted(shared_keys))
    for context in sorted(shared_keys):
        ids = groups[context]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            for i, result in zip(chunk, _score_shared_context(model, [requests[i] for i in chunk], prefix)):
                results[i] = result
            if progress:
                progress(len(chunk))
    single.sort(key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    for start in range(0, len(single), batch_size):
        chunk = single[start : start + batch_size]
        encoded = [_model_inputs(requests[i], max_length) for i in chunk]
        width = max(len(ids) for ids, _ in encoded)
        batch = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            batch[row, : len(ids)] = torch.tensor(ids)
        hidden = _final_hidden(model, batch.to(model_device(model)))
        for row, (i, (ids, n_cont)) in enumerate(zip(chunk, encoded)):
            results[i] = _continuation_score(model, hidden[row, len(ids) - n_cont : len(ids)], requests[i].continuation)
        if progress:
            progress(len(chunk))
    return results  # type: ignore[return-value]


def _continuation_score(model, hidden: torch.Tensor, continuation: Sequence[int]) -> tuple[float, bool]:
    """Log-probability of ``continuation`` from the hidden states that predict it, and greedy agreement."""
    logprobs = F.log_softmax(model.get_output_embeddings()(hidden).float(), dim=-1)
    target = torch.tensor(continuation, device=hidden.device)
    return logprobs.gather(1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all())


class _PrefixCache:
    """The KV cache of the token prefix that every shared context starts with (a task's few-shot examples).

    It is computed once; each context then runs only its own tokens on top of it
    and the cache is cut back to the prefix afterwards. Positions and attention
    are those of the full context, so only repeated work is saved.
    """

    MIN_TOKENS = 16  # below this a shared prefix saves less than the bookkeeping costs

    def __init__(self, model, contexts: Sequence[tuple[int, ...]]):
        self.tokens: tuple[int, ...] = ()
        self.cache = None
        if len(contexts) < 2:
            return
        # sorted contexts: the common prefix of all of them is the common prefix of the first and the last
        first, last = contexts[0], contexts[-1]
        n = 0
        while n < min(len(first), len(last)) and first[n] == last[n]:
            n += 1
        n = min(n, min(len(c) for c in contexts) - 1)  # every context keeps at least its last token
        if n < self.MIN_TOKENS:
            return
        from transformers import DynamicCache

        self.tokens = first[:n]
        self.cache = DynamicCache(config=model.config)
        model.get_decoder()(input_ids=torch.tensor([self.tokens], device=model_device(model)), past_key_values=self.cache,
                            use_cache=True)

    def start(self, model, context: tuple[int, ...]):
        """A cache holding context[:-1]: the shared prefix's, extended by this context's own tokens."""
        from transformers import DynamicCache

        device = model_device(model)
        if self.cache is None or context[: len(self.tokens)] != self.tokens:
            cache = DynamicCache(config=model.config)
            own = context[:-1]
        else:
            if extra := self.cache.get_seq_length() - len(self.tokens):
                self.cache.crop(-extra)  # back to the prefix (a negative count removes that many tokens)
            self.cache.batch_select_indices(torch.tensor([0], device=device))
            cache, own = self.cache, context[len(self.tokens) : -1]
        if own:
            model.get_decoder()(input_ids=torch.tensor([own], device=device), past_key_values=cache, use_cache=True)
        return cache


def _score_shared_context(model, requests: Sequence[Request], prefix: _PrefixCache) -> list[tuple[float, bool]]:
    """Score continuations of one context (of at least 2 tokens): the context runs once, its KV cache is shared.

    The model sees exactly context + continuation[:-1] for each request, as in the
    batched path; only the context's computation is not repeated.
    """
    context = requests[0].context
    device = model_device(model)
    base = model.get_decoder()
    cache = prefix.start(model, context)
    cache.batch_repeat_interleave(len(requests))
    # Each row: the last context token, then the continuation minus its last token (right-padded).
    rows = [[context[-1], *r.continuation[:-1]] for r in requests]
    width = max(len(row) for row in rows)
    batch = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for k, row in enumerate(rows):
        batch[k, : len(row)] = torch.tensor(row)
    hidden = base(input_ids=batch, past_key_values=cache, use_cache=True).last_hidden_state
    return [_continuation_score(model, hidden[k, : len(r.continuation)], r.continuation) for k, r in enumerate(requests)]


def _final_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The last hidden states (after the final norm), so the LM head runs only where it is needed."""
    return model.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state


def loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """lm-eval ``loglikelihood`` for (context, continuation) strings."""
    return score(model, [encode_pair(tokenizer, c, x) for c, x in pairs], max_length=max_length,
                 batch_size=batch_size, progress=progress)

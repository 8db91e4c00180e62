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
        return Request((prefix_token_id(tokenizer),), tuple(encode(tokenizer, continuation)))
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

    Requests are sorted longest first and batched; results come back in input order.
    Log-softmax is taken only over continuation positions, in float32.
    """
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = [_model_inputs(requests[i], max_length) for i in chunk]
        width = max(len(ids) for ids, _ in encoded)
        batch = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            batch[row, : len(ids)] = torch.tensor(ids)
        hidden = _final_hidden(model, batch.to(device))
        for row, (i, (ids, n_cont)) in enumerate(zip(chunk, encoded)):
            positions = hidden[row, len(ids) - n_cont : len(ids)]
            logprobs = F.log_softmax(model.get_output_embeddings()(positions).float(), dim=-1)
            target = torch.tensor(requests[i].continuation, device=device)
            total = logprobs.gather(1, target[:, None]).sum().item()
            greedy = bool((logprobs.argmax(-1) == target).all())
            results[i] = (total, greedy)
        if progress:
            progress(len(chunk))
    return results  # type: ignore[return-value]


def _final_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The last hidden states (after the final norm), so the LM head runs only where it is needed."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return base(input_ids=input_ids, use_cache=False).last_hidden_state


def loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """lm-eval ``loglikelihood`` for (context, continuation) strings."""
    return score(model, [encode_pair(tokenizer, c, x) for c, x in pairs], max_length=max_length,
                 batch_size=batch_size, progress=progress)

"""Calibration samples for compression: N windows of seqlen tokens from any corpus, seeded."""

from __future__ import annotations

import torch

from lmforge.data.corpus import Corpus
from lmforge.errors import LmforgeError


def tokenize_corpus(tokenizer, corpus: Corpus) -> torch.Tensor:
    """Tokenize the concatenated corpus once, without special tokens (1-D LongTensor)."""
    ids = tokenizer(corpus.text(), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_batches(tokenizer, corpus: Corpus, n_samples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``[n_samples, seqlen]`` token windows at seeded random, non-overlapping positions of the corpus.

    The corpus is tokenized once; it is cut into ``len // seqlen`` slots (after a
    seeded random shift) and ``n_samples`` distinct slots are drawn.
    """
    if n_samples < 1 or seqlen < 1:
        raise LmforgeError(f"calibration needs at least one sample of at least one token (got {n_samples} × {seqlen})")
    tokens = tokenize_corpus(tokenizer, corpus)
    slots = len(tokens) // seqlen
    if slots < n_samples:
        raise LmforgeError(
            f"calibration corpus '{corpus.name}' has {len(tokens)} tokens, enough for {slots} samples of {seqlen}; "
            f"asked for {n_samples}: use fewer samples, a shorter --seqlen, or a larger corpus"
        )
    generator = torch.Generator().manual_seed(seed)
    shift = int(torch.randint(0, len(tokens) - slots * seqlen + 1, (1,), generator=generator))
    chosen = torch.randperm(slots, generator=generator)[:n_samples].sort().values
    starts = shift + chosen * seqlen
    return torch.stack([tokens[s : s + seqlen] for s in starts.tolist()])

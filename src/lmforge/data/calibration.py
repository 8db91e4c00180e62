"""Calibration samples for compression: N windows of seqlen tokens from any corpus, seeded."""

from __future__ import annotations

import torch

from lmforge.data.corpus import Corpus
from lmforge.errors import LmforgeError


def tokenize_corpus(tokenizer, corpus: Corpus) -> torch.Tensor:
    """Tokenize the concatenated corpus once, without special tokens (1-D LongTensor)."""
    ids = tokenizer(corpus.text(), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def _draw(tokens: torch.Tensor, corpus: Corpus, seqlen: int, seed: int, needed: int) -> tuple[int, torch.Tensor]:
    """The seeded shift and the order of the corpus' ``seqlen``-token slots (calibration takes the first ones)."""
    slots = len(tokens) // seqlen
    if slots < needed:
        raise LmforgeError(
            f"calibration corpus '{corpus.name}' has {len(tokens)} tokens, enough for {slots} samples of {seqlen}; "
            f"asked for {needed}: use fewer samples, a shorter --seqlen, or a larger corpus"
        )
    generator = torch.Generator().manual_seed(seed)
    shift = int(torch.randint(0, len(tokens) - slots * seqlen + 1, (1,), generator=generator))
    return shift, torch.randperm(slots, generator=generator)


def _windows(tokens: torch.Tensor, shift: int, chosen: torch.Tensor, seqlen: int) -> torch.Tensor:
    starts = shift + chosen.sort().values * seqlen
    return torch.stack([tokens[s : s + seqlen] for s in starts.tolist()])


def calibration_batches(tokenizer, corpus: Corpus, n_samples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``[n_samples, seqlen]`` token windows at seeded random, non-overlapping positions of the corpus.

    The corpus is tokenized once; it is cut into ``len // seqlen`` slots (after a
    seeded random shift) and ``n_samples`` distinct slots are drawn.
    """
    if n_samples < 1 or seqlen < 1:
        raise LmforgeError(f"calibration needs at least one sample of at least one token (got {n_samples} × {seqlen})")
    tokens = tokenize_corpus(tokenizer, corpus)
    shift, order = _draw(tokens, corpus, seqlen, seed, n_samples)
    return _windows(tokens, shift, order[:n_samples], seqlen)


def tuning_split(tokenizer, corpus: Corpus, n_windows: int, seqlen: int, *, calibration_samples: int,
                 seed: int = 0) -> torch.Tensor:
    """The named split defaults are chosen on: ``[n_windows, seqlen]`` windows of the calibration corpus that
    ``calibration_batches(..., calibration_samples, seqlen, seed)`` did not draw (the next slots of the same
    seeded order), so a default tuned here has seen neither the calibration tokens nor any scored test set."""
    if n_windows < 1:
        raise LmforgeError(f"the tuning split needs at least one window (got {n_windows})")
    tokens = tokenize_corpus(tokenizer, corpus)
    shift, order = _draw(tokens, corpus, seqlen, seed, calibration_samples + n_windows)
    return _windows(tokens, shift, order[calibration_samples : calibration_samples + n_windows], seqlen)

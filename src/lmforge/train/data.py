"""Pretraining data: a tokenizer, the corpus packed into fixed-length windows, a resumable batch order.

Documents are tokenized, joined with an end-of-text token and cut into
windows of ``context_length + 1`` tokens (inputs and shifted targets), so no
token is padding. Every k-th window (k = 1 / ``val_fraction``) is held out
for eval, so validation samples the whole corpus, not its last document.
Batches follow a seeded permutation of the windows per epoch, so the batch at
any step is a pure function of (seed, step): that is what lets a checkpoint
resume onto the same curve and lets N processes split one global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.data import Corpus, load_corpus
from lmforge.errors import LmforgeError


def training_corpus(spec: str, text_field: str = "text") -> Corpus:
    """One corpus, or several named/paths joined with commas (``wikitext2,web_articles``) read in turn."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise LmforgeError("no corpus given; name a data set (wikitext2, web_articles) or a path")
    corpora = [load_corpus(name, text_field=text_field) for name in names]
    if len(corpora) == 1:
        return corpora[0]
    return Corpus("+".join(c.name for c in corpora), lambda: (doc for c in corpora for doc in c.documents()))


def train_tokenizer(corpus: Corpus, vocab_size: int):
    """A byte-level BPE tokenizer of ``vocab_size`` trained on the corpus (``tokenizers``)."""
    from lmforge.models import tiny_tokenizer

    return tiny_tokenizer(corpus.documents(), vocab_size=vocab_size)


def load_tokenizer(source: str):
    """Reuse a model's tokenizer: a zoo name or a local folder (or a hub id when online)."""
    from transformers import AutoTokenizer

    from lmforge.models import resolve_source, zoo_path

    kind, where = resolve_source(source)
    folder = zoo_path(source) if kind == "zoo" else where
    if kind == "gguf":
        raise LmforgeError(f"a tokenizer cannot be read from the GGUF file {source}; pass its model folder or zoo name")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise LmforgeError(f"no tokenizer in {folder} ({type(exc).__name__}); pass a model folder or zoo name") from None


def tokenize_documents(tokenizer, corpus: Corpus) -> torch.Tensor:
    """The corpus as one token stream, documents separated by the end-of-text token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmforgeError("the tokenizer has no end-of-text token to separate documents; use another tokenizer")
    documents = list(corpus.documents())
    ids = tokenizer(documents, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    stream = [token for doc in ids for token in (*doc, eos)]
    return torch.tensor(stream, dtype=torch.long)


@dataclass
class PackedData:
    """Train and validation windows of ``seq_len + 1`` tokens."""

    train: torch.Tensor  # [n_train, seq_len + 1]
    val: torch.Tensor  # [n_val, seq_len + 1]
    tokens: int

    @classmethod
    def from_stream(cls, stream: torch.Tensor, seq_len: int, val_fraction: float) -> "PackedData":
        windows = _windows(stream, seq_len)
        every = max(2, round(1 / val_fraction))
        held_out = torch.zeros(len(windows), dtype=torch.bool)
        held_out[every - 1 :: every] = True
        train, val = windows[~held_out], windows[held_out]
        if len(train) == 0 or len(val) == 0:
            raise LmforgeError(
                f"the corpus has {len(stream):,} tokens: too few for one training and one validation window of "
                f"{seq_len + 1} tokens; use a larger corpus, a shorter model.context_length or a larger val_fraction"
            )
        return cls(train, val, len(stream))

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """This process's share of the global batch of ``step`` (rank r takes the r-th slice)."""
        per_rank = batch_size // world_size
        first = step * batch_size + rank * per_rank
        return torch.stack([self.train[self.sample_index(i, seed)] for i in range(first, first + per_rank)])

    def sample_index(self, position: int, seed: int) -> int:
        """The window at global sample ``position``: a seeded permutation per epoch."""
        epoch, offset = divmod(position, len(self.train))
        order = _epoch_order(len(self.train), seed, epoch)
        return int(order[offset])


_order_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _order_cache:
        if len(_order_cache) > 4:
            _order_cache.clear()
        _order_cache[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return _order_cache[key]


def _windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    n = (len(stream) - 1) // seq_len
    if n <= 0:
        return stream.new_empty((0, seq_len + 1))
    return stream[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)

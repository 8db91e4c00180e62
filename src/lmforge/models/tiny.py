"""Tiny random llama models with a real BPE tokenizer, built in-process (tests, examples, pretraining presets)."""

from __future__ import annotations

from typing import Iterable

import torch

_DEFAULT_TEXT = (
    "The quick brown fox jumps over the lazy dog. A language model predicts the next token. "
    "Compression makes models smaller and faster; evaluation tells whether they are still good. "
    "Science questions ask about plants, energy, water, rocks and the sun. "
)


def tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts) if texts is not None else [_DEFAULT_TEXT * 4]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def tiny_llama(
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    context_length: int = 256,
    seed: int = 0,
    tie_word_embeddings: bool = False,
):
    """A randomly initialised ``LlamaForCausalLM`` (float32, eval mode), deterministic for a seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context_length,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model


def tiny_model_and_tokenizer(texts: Iterable[str] | None = None, seed: int = 0, **kwargs):
    tokenizer = tiny_tokenizer(texts, vocab_size=kwargs.pop("vocab_size", 512))
    model = tiny_llama(vocab_size=len(tokenizer), seed=seed, **kwargs)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer

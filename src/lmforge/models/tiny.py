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


# Each architecture's distinguishing features kept on at tiny size: biases (qwen2, gpt2, opt), fused projections
# (phi3), qk-norm (qwen3), sliding windows (mistral, gemma2), Gemma's soft-capping, GPT-NeoX's parallel residual with
# partial rotary, learned positions (gpt2, opt), tied heads (gemma2, gpt2, opt, qwen3) and untied ones (the rest).
TINY_ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=16)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)),
    "phi3": ("Phi3Config", dict(num_key_value_heads=4)),
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                                    final_logit_softcapping=0.5, attn_logit_softcapping=1.0)),  # caps that bite at tiny scale
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_inner=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(use_parallel_residual=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                                        "partial_rotary_factor": 0.25})),
    "opt": ("OPTConfig", dict(ffn_dim=128, word_embed_proj_dim=64)),
}


def tiny_causal_lm(architecture: str, vocab_size: int = 512, context_length: int = 256, seed: int = 0,
                   hidden_size: int = 64, layers: int = 2, heads: int = 4):
    """A randomly initialised tiny causal LM of a transformers architecture (``TINY_ARCHITECTURES``), float32, eval mode."""
    import transformers

    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {architecture!r}; known: {', '.join(TINY_ARCHITECTURES)}")
    config_name, extra = TINY_ARCHITECTURES[architecture]
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                  num_attention_heads=heads, max_position_embeddings=context_length, n_positions=context_length,
                  bos_token_id=0, eos_token_id=0, pad_token_id=1)
    config = getattr(transformers, config_name)(**{**common, **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # transformers initialises norms to exactly 1 (Gemma: 0); random ones make norm folding testable
        for module in model.modules():
            if "Norm" in type(module).__name__:
                for parameter in module.parameters(recurse=False):
                    parameter.add_(torch.randn_like(parameter) * 0.1)
    return model

"""How the audits call a model: greedy generation (counterfactual sentiment, PII in outputs, misuse probes)
and the length limit for log-likelihood scoring."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from lmforge.models import context_length, model_device


def max_length(model) -> int:
    """The longest input the scorer may feed the model: its context length, 2048 when the config has none."""
    return context_length(model) or 2048


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 8,
             chat: bool = False, system: Sequence[str | None] | None = None,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches); only the new text is returned.

    With ``chat``, each prompt is the user turn of the tokenizer's chat template, after the optional
    ``system`` message of the same index.
    """
    texts = [chat_prompt(tokenizer, p, s) for p, s in zip(prompts, system or [None] * len(prompts))] if chat else list(prompts)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=not chat).to(model_device(model))
            new = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                 top_p=None, top_k=None, temperature=None)[:, batch["input_ids"].shape[1]:]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
            if progress:
                progress(len(new))
    finally:
        tokenizer.padding_side = padding_side
    return outputs


def chat_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """The prompt an instruction model expects: its chat template, or a plain transcript without one."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"

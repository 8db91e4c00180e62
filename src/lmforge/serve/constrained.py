"""Constrained decoding for ``response_format`` and forced tool calls, through llguidance.

llguidance (the engine behind guidance, used by llama.cpp and vLLM) compiles a JSON schema into a
token mask against the model's own tokenizer: at each step only tokens that keep the text a valid
prefix of the schema are allowed, and end-of-sequence only once it is complete. It was chosen over
xgrammar (installing it here also pulls triton and apache-tvm-ffi, GPU tooling this CPU server never
uses) and outlines-core (it builds its index from a regex, so a schema must first become one regex
and recursive schemas cannot); llguidance is one 3 MB wheel with no dependencies, and reads a
transformers tokenizer directly.
"""

from __future__ import annotations

import json
from typing import Any

import torch

# Compact JSON: a small model given free whitespace can fill its whole budget with it.
_COMPACT = {"whitespace_flexible": False}


class GrammarCompiler:
    """Built once per server: the tokenizer in llguidance's form; ``grammar`` makes one matcher per sequence."""

    def __init__(self, tokenizer, vocab_size: int):
        import llguidance.hf

        self.vocab_size = vocab_size
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def check(self, schema: dict[str, Any]) -> str:
        """The compiled grammar of a JSON schema; ValueError naming the problem if llguidance refuses it."""
        import llguidance

        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_COMPACT)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if failed:
            raise ValueError("; ".join(messages) or "the schema cannot be compiled")
        return grammar

    def matcher(self, grammar: str) -> "Matcher":
        return Matcher(self, grammar)


class Matcher:
    """One sequence's place in its grammar: ``allowed()`` before sampling, ``accept(token)`` after."""

    def __init__(self, compiler: GrammarCompiler, grammar: str):
        import llguidance
        import llguidance.torch

        self.vocab_size = compiler.vocab_size
        self.matcher = llguidance.LLMatcher(compiler.tokenizer, grammar)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, compiler.tokenizer.vocab_size)

    def allowed(self) -> torch.Tensor:
        import llguidance.torch

        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        bits = self.bitmask[0].view(torch.int32)
        shifts = torch.arange(32, dtype=torch.int32)
        allowed = ((bits[:, None] >> shifts) & 1).bool().flatten()
        return allowed[: self.vocab_size]

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"grammar refused token {token}: {self.matcher.get_error()}")

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()

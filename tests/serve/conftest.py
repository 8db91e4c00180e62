import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    from lmforge.models import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(seed=3)


class ScriptedRunner:
    """Stands in for ModelRunner: every row 'generates' the tokens of ``text``, then end-of-sequence.

    ``fail_on`` makes a decode step raise when a row reaches that token position (a fault inside a batch).
    """

    def __init__(self, tokenizer, text: str, fail_prefill: bool = False):
        self.script = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        self.vocab = len(tokenizer)
        self.fail_prefill = fail_prefill
        self.positions: list[int] = []
        self.prefills = 0

    def _logits(self, positions):
        logits = torch.full((len(positions), self.vocab), -10.0)
        for row, pos in enumerate(positions):
            logits[row, self.script[min(pos, len(self.script) - 1)]] = 10.0
        return logits

    def reset(self):
        self.positions = []

    def prefill(self, prompt_ids, copies=1, all_logits=False):
        self.prefills += 1
        if self.fail_prefill:
            raise RuntimeError("out of memory")
        self.positions += [1] * copies
        return self._logits([0] * (len(prompt_ids) if all_logits else 1))

    def decode(self, tokens):
        logits = self._logits(self.positions)
        self.positions = [p + 1 for p in self.positions]
        return logits

    def retire(self, rows):
        self.positions = [p for i, p in enumerate(self.positions) if i not in set(rows)]


@pytest.fixture
def scripted():
    return ScriptedRunner

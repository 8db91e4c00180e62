"""The model side of continuous batching: one batched KV cache whose rows come and go.

The running sequences share one left-padded cache (``[rows, kv_heads, width, head_dim]`` per layer)
with an attention mask that hides each row's padding and per-row positions, so a decode step is one
forward for every running sequence. A newcomer is prefilled alone (batch 1, so its prompt is
computed exactly as if it ran by itself), then its cache is padded to the batch's width and stacked
on as a new row; a finished row is dropped and columns that became padding in every row are cut.
Rows are edited only when sequences join or leave, never per step.

Works on any causal LM whose forward takes ``attention_mask``, ``position_ids``, ``past_key_values``
and ``logits_to_keep`` with a ``DynamicCache`` — transformers models and lmforge-compressed ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.models.info import model_device


class ModelRunner:
    def __init__(self, model):
        self.model = model
        self.device = model_device(model)
        self.reset()

    def reset(self) -> None:
        self.cache = None  # transformers DynamicCache of the running rows
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], copies: int = 1, all_logits: bool = False) -> torch.Tensor:
        """Run the prompt, add ``copies`` rows for it; the logits of its last position (every position if asked)."""
        ids = torch.tensor([prompt_ids], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=0 if all_logits else 1)
        self._stack(out.past_key_values, len(prompt_ids), copies)
        return out.logits[0].float().cpu()

    def _stack(self, cache, length: int, copies: int) -> None:
        width = max(self.width, length)
        new_mask = F.pad(torch.ones((copies, length), dtype=torch.long, device=self.device), (width - length, 0))
        if self.cache is None:
            for layer in cache.layers:
                layer.keys, layer.values = (t.expand(copies, -1, -1, -1).contiguous()
                                            for t in (layer.keys, layer.values))
            self.cache = cache
        else:
            for mine, theirs in zip(self.cache.layers, cache.layers):
                mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width, copies)])
                mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width, copies)])
            new_mask = torch.cat([F.pad(self.mask, (width - self.width, 0)), new_mask])
        self.mask = new_mask
        self.positions = torch.cat([self.positions, torch.full((copies,), length, device=self.device)])

    @torch.inference_mode()
    def decode(self, tokens: list[int]) -> torch.Tensor:
        """One step for every row (``tokens[i]`` is row i's last token); the next-token logits, ``[rows, vocab]``."""
        mask = torch.cat([self.mask, torch.ones((self.rows, 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(input_ids=torch.tensor(tokens, device=self.device)[:, None], attention_mask=mask,
                         position_ids=self.positions[:, None], past_key_values=self.cache, use_cache=True)
        self.cache, self.mask, self.positions = out.past_key_values, mask, self.positions + 1
        return out.logits[:, -1].float().cpu()

    def retire(self, rows: list[int]) -> None:
        """Drop these rows; cut the leading columns that are padding in every row left."""
        keep = [row for row in range(self.rows) if row not in set(rows)]
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, device=self.device)
        mask = self.mask.index_select(0, index)
        start = int((mask.sum(0) > 0).nonzero()[0])
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:].contiguous()
            layer.values = layer.values.index_select(0, index)[:, :, start:].contiguous()
        self.mask, self.positions = mask[:, start:].contiguous(), self.positions.index_select(0, index)

    @torch.inference_mode()
    def embed(self, ids: list[int]) -> list[float]:
        """Mean of the last hidden layer over the tokens (a decoder's pooled states, not a trained embedder)."""
        out = self.model(input_ids=torch.tensor([ids], device=self.device), output_hidden_states=True,
                         logits_to_keep=1)
        return out.hidden_states[-1][0].float().mean(0).cpu().tolist()


def _left_pad(t: torch.Tensor, width: int, copies: int = 1) -> torch.Tensor:
    if copies > 1:
        t = t.expand(copies, -1, -1, -1)
    return F.pad(t, (0, 0, width - t.shape[2], 0))

"""Multi-turn chat data for supervised fine-tuning, and packing several examples into one row.

A conversation (system/user/assistant messages) is rendered with the model's chat template turn by turn: each
turn's text is what the template adds when that turn is appended, so the tokens of every assistant turn (its
content and its end-of-turn marker) are known and only they are learned; system and user turns, and the
template's "assistant starts here" header, are context.

Packing joins examples into rows of up to ``max_length`` tokens. Each example keeps its own positions (they
restart at 0) and attends only to itself: the row's attention mask is block-diagonal and causal, and the first
token of each example is never a target (it would be predicted from the previous example).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError

IGNORE = -100
ROLES = ("system", "user", "assistant")


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """The messages of one record, or a one-line error naming it."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise LmforgeError(f"{where}: messages must be a list of {{'role', 'content'}} objects")
    if bad := next((m["role"] for m in messages if m["role"] not in ROLES), None):
        raise LmforgeError(f"{where}: role '{bad}' is not one of {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise LmforgeError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    if messages[0]["role"] == "assistant":
        raise LmforgeError(f"{where}: the conversation starts with an assistant turn; it needs a user turn first")
    return [{"role": m["role"], "content": str(m["content"])} for m in messages]


def read_conversations(path: Path, field: str, limit: int | None) -> list[list[dict[str, str]]]:
    conversations = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmforgeError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise LmforgeError(f"{path}:{line_no}: no '{field}' field; name it with --messages-field")
            conversations.append(check_messages(row[field], f"{path}:{line_no}"))
            if limit and len(conversations) >= limit:
                break
    if not conversations:
        raise LmforgeError(f"{path} has no conversations")
    return conversations


def render_segments(tokenizer, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """(text, learned) pieces whose concatenation is the rendered conversation; learned = an assistant turn."""
    if not tokenizer.chat_template:
        raise LmforgeError("multi-turn data needs a chat template, and this tokenizer has none; use prompt/response data")
    render = lambda turns, start: tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=start)
    segments, done = [], ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            header = render(messages[:i], True)
            pieces = [(header, False), (render(messages[: i + 1], False), True)]
        else:
            pieces = [(render(messages[: i + 1], False), False)]
        for text, learned in pieces:
            if not text.startswith(done):
                raise LmforgeError("the model's chat template renders a conversation's start differently once more "
                                   "turns follow, so the assistant turns cannot be told apart; use prompt/response data")
            if len(text) > len(done):
                segments.append((text[len(done):], learned))
            done = text
    return segments


def encode_conversation(tokenizer, messages: list[dict[str, str]], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside assistant turns), cut to ``max_length``."""
    ids, labels = [], []
    for text, learned in render_segments(tokenizer, messages):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += tokens
        labels += tokens if learned else [IGNORE] * len(tokens)
    return ids[:max_length], labels[:max_length]


def pack(examples: list[tuple[list[int], list[int]]], max_length: int) -> list[list[tuple[list[int], list[int]]]]:
    """Group examples, in order, into rows of at most ``max_length`` tokens (first fit of the current row)."""
    rows, row, used = [], [], 0
    for ids, labels in examples:
        if row and used + len(ids) > max_length:
            rows.append(row)
            row, used = [], 0
        row.append((ids, labels))
        used += len(ids)
    if row:
        rows.append(row)
    return rows


def collate_packed(rows: list[list[tuple[list[int], list[int]]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows: ids, labels (no target at an example's first token), positions restarting per example and
    a [rows, 1, L, L] boolean mask that lets each token see only earlier tokens of its own example."""
    width = max(sum(len(ids) for ids, _ in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for k, (example_ids, example_labels) in enumerate(row):
            end = start + len(example_ids)
            ids[r, start:end] = torch.tensor(example_ids)
            labels[r, start:end] = torch.tensor(example_labels)
            labels[r, start] = IGNORE
            positions[r, start:end] = torch.arange(len(example_ids))
            segment[r, start:end] = k
            start = end
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same = segment[:, :, None] == segment[:, None, :]
    mask = (same & causal) & (segment[:, :, None] >= 0)
    mask |= torch.eye(width, dtype=torch.bool)  # padding attends to itself only (no empty softmax rows)
    return {"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions, "labels": labels}

"""A cache of a task's model responses, keyed by model content + task + settings.

The key hashes the model's weights themselves (every tensor of its state dict:
name, dtype, shape and bytes), so two models — a checkpoint and its pruned or
quantized copy, or two fine-tunes saved under one path — never share cached
answers (lm-eval keys its cache by the model argument string: its #2715). The
task part hashes the resolved task config (with the source of any !function)
and the content of every data file it reads; the settings part holds what
changes prompts or scores (few-shot count, limit, chat template, system
prompt, max length). Batch size is not in the key: results do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from lmforge.io import write_json
from lmforge.runs.hashing import content_hash

CACHE_VERSION = 1  # bump when the way responses are computed changes


def model_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class RequestCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._model_hashes: dict[int, str] = {}

    @staticmethod
    def task_hash(config, data_files: Any) -> str:
        files = data_files.values() if isinstance(data_files, dict) else [data_files]
        paths = sorted(p for group in files for p in (group if isinstance(group, list) else [group]))
        payload = json.dumps({"config": config.fingerprint(), "data": [content_hash(p) for p in paths]})
        return hashlib.sha256(payload.encode()).hexdigest()

    def key(self, model, task_hash: str, settings: dict[str, Any]) -> str:
        if id(model) not in self._model_hashes:
            self._model_hashes[id(model)] = model_hash(model)
        payload = {"version": CACHE_VERSION, "model": self._model_hashes[id(model)], "task": task_hash,
                   "settings": settings}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> list[Any] | None:
        path = self.folder / f"{key}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, key: str, responses: list[Any]) -> None:
        write_json(self.folder / f"{key}.json", responses)

"""Checkpoints that resume a run onto the same loss curve.

``checkpoints/step-000100/`` holds the model as a Hugging Face folder with
safetensors weights (and its tokenizer), and ``state.pt`` with everything else
the next step depends on: optimizer moments, scheduler position, the data
position, every RNG state, the loss history and the config it was trained with.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, write_json
from lmforge.train.config import TrainConfig, from_dict

STATE_FILE = "state.pt"
# Fields that may change between the interrupted run and its resumption without changing the curve.
_RESUMABLE_CHANGES = {"eval_interval", "eval_batches", "log_interval", "checkpoint_interval", "keep_checkpoints",
                      "compile", "gradient_checkpointing", "micro_batch_size"}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, model, tokenizer, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``folder/step-NNNNNN`` atomically and keep only the ``keep`` newest checkpoints."""
    from transformers.utils import logging as transformers_logging

    from lmforge.models import save_model

    transformers_logging.disable_progress_bar()
    target = folder / f"step-{state['step']:06d}"
    with atomic_dir(target, "checkpoint", overwrite=True) as tmp:  # a step folder of this training run
        save_model(model, tokenizer, tmp / "model")
        torch.save(state, tmp / STATE_FILE)
        write_json(tmp / "config.json", state["config"])
    for old in sorted(folder.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest checkpoint of a training output folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("step-*")) + sorted(path.glob("step-*"))
    candidates = [c for c in candidates if (c / STATE_FILE).is_file()]
    if not candidates:
        raise LmforgeError(f"no checkpoint in {path}; pass a step-NNNNNN folder or a training output folder")
    return max(candidates, key=lambda c: c.name)


def load_checkpoint(path: str | Path, config: TrainConfig) -> tuple[Path, dict[str, Any]]:
    """The checkpoint's folder and state, after checking it was trained with this config."""
    folder = find_checkpoint(path)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    saved = from_dict(state["config"]).to_dict()
    wanted = config.to_dict()
    changed = [
        f"model.{k}" for k in saved["model"] if saved["model"][k] != wanted["model"][k]
    ] + [k for k in saved if k != "model" and k not in _RESUMABLE_CHANGES and saved[k] != wanted[k]]
    if changed:
        first = changed[0]
        key = first.split(".")
        was = saved[key[0]][key[1]] if len(key) == 2 else saved[first]
        now = wanted[key[0]][key[1]] if len(key) == 2 else wanted[first]
        raise LmforgeError(
            f"checkpoint {folder} was trained with {first}={was!r}, this config has {now!r} "
            f"({len(changed)} field(s) differ: {', '.join(changed[:5])}); resume with its config.json or start a new run"
        )
    return folder, state

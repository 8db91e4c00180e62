"""Preference alignment of a model: load it, DPO-tune it (LoRA by default) and report held-out pairs before/after."""

from __future__ import annotations

import os
from typing import Callable

from lmforge.errors import LmforgeError
from lmforge.models import load_model
from lmforge.train.dpo import DpoConfig, DpoResult, dpo

METHODS = ("dpo",)


def align_model(model: str, method: str, config: DpoConfig, out_dir: str | os.PathLike, *,
                data: str | os.PathLike | None = None, trust_remote_code: bool = False, dtype: str | None = None,
                device: str | None = None, on_loaded: Callable | None = None,
                log: Callable[[str], None] | None = print, progress: Callable[..., None] | None = None) -> DpoResult:
    """Load ``model`` and align it with ``method`` on ``config.data``; results, checkpoints and the reference
    cache go under ``out_dir`` (a rerun there with the same settings resumes)."""
    if method not in METHODS:
        raise LmforgeError(f"alignment method '{method}' is not one of {', '.join(METHODS)}")
    config.validate()
    loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    if on_loaded:
        on_loaded(loaded)
    return dpo(loaded, tokenizer, config, out_dir, data=data, log=log, progress=progress)

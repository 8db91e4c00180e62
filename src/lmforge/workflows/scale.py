"""The scaling ladder: train every rung of sizes × token budgets from scratch, fit L(N, D), predict the held-out rung.

Every rung trains on the same tokenized corpus with a cosine schedule matched to its own token budget (as
Chinchilla did) and is recorded as its own ``train`` run with its energy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from lmforge.errors import LmforgeError
from lmforge.io import write_json
from lmforge.runs import record_run
from lmforge.scaling import LadderResult, Rung, fit_ladder, parse_size, plot_ladder
from lmforge.train import ModelConfig, TrainConfig, pretrain, prepare_data, train_config


def ladder_model(width: int, layers: int, base: ModelConfig) -> ModelConfig:
    """A llama shape of this width and depth: 32-wide heads (16 below 64), SwiGLU at 8/3 of the width."""
    head_size = 32 if width >= 64 else 16
    if width % head_size:
        raise LmforgeError(f"ladder width {width} must be a multiple of {head_size}")
    heads = width // head_size
    model = dataclasses.replace(base, hidden_size=width, layers=layers, heads=heads, kv_heads=heads,
                                intermediate_size=16 * max(1, round(8 / 3 * width / 16)))
    model.validate()
    return model


def rung_config(base: TrainConfig, width: int, layers: int, tokens: int) -> TrainConfig:
    steps = max(1, math.ceil(tokens / base.tokens_per_step))
    return dataclasses.replace(base, model=ladder_model(width, layers, base.model), max_steps=steps, max_tokens=None,
                               warmup_steps=max(1, steps // 10), eval_interval=steps, checkpoint_interval=0)


def train_rung(rung: Rung, base: TrainConfig, tokenizer, data, record: bool = True,
               log: Callable[[str], None] | None = None) -> Rung:
    """Train one rung from scratch and fill in its size, loss, FLOPs and time."""
    config = rung_config(base, rung.width, rung.layers, rung.tokens)
    recorder = record_run("train", config={**config.to_dict(), "ladder_rung": True}) if record else contextlib.nullcontext()
    with recorder as run:
        result = pretrain(config, tokenizer=tokenizer, data=data, log=None)
        if run:
            run.log_metrics(result.metrics())
            rung.run_id = run.id
    rung.non_embedding_params, rung.params = result.non_embedding_params, result.params
    rung.eval_loss, rung.train_loss = result.final_eval_loss, result.losses[-1]
    rung.flops, rung.seconds, rung.tokens_per_s = result.flops, result.train_seconds, result.tokens_per_s
    rung.tokens = result.tokens
    if log:
        log(f"{rung.width}x{rung.layers} ({rung.non_embedding_params:,} params) on {rung.tokens:,} tokens: "
            f"eval loss {rung.eval_loss:.4f} ({rung.seconds:.0f} s, {rung.tokens_per_s:,.0f} tok/s)")
    return rung


def ladder_rungs(sizes: str, budgets: str, holdout: str = "") -> list[Rung]:
    """Rungs from ``"32x2,64x4"`` sizes × ``"524288,1048576"`` budgets, plus an optional ``WIDTHxLAYERS@TOKENS`` held out."""
    rungs = [Rung(*parse_size(s), tokens=int(float(b))) for s in sizes.split(",") for b in budgets.split(",")]
    if holdout:
        size, _, tokens = holdout.partition("@")
        rungs.append(Rung(*parse_size(size), tokens=int(float(tokens or budgets.split(",")[-1])), held_out=True))
    return rungs


def run_ladder(rungs: list[Rung] | Path, out_dir: Path, *, corpus: str, vocab_size: int, context_length: int,
               batch_size: int, lr: float, flop_budget: float, bootstrap: int,
               log: Callable[[str], None] | None = None, progress: Callable[[], None] | None = None,
               ) -> tuple[LadderResult, list[Path]]:
    """Train ``rungs`` (or refit the ``ladder.json`` they name), fit the law, write ladder.json and the plots."""
    if isinstance(rungs, Path):
        rungs = [Rung(**r) for r in json.loads(rungs.read_text())["rungs"]]
    else:
        base = train_config({"model": {"vocab_size": vocab_size, "context_length": context_length},
                             "corpus": corpus, "batch_size": batch_size, "lr": lr, "eval_batches": 32})
        if log:
            log(f"tokenizing {corpus} with a {vocab_size}-token BPE ...")
        tokenizer, data = prepare_data(base)
        for rung in rungs:
            train_rung(rung, base, tokenizer, data, log=log)
            if progress:
                progress()
    result = fit_ladder(rungs, flop_budget=flop_budget, bootstrap=bootstrap)
    write_json(out_dir / "ladder.json", result.to_dict())
    return result, plot_ladder(result, out_dir)

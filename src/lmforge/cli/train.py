"""`lmforge train`: pretrain a small model from a preset or a YAML config (also under torchrun)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from lmforge.cli.common import (check_outputs, console, energy_rows, fmt, overwrite_option, print_table, progress_bar, save_json,
                                set_threads)
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    config: Path = typer.Option(None, "--config", "-c", help="YAML file whose keys are TrainConfig fields"),
    preset: str = typer.Option(None, help="model size preset: 1m, 3m, 10m, 30m"),
    corpus: str = typer.Option(None, help="named data set (wikitext2, web_articles, ...) or a path"),
    text_field: str = typer.Option(None, help="text field of jsonl/parquet corpora"),
    tokenizer: str = typer.Option(None, help="reuse this model's tokenizer (zoo name or folder) instead of training a BPE"),
    steps: int = typer.Option(None, help="optimizer steps"),
    tokens: int = typer.Option(None, help="train on this many tokens (sets the steps)"),
    batch_size: int = typer.Option(None, help="sequences per optimizer step, over all processes"),
    micro_batch_size: int = typer.Option(None, help="sequences per forward pass (gradient accumulation below batch size)"),
    context_length: int = typer.Option(None, help="tokens per training sequence"),
    lr: float = typer.Option(None, help="peak learning rate"),
    precision: str = typer.Option(None, help="auto | fp32 | bf16"),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model"),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    checkpoint_interval: int = typer.Option(None, help="save a checkpoint every N steps (and at the end)"),
    seed: int = typer.Option(None),
    resume: Path = typer.Option(None, help="checkpoint folder, or a training output folder to resume from its newest"),
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default .lmforge/artifacts/<run id>)"),
    threads: int = typer.Option(None, help="torch intra-op threads (1 is fastest for tiny models on shared cores)"),
    json_out: str = typer.Option(None, "--json", help="also write the metrics as JSON"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Pretrain a llama-architecture model from a size preset or a YAML config (also under torchrun)."""
    from lmforge.train import load_config, pretrain, train_config

    check_outputs(out, "training run", True, files=[json_out], inputs=[corpus, tokenizer])
    check_outputs(out and out / "model", "model", overwrite)
    set_threads(threads)
    overrides = dict(corpus=corpus, text_field=text_field, tokenizer=tokenizer, max_steps=steps, max_tokens=tokens,
                     batch_size=batch_size, micro_batch_size=micro_batch_size, lr=lr, precision=precision,
                     compile=compile, gradient_checkpointing=gradient_checkpointing,
                     checkpoint_interval=checkpoint_interval, seed=seed)
    values = {}
    if config:
        values = load_config(config).to_dict()
    if steps:
        values["max_tokens"] = None  # an explicit step count wins over the config's token budget
    if preset or context_length:
        model = {"preset": preset} if preset else dict(values.get("model") or {})
        if context_length:
            model["context_length"] = context_length
        values["model"] = model
    cfg = train_config(values, **overrides)
    rank = int(os.environ.get("RANK", "0"))
    recorder = record_run("train", config=cfg.to_dict(), inputs={"corpus": cfg.corpus}) if rank == 0 else contextlib.nullcontext()
    with recorder as run:
        out_dir = out or (run.artifacts_dir if run else None)
        with progress_bar("training", total=cfg.steps) as advance:
            result = pretrain(cfg, out_dir, resume=resume, log=console.print if rank == 0 else None, progress=advance)
        if run:
            run.log_metrics(result.metrics())
            run.add_artifact("model", out_dir / "model")
            if result.checkpoint:
                run.add_artifact("checkpoint", result.checkpoint)
    if rank != 0:
        return
    metrics = result.metrics()
    rows = [(k, metrics[k]) for k in ("params", "non_embedding_params", "steps", "tokens", "final_train_loss",
                                      "final_eval_loss", "tokens_per_s", "train_flops")]
    rows += [("MFU", f"{result.mfu:.2%} of {fmt(result.peak_flops)} FLOP/s ({result.peak_flops_source})"),
             *energy_rows(run.record.energy), ("model", str(out_dir / "model")), ("run", run.id)]
    print_table("train", ["metric", "value"], rows)
    save_json(json_out, {**metrics, "energy": run.record.energy, "run": run.id})

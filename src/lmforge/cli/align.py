"""`lmforge align MODEL --method dpo --data hh_rlhf`: preference tuning with a held-out before/after report."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import (console, device_option, dtype_option, energy_rows, print_table, progress_bar,
                                record_precision, save_json, set_threads)
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("align")(align_command)


def align_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    method: str = typer.Option("dpo", help="dpo"),
    data: str = typer.Option("hh_rlhf", help="hh_rlhf (Anthropic harmless pairs) or a jsonl(.gz) of chosen/rejected pairs"),
    limit: int = typer.Option(None, help="training pairs (default: every pair not held out)"),
    eval_pairs: int = typer.Option(64, help="held-out pairs for the before/after report"),
    beta: float = typer.Option(0.1, help="DPO beta: how far the policy may move from the reference"),
    label_smoothing: float = typer.Option(0.0, help="assumed share of flipped preference labels (0 ≤ ε < 0.5)"),
    loss_type: str = typer.Option("sigmoid", help="sigmoid (DPO; with label smoothing conservative DPO) | robust"),
    lora: bool = typer.Option(True, "--lora/--full", help="train LoRA adapters (default) or every weight"),
    rank: int = typer.Option(16, help="LoRA rank"),
    alpha: int = typer.Option(32, help="LoRA alpha"),
    epochs: int = typer.Option(1),
    steps: int = typer.Option(None, help="optimizer steps (default: the epochs)"),
    batch_size: int = typer.Option(8, help="pairs per optimizer step"),
    micro_batch_size: int = typer.Option(2),
    max_length: int = typer.Option(384, help="tokens of prompt + answer"),
    max_prompt_length: int = typer.Option(256, help="the prompt keeps its last N tokens"),
    lr: float = typer.Option(5e-5),
    checkpoint_every: int = typer.Option(10, help="steps between resumable checkpoints"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, "--out", "-o", help="output folder; rerun with the same one to resume "
                                                      "(default .lmforge/artifacts/<run id>)"),
    data_dir: str = typer.Option(None, help="folder with the named data sets (default ../shared/data)"),
    threads: int = typer.Option(None, help="torch intra-op threads"),
    trust_remote_code: bool = typer.Option(False),
    json_out: str = typer.Option(None, "--json", help="also write the metrics as JSON"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Align a causal LM to preference pairs (DPO) and report held-out reward accuracy and margin before/after."""
    from dataclasses import asdict

    from lmforge.models import model_input
    from lmforge.train.dpo import DpoConfig
    from lmforge.workflows.align import align_model

    set_threads(threads)
    cfg = DpoConfig(data=data, limit=limit, eval_pairs=eval_pairs, beta=beta, label_smoothing=label_smoothing,
                    loss_type=loss_type, lora=lora, rank=rank, alpha=alpha, epochs=epochs, max_steps=steps,
                    batch_size=batch_size, micro_batch_size=micro_batch_size, max_length=max_length,
                    max_prompt_length=max_prompt_length, lr=lr, checkpoint_every=checkpoint_every, seed=seed)
    cfg.validate()
    with record_run("align", config={"model": model, "method": method, **asdict(cfg), "dtype": dtype, "device": device},
                    inputs={"model": model_input(model), "data": data}) as run:
        out_dir = out or run.artifacts_dir
        with progress_bar(f"{method} steps", total=None) as advance:
            result = align_model(model, method, cfg, out_dir, data=data_dir, trust_remote_code=trust_remote_code,
                                 dtype=dtype, device=device, on_loaded=lambda loaded: record_precision(run, loaded),
                                 log=console.print, progress=advance)
        run.log_metrics({**{f"before.{k}": v for k, v in result.before.items()},
                         **{f"after.{k}": v for k, v in result.after.items()}, "steps": result.steps})
        run.add_artifact("adapters" if lora else "model", out_dir / ("adapters" if lora else "model"))
    print_table(f"held-out pairs ({result.eval_pairs}): before and after {method}", ["", "before", "after"], [
        ("reward accuracy (r_chosen > r_rejected)", result.before["reward_accuracy"], result.after["reward_accuracy"]),
        ("reward margin (β·log-ratio, nats)", result.before["reward_margin"], result.after["reward_margin"]),
        ("log-likelihood preference (log π(c) > log π(r))", result.before["logp_accuracy"], result.after["logp_accuracy"]),
        ("log-likelihood margin (nats)", result.before["logp_margin"], result.after["logp_margin"])])
    print_table(method, ["metric", "value"], [
        ("trainable params", result.trainable_params), ("training pairs", result.train_pairs), ("steps", result.steps),
        ("resumed from step", result.resumed_from), ("train tokens", result.train_tokens),
        ("final loss", result.losses[-1] if result.losses else None), ("seconds", result.seconds),
        *energy_rows(run.record.energy), ("saved", str(out_dir)), ("run", run.id)])
    save_json(json_out, {**result.metrics(), "energy": run.record.energy, "run": run.id})

"""`lmforge finetune MODEL --data …`: LoRA fine-tuning with a forgetting report."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import (check_at_least, check_outputs, console, device_option, dtype_option, energy_rows, overwrite_option,
                                print_table, record_precision, save_json, set_threads)
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)


def finetune_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    data: str = typer.Option("arc_easy", help="jsonl of prompt/response or of messages, a text corpus, or the named set arc_easy"),
    format: str = typer.Option("auto", help="auto | instruction | messages | text"),
    prompt_field: str = typer.Option("prompt"),
    response_field: str = typer.Option("response"),
    messages_field: str = typer.Option("messages", help="jsonl field holding a conversation (system/user/assistant turns)"),
    pack: bool = typer.Option(False, "--pack/--no-pack", help="pack examples into rows of --max-length (no attention across them)"),
    limit: int = typer.Option(None, help="use only the first N examples"),
    cda: bool = typer.Option(False, "--cda/--no-cda", help="also train on counterfactual copies (gender words and names swapped)"),
    cda_word_pairs: str = typer.Option("", help="a two-sided word-pair file for --cda (default: the shipped gender list)"),
    epochs: int = typer.Option(1),
    steps: int = typer.Option(None, help="optimizer steps (default: the epochs)"),
    batch_size: int = typer.Option(8),
    micro_batch_size: int = typer.Option(4),
    max_length: int = typer.Option(256, help="tokens per example (longer ones are cut)"),
    lr: float = typer.Option(1e-3),
    rank: int = typer.Option(8, help="LoRA rank"),
    alpha: int = typer.Option(16, help="LoRA alpha"),
    target_modules: str = typer.Option("", help="comma-separated module names to adapt (default: every attention linear)"),
    merge: bool = typer.Option(False, "--merge/--keep-adapters", help="merge the adapters into the weights"),
    ood_windows: int = typer.Option(8, help="WikiText-2 windows for the out-of-domain loss"),
    ood_seqlen: int = typer.Option(512),
    max_eval_examples: int = typer.Option(100),
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default .lmforge/artifacts/<run id>/adapters)"),
    threads: int = typer.Option(None, help="torch intra-op threads"),
    trust_remote_code: bool = typer.Option(False),
    json_out: str = typer.Option(None, "--json", help="also write the metrics and the forgetting report as JSON"),
    overwrite: bool = overwrite_option(),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """LoRA fine-tune a causal LM and report what it learned in-domain and forgot out-of-domain."""
    from dataclasses import asdict

    from lmforge.models import model_input
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.workflows.finetune import finetune_model

    check_at_least(1, limit=limit, epochs=epochs, steps=steps, batch_size=batch_size, micro_batch_size=micro_batch_size,
                   max_length=max_length, ood_seqlen=ood_seqlen, threads=threads)
    check_at_least(0, ood_windows=ood_windows, max_eval_examples=max_eval_examples)
    check_outputs(out, "model", overwrite, files=[json_out], inputs=[model, data])
    set_threads(threads)
    cfg = FinetuneConfig(data=data, format=format, prompt_field=prompt_field, response_field=response_field,
                         messages_field=messages_field, pack=pack, cda=cda,
                         cda_word_pairs=cda_word_pairs, limit=limit, epochs=epochs, max_steps=steps, batch_size=batch_size,
                         micro_batch_size=micro_batch_size, max_length=max_length, lr=lr, rank=rank, alpha=alpha,
                         target_modules=[m.strip() for m in target_modules.split(",") if m.strip()], merge=merge,
                         ood_windows=ood_windows, ood_seqlen=ood_seqlen, max_eval_examples=max_eval_examples)
    cfg.validate()
    with record_run("finetune", config={"model": model, **asdict(cfg), "dtype": dtype, "device": device}, inputs={"model": model_input(model), "data": data}) as run:
        out_dir = out or run.artifacts_dir / ("model" if merge else "adapters")
        result = finetune_model(model, cfg, out_dir, trust_remote_code=trust_remote_code, dtype=dtype, device=device,
                                on_loaded=lambda loaded: record_precision(run, loaded), log=console.print)
        run.log_metrics(result.metrics())
        run.add_artifact("model" if merge else "adapters", out_dir)
    report = result.forgetting
    print_table(f"forgetting report — in-domain: {result.eval_examples} held-out examples; "
                f"out-of-domain: {report['ood_corpus']}", ["", "before", "after", "change"],
                [(name, report["before"][key], report["after"][key], report["change"][key])
                 for name, key in (("in-domain loss", "in_domain_loss"), ("in-domain ppl", "in_domain_ppl"),
                                   ("out-of-domain loss", "out_of_domain_loss"), ("out-of-domain ppl", "out_of_domain_ppl"))])
    print_table("finetune", ["metric", "value"], [
        ("trainable params", result.trainable_params), ("train examples", result.train_examples),
        *([("counterfactual copies (--cda)", result.counterfactual_examples)] if cda else []),
        ("steps", result.steps), ("train tokens", result.train_tokens), ("train FLOPs (≈ 4·N·D)", result.train_flops),
        ("seconds", result.seconds),
        *energy_rows(run.record.energy), ("saved", str(out_dir)), ("run", run.id)])
    save_json(json_out, {**result.metrics(), "energy": run.record.energy, "run": run.id})

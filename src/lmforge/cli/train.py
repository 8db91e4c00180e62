"""`lmforge train`, `lmforge finetune`, `lmforge scale`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from lmforge.cli.common import console, device_option, dtype_option, fmt, print_table, progress_bar, record_precision, save_json
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("finetune")(finetune_command)
    app.command("scale")(scale_command)


def _energy_rows(energy: dict) -> list[tuple[str, object]]:
    if energy.get("method") == "unavailable":
        return [("energy", f"unavailable ({energy.get('reason')})")]
    return [("energy (kWh)", energy.get("energy_kwh")), ("CO2 (kg)", energy.get("co2_kg")),
            ("energy measured by", f"{energy.get('method')}, {energy.get('country')}")]


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


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
) -> None:
    """Pretrain a llama-architecture model from a size preset or a YAML config (also under torchrun)."""
    from lmforge.train import load_config, pretrain, train_config

    _set_threads(threads)
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
             *_energy_rows(run.record.energy), ("model", str(out_dir / "model")), ("run", run.id)]
    print_table("train", ["metric", "value"], rows)
    save_json(json_out, {**metrics, "energy": run.record.energy, "run": run.id})


def finetune_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    data: str = typer.Option("arc_easy", help="jsonl of prompt/response, a text corpus, or the named set arc_easy"),
    format: str = typer.Option("auto", help="auto | instruction | text"),
    prompt_field: str = typer.Option("prompt"),
    response_field: str = typer.Option("response"),
    limit: int = typer.Option(None, help="use only the first N examples"),
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
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """LoRA fine-tune a causal LM and report what it learned in-domain and forgot out-of-domain."""
    from dataclasses import asdict

    from lmforge.models import load_model
    from lmforge.train.finetune import FinetuneConfig, finetune

    _set_threads(threads)
    cfg = FinetuneConfig(data=data, format=format, prompt_field=prompt_field, response_field=response_field,
                         limit=limit, epochs=epochs, max_steps=steps, batch_size=batch_size,
                         micro_batch_size=micro_batch_size, max_length=max_length, lr=lr, rank=rank, alpha=alpha,
                         target_modules=[m.strip() for m in target_modules.split(",") if m.strip()], merge=merge,
                         ood_windows=ood_windows, ood_seqlen=ood_seqlen, max_eval_examples=max_eval_examples)
    cfg.validate()
    with record_run("finetune", config={"model": model, **asdict(cfg), "dtype": dtype, "device": device},
                    inputs={"model": model, "data": data}) as run:
        loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        record_precision(run, loaded)
        out_dir = out or run.artifacts_dir / ("model" if merge else "adapters")
        result = finetune(loaded, tokenizer, cfg, out_dir, log=console.print)
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
        ("steps", result.steps), ("train tokens", result.train_tokens), ("train FLOPs (≈ 4·N·D)", result.train_flops),
        ("seconds", result.seconds),
        *_energy_rows(run.record.energy), ("saved", str(out_dir)), ("run", run.id)])
    save_json(json_out, {**result.metrics(), "energy": run.record.energy, "run": run.id})


def scale_command(
    sizes: str = typer.Option("32x2,48x3,64x4,96x4", help="model sizes as WIDTHxLAYERS, comma-separated"),
    budgets: str = typer.Option("524288,1048576,2097152", help="token budgets, comma-separated (the defaults: about 20 min of one core)"),
    holdout: str = typer.Option("128x6@2097152", help="a larger WIDTHxLAYERS@TOKENS run to predict ('' for none)"),
    corpus: str = typer.Option("wikitext2,web_articles", help="corpus (names or paths, comma-separated)"),
    vocab_size: int = typer.Option(2048, help="BPE vocabulary trained on the corpus"),
    context_length: int = typer.Option(128),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(3e-3),
    flop_budget: float = typer.Option(1e18, help="FLOPs to plan compute-optimal N and D for"),
    bootstrap: int = typer.Option(100, help="bootstrap refits for the intervals"),
    from_json: Path = typer.Option(None, help="refit a ladder.json written before instead of training"),
    out: Path = typer.Option(None, "--out", "-o", help="folder for ladder.json and the plots (default: the run's artifacts)"),
    threads: int = typer.Option(1, help="torch intra-op threads (1 suits these tiny models)"),
    json_out: str = typer.Option(None, "--json", help="also write the result as JSON"),
) -> None:
    """Train a ladder of sizes × token budgets, fit L(N, D) = E + A/N^α + B/D^β, predict a larger run, plan N and D."""
    import json

    from lmforge.io import write_json
    from lmforge.scaling import Rung, fit_ladder, parse_size, plot_ladder, train_rung
    from lmforge.train import prepare_data, train_config

    _set_threads(threads)
    settings = dict(sizes=sizes, budgets=budgets, holdout=holdout, corpus=corpus, vocab_size=vocab_size,
                    context_length=context_length, batch_size=batch_size, lr=lr, flop_budget=flop_budget,
                    bootstrap=bootstrap, from_json=str(from_json) if from_json else None)
    with record_run("scale", config=settings, inputs={"corpus": corpus}) as run:
        out_dir = out or run.artifacts_dir
        if from_json:
            rungs = [Rung(**r) for r in json.loads(from_json.read_text())["rungs"]]
        else:
            rungs = [Rung(*parse_size(s), tokens=int(float(b))) for s in sizes.split(",") for b in budgets.split(",")]
            if holdout:
                size, _, tokens = holdout.partition("@")
                rungs.append(Rung(*parse_size(size), tokens=int(float(tokens or budgets.split(",")[-1])), held_out=True))
            base = train_config({"model": {"vocab_size": vocab_size, "context_length": context_length},
                                 "corpus": corpus, "batch_size": batch_size, "lr": lr, "eval_batches": 32})
            console.print(f"tokenizing {corpus} with a {vocab_size}-token BPE ...")
            tokenizer, data = prepare_data(base)
            with progress_bar("ladder", total=len(rungs)) as advance:
                for rung in rungs:
                    train_rung(rung, base, tokenizer, data, log=console.print)
                    advance()
        result = fit_ladder(rungs, flop_budget=flop_budget, bootstrap=bootstrap)
        write_json(out_dir / "ladder.json", result.to_dict())
        plots = plot_ladder(result, out_dir)
        run.log_metrics({"law": result.law.to_dict(), "predicted_loss": result.predicted_loss,
                         "relative_error": result.relative_error, "compute_optimal": result.compute_optimal,
                         "rungs": len(rungs)})
        run.add_artifact("ladder", out_dir / "ladder.json")
        for path in plots:
            run.add_artifact(path.stem, path)

    law = result.law
    print_table("ladder", ["size", "N (non-emb.)", "D (tokens)", "eval loss", "fitted", "tok/s"], [
        (f"{r.width}x{r.layers}" + (" held out" if r.held_out else ""), r.non_embedding_params, r.tokens,
         r.eval_loss, float(law.predict(r.non_embedding_params, r.tokens)), round(r.tokens_per_s))
        for r in rungs])
    interval = law.intervals
    rows = [(name, getattr(law, name), f"{interval[name][0]:.4g} – {interval[name][1]:.4g}" if name in interval else "-")
            for name in ("E", "A", "alpha", "B", "beta")]
    print_table(f"L(N, D) = E + A/N^α + B/D^β (Huber δ=1e-3 on log loss; 80% bootstrap intervals, "
                f"{interval.get('bootstrap_samples', 0)} refits)", ["parameter", "value", "interval"], rows)
    if result.held_out:
        low, high = result.prediction_interval or (float("nan"), float("nan"))
        print_table("held-out prediction", ["", "value"], [
            ("run", f"{result.held_out.width}x{result.held_out.layers} on {result.held_out.tokens:,} tokens"),
            ("measured loss", result.held_out.eval_loss), ("predicted loss", result.predicted_loss),
            ("80% interval", f"{low:.4f} – {high:.4f}"), ("relative error", f"{result.relative_error:+.2%}")])
    if result.compute_optimal:
        plan = result.compute_optimal
        print_table(f"compute-optimal for C = {fmt(plan['flops'])} FLOPs (C ≈ 6·N·D)", ["", "value"], [
            ("N (non-embedding params)", plan["n_params"]), ("D (tokens)", plan["tokens"]),
            ("tokens per parameter", plan["tokens_per_param"]), ("predicted loss", plan["predicted_loss"])])
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"plots: {', '.join(str(p) for p in plots)}")
    save_json(json_out, {**result.to_dict(), "energy": run.record.energy, "run": run.id})

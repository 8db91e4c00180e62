"""`lmforge prune`, `lmforge distill`, `lmforge optimize`: sparse and smaller models, and the recipe that fits a budget."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import console, device_option, dtype_option, fmt, human_bytes, print_table, progress_bar, record_precision, save_json
from lmforge.errors import LmforgeError
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)
    app.command("distill")(distill_command)
    app.command("optimize")(optimize_command)


def _split(text: str, cast=str) -> list:
    try:
        return [None if item.strip().lower() in {"none", "channel"} else cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise LmforgeError(f"cannot read the list '{text}': write comma-separated values such as 4,8") from None


def _calibration(tokenizer, corpus_name: str, samples: int, seqlen: int):
    from lmforge.data import calibration_batches, load_corpus

    return calibration_batches(tokenizer, load_corpus(corpus_name), samples, seqlen, seed=0)


def _source_folder(model: str) -> Path | None:
    from lmforge.models import resolve_source, zoo_path

    kind, where = resolve_source(model)
    return zoo_path(model) if kind == "zoo" else (Path(where) if kind in {"folder", "gguf"} else None)


def prune_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    out: Path = typer.Option(..., "-o", "--out", help="folder for the pruned model"),
    method: str = typer.Option("wanda", help="magnitude | wanda | sparsegpt | structured"),
    sparsity: float = typer.Option(0.5, help="fraction of weights zeroed in every row (unstructured)"),
    pattern: str = typer.Option("unstructured", help="unstructured or N:M, e.g. 2:4"),
    heads: float = typer.Option(0.0, help="structured: fraction of query heads removed per key/value group"),
    mlp: float = typer.Option(0.25, help="structured: fraction of MLP channels removed"),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct",
                                     help="structured: refit the kept o_proj/down_proj columns by least squares"),
    calib: str = typer.Option("web_articles", help="calibration corpus (named set or path)"),
    samples: int = typer.Option(32, help="calibration samples"),
    seqlen: int = typer.Option(2048, help="calibration sample length in tokens"),
    sink_share: float = typer.Option(0.1, help="sparsegpt and the structured refit: least share of the Hessian held by "
                                               "each sequence's first token (the attention sink); 0 = the unweighted Hessian"),
    quantize_bits: int = typer.Option(None, "--quantize-bits", help="then quantize the survivors (RTN, symmetric), e.g. 4"),
    group_size: int = typer.Option(64, help="group size for --quantize-bits"),
    json_out: Path = typer.Option(None, "--json", help="also write the summary as JSON"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Prune a model (unstructured, N:M or structured) and save it; sparse weights are stored as bitmask + values."""
    from lmforge.compress import config_from_dict, prune, prune_then_quantize
    from lmforge.compress.storage.sparse import save_sparse
    from lmforge.compress.pruning.structured import Structured, structured_prune
    from lmforge.models import load_model, save_model

    extra = {"sink_share": sink_share} if method in {"sparsegpt", "structured"} else {}
    settings = {"method": method, "sparsity": sparsity, "pattern": pattern, "heads": heads, "mlp": mlp,
                "reconstruct": reconstruct, "calib": calib,
                "samples": samples, "seqlen": seqlen, "quantize_bits": quantize_bits, "group_size": group_size, "dtype": dtype, "device": device, **extra}
    if method == "structured":
        config = Structured(heads, mlp, reconstruct, **extra)
    else:
        config = config_from_dict({"method": method, "sparsity": sparsity, "pattern": pattern, **extra})
    with record_run("prune", config=settings, inputs={"model": model}) as run:
        loaded, tokenizer = load_model(model, dtype=dtype, device=device)
        record_precision(run, loaded)
        calibration = None if method == "magnitude" else _calibration(tokenizer, calib, samples, seqlen)
        layers = loaded.config.num_hidden_layers
        with progress_bar(f"pruning ({method})", total=layers) as advance:
            if method == "structured":
                summary = structured_prune(loaded, config, calibration, progress=advance).to_dict()
            elif quantize_bits:
                from lmforge.compress.quantization.config import RTN

                summary = prune_then_quantize(loaded, config, RTN(bits=quantize_bits, group_size=group_size), calibration)
            else:
                summary = prune(loaded, config, calibration, progress=advance).to_dict()
        metadata = {"pruning": {**settings, "source": model}}
        if method == "structured":
            save_model(loaded, tokenizer, out, metadata)
        elif quantize_bits:
            from lmforge.compress.storage.serialize import save_quantized

            save_quantized(loaded, tokenizer, out, metadata=metadata)
        else:
            summary["storage"] = save_sparse(loaded, tokenizer, out, metadata)
        run.add_artifact("model", out)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        run.log_metrics(metrics)
    rows = [(k, v) for k, v in metrics.items()]
    if "storage" in summary:
        rows += [("dense bytes", human_bytes(summary["storage"]["dense_bytes"])), ("stored bytes", human_bytes(summary["storage"]["stored_bytes"]))]
    print_table(f"prune {model} → {out}", ["field", "value"], rows)
    save_json(json_out, summary)


def distill_command(
    student: str = typer.Argument(..., help="student model (e.g. a pruned folder)"),
    teacher: str = typer.Option(..., help="teacher model with the same tokenizer"),
    out: Path = typer.Option(..., "-o", "--out", help="folder for the trained student"),
    corpus: str = typer.Option("web_articles", help="training text (named set or path)"),
    steps: int = typer.Option(200), batch_size: int = typer.Option(4), seq_len: int = typer.Option(256),
    lr: float = typer.Option(1e-4), temperature: float = typer.Option(2.0),
    ce_weight: float = typer.Option(0.0, help="weight of the cross-entropy on true tokens"),
    hidden_weight: float = typer.Option(0.0, help="weight of the hidden-state MSE"),
    max_minutes: float = typer.Option(None, help="stop after this much training time"),
    json_out: Path = typer.Option(None, "--json"),
) -> None:
    """Distill a teacher into a student (KL at temperature T; optional hidden-state loss); pruned zeros stay zero."""
    from lmforge.compress.storage.sparse import SPARSE_FILE, load_sparse, save_sparse
    from lmforge.data import load_corpus
    from lmforge.models import load_model
    from lmforge.train.distill import DistillConfig, distill

    config = DistillConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, temperature=temperature,
                           ce_weight=ce_weight, hidden_weight=hidden_weight,
                           max_seconds=max_minutes * 60 if max_minutes else None)
    with record_run("distill", config=vars(config), inputs={"student": student, "teacher": teacher, "corpus": corpus}) as run:
        folder = _source_folder(student)
        student_model, tokenizer = load_sparse(folder) if folder and (folder / SPARSE_FILE).is_file() else load_model(student)
        teacher_model, _ = load_model(teacher)
        with progress_bar("distilling", total=steps) as advance:
            result = distill(student_model, teacher_model, load_corpus(corpus), config, tokenizer=tokenizer, progress=advance,
                             log=lambda p: console.print(f"step {p['step']}: loss {fmt(p['loss'])}"))
        save_sparse(student_model, tokenizer, out, {"distilled_from": teacher})
        run.add_artifact("model", out)
        run.log_metrics({"steps": result.steps, "seconds": result.seconds, "tokens": result.tokens,
                         "final_loss": result.curve[-1]["loss"]})
    print_table("distillation", ["step", "seconds", "loss"], [(p["step"], p["seconds"], p["loss"]) for p in result.curve])
    save_json(json_out, result.to_dict())


def optimize_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    max_mb: float = typer.Option(None, help="largest acceptable stored size in MB"),
    min_tokens_per_s: float = typer.Option(None, help="slowest acceptable decode speed (batch 1)"),
    max_ppl_increase: str = typer.Option(None, help="largest acceptable perplexity increase, e.g. 10%"),
    quants: str = typer.Option("rtn", help="quantization methods: rtn,gptq,awq"),
    bits: str = typer.Option("8,4", help="bit widths"),
    group_sizes: str = typer.Option("64", help="group sizes (none = per channel)"),
    sparsities: str = typer.Option("0,0.5", help="unstructured sparsities (0 = no pruning)"),
    patterns: str = typer.Option("unstructured", help="unstructured and/or N:M patterns, e.g. unstructured,2:4"),
    prune_method: str = typer.Option("wanda", help="magnitude | wanda | sparsegpt"),
    head_bits: str = typer.Option("none", help="output-head bits with each quantization, e.g. none,8 (8: int8 per "
                                               "channel, the head untied from the embeddings)"),
    share_embeddings: bool = typer.Option(False, help="with --head-bits on a tied model: the embeddings read the quantized "
                                          "head (one table for both)"),
    corpus: str = typer.Option("wikitext2", help="perplexity corpus"),
    ppl_windows: int = typer.Option(8), ppl_seqlen: int = typer.Option(512),
    calib: str = typer.Option("web_articles"), calib_samples: int = typer.Option(8), calib_seqlen: int = typer.Option(512),
    out: Path = typer.Option(None, "-o", "--out", help="write the best model here"),
    plot: Path = typer.Option(Path("optimize-front"), help="plot path stem: writes STEM.png and STEM.html"),
    json_out: Path = typer.Option(None, "--json"),
) -> None:
    """Measure a grid of compression recipes on this machine, print the Pareto front, pick the best fit."""
    from lmforge.workflows.optimize import Budget, apply_recipe, parse_fraction, plot_front, recipe_grid, search
    from lmforge.data import load_corpus
    from lmforge.models import load_model
    from lmforge.runs import content_hash

    budget = Budget(max_mb, min_tokens_per_s, parse_fraction(max_ppl_increase))
    recipes = recipe_grid(_split(quants), _split(bits, int), _split(group_sizes, int), _split(sparsities, float),
                          _split(patterns), prune_method, _split(head_bits, int), share_embeddings)
    settings = {"budget": vars(budget), "recipes": [r.key for r in recipes], "corpus": corpus, "ppl_windows": ppl_windows,
                "ppl_seqlen": ppl_seqlen, "calib": calib, "calib_samples": calib_samples, "calib_seqlen": calib_seqlen}
    with record_run("optimize", config=settings, inputs={"model": model}) as run:
        loaded, tokenizer = load_model(model)
        if share_embeddings and not getattr(loaded.config, "tie_word_embeddings", False):
            raise LmforgeError(f"--share-embeddings needs a head tied to the embeddings, and {model}'s are separate: drop it")
        folder = _source_folder(model)
        model_hash = content_hash(folder) if folder else model
        needs_calibration = any(r.sparsity and r.prune_method != "magnitude" or r.quant in {"gptq", "awq"} for r in recipes)
        calibration = _calibration(tokenizer, calib, calib_samples, calib_seqlen) if needs_calibration else None
        with progress_bar("measuring recipes", total=len(recipes) + 1) as advance:
            result = search(loaded, tokenizer, budget, recipes, model_hash=model_hash, corpus=load_corpus(corpus),
                            calibration=calibration, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen, progress=advance,
                            log=lambda m: console.print(f"{m.recipe}: {m.size_mb:.1f} MB, ppl {m.ppl:.2f}, "
                                                        f"{m.tokens_per_s:.1f} tok/s{' (cached)' if m.cached else ''}"))
        png, page = plot.with_suffix(".png"), plot.with_suffix(".html")
        plot_front(result, png, page, f"{model}: size, perplexity and speed of {len(result.measurements)} recipes")
        run.add_artifact("plot", png)
        run.log_metrics({"recipes": len(result.measurements), "front": len(result.front), "best": result.best or "none"})
        rows = [(m.recipe, m.size_mb, m.ppl, f"{(m.ppl / result.base_ppl - 1) * 100:+.1f} %", m.tokens_per_s,
                 "★" if m.recipe == result.best else ("front" if m.recipe in result.front else ""))
                for m in sorted(result.measurements, key=lambda m: m.size_mb)]
        print_table(f"recipes on this machine (budget: {budget.describe()})", ["recipe", "MB", "ppl", "Δ ppl", "tokens/s", ""], rows)
        console.print(f"wrote {png} and {page}")
        save_json(json_out, result.to_dict())
        if result.best is None:
            raise LmforgeError(result.no_fit_message())
        console.print(f"best recipe within the budget: [bold]{result.best}[/]")
        if out:
            best = next(r for r in recipes if r.key == result.best)
            _write_recipe_model(loaded, tokenizer, best, calibration, out, apply_recipe)
            run.add_artifact("model", out)
            console.print(f"wrote {out}")


def _write_recipe_model(model, tokenizer, recipe, calibration, out: Path, apply_recipe) -> None:
    from lmforge.compress.quantization.driver import is_quantized
    from lmforge.compress.storage.serialize import save_quantized
    from lmforge.compress.storage.sparse import save_sparse
    from lmforge.models import save_model

    metadata = {"recipe": recipe.key}
    apply_recipe(model, recipe, calibration)
    if is_quantized(model):
        save_quantized(model, tokenizer, out, metadata=metadata)
    elif recipe.sparsity:
        save_sparse(model, tokenizer, out, metadata)
    else:
        save_model(model, tokenizer, out, metadata)

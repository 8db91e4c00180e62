"""`lmforge eval MODEL --task ...`: perplexity, multiple choice, speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmforge.cli.common import console, device_option, dtype_option, human_bytes, print_table, progress_bar, record_precision, save_json
from lmforge.data import load_corpus
from lmforge.data.named import NAMES
from lmforge.errors import LmforgeError
from lmforge.evaluate import PROTOCOLS, builtin_tasks, load_task, multiple_choice, perplexity, speed
from lmforge.compress.storage.sparse import semi_structured_on_cuda
from lmforge.models import load_model, resolve_source
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _is_corpus(task: str) -> bool:
    return task in NAMES or Path(task).exists()


def run_task(model, tokenizer, task: str, *, protocol: str = "windows", seqlen: int = 2048, stride: int | None = None,
             limit: int | None = None, batch_size: int = 1, data_dir: str | None = None,
             text_field: str = "text") -> dict[str, Any]:
    """Evaluate one task and return its metrics (the function behind `lmforge eval`)."""
    if task == "speed":
        with console.status("timing prefill and decode"):
            return speed(model, tokenizer)
    if task in builtin_tasks() or task.endswith(".yaml"):
        spec = load_task(task)
        with progress_bar(spec.name, None) as advance:
            result = multiple_choice(model, tokenizer, spec, limit=limit, batch_size=batch_size, data=data_dir,
                                     progress=advance, on_total=advance.set_total)
        return {k: v for k, v in result.items() if k != "details"}
    if _is_corpus(task):
        corpus = load_corpus(task, data=data_dir, text_field=text_field)
        with progress_bar(f"{corpus.name} ({protocol})", None) as advance:
            result = perplexity(model, tokenizer, corpus, protocol=protocol, seqlen=seqlen, stride=stride, limit=limit,
                                batch_size=batch_size, progress=advance, on_total=advance.set_total)
        return {k: v for k, v in result.to_dict().items() if k != "window_nll"}
    known = sorted({*builtin_tasks(), "wikitext2", "web_articles", "speed"})
    raise LmforgeError(f"unknown task '{task}'; use one of: {', '.join(known)}, a corpus path, or a task .yaml")


def _rows(task: str, metrics: dict[str, Any]) -> list[tuple]:
    if task == "speed":
        rows = [("model bytes", human_bytes(metrics["model_bytes"])), ("peak RSS", human_bytes(metrics["peak_rss_bytes"])),
                ("threads", metrics["threads"])]
        for key, value in metrics.items():
            if key.startswith("batch"):
                rows += [(f"{key} prompt tokens/s", value["prompt_tokens_per_s"]),
                         (f"{key} time to first token (s)", value["time_to_first_token_s"]),
                         (f"{key} decode tokens/s", value["decode_tokens_per_s"])]
        return rows
    if "acc" in metrics:
        return [("questions", metrics["questions"]), ("acc", f"{metrics['acc']:.4f} ± {metrics['acc_stderr']:.4f}"),
                ("acc_norm", f"{metrics['acc_norm']:.4f} ± {metrics['acc_norm_stderr']:.4f}"), ("seconds", metrics["seconds"])]
    rows = [("protocol", metrics["protocol"]), ("perplexity (token)", metrics["ppl"]), ("tokens scored", metrics["tokens"]),
            ("windows", metrics["windows"]), ("seqlen", metrics["seqlen"])]
    if metrics["protocol"] == "rolling":
        rows += [("documents", metrics["documents"]), ("word_perplexity", metrics["word_perplexity"]),
                 ("byte_perplexity", metrics["byte_perplexity"]), ("bits_per_byte", metrics["bits_per_byte"])]
    if metrics.get("stride"):
        rows.append(("stride", metrics["stride"]))
    return rows + [("tokens/s", metrics["tokens_per_s"]), ("seconds", metrics["seconds"])]


def eval_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    task: str = typer.Option("wikitext2", "--task", "-t",
                             help="comma-separated: wikitext2 | web_articles | arc_easy | piqa | speed | corpus path | task .yaml"),
    protocol: str = typer.Option("windows", help=f"perplexity protocol: {' | '.join(PROTOCOLS)}"),
    seqlen: int = typer.Option(2048, help="window length in tokens (perplexity) / max length (multiple choice)"),
    stride: int = typer.Option(None, help="sliding protocol: tokens between window starts (default seqlen/2)"),
    limit: int = typer.Option(None, help="windows (windows/sliding), documents (rolling) or questions"),
    batch_size: int = typer.Option(1, help="sequences per forward pass (results do not depend on it)"),
    json_out: str = typer.Option(None, "--json", help="write the metrics to this JSON file"),
    data_dir: str = typer.Option(None, help="folder with the named data sets (default ../shared/data)"),
    text_field: str = typer.Option("text", help="jsonl/parquet field holding the text"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Evaluate a model: perplexity (windows / rolling / sliding), ARC-Easy, PIQA, speed and memory."""
    if limit is not None and limit < 1:
        raise LmforgeError("--limit must be at least 1")
    tasks = [t.strip() for t in task.split(",") if t.strip()]
    config = {"model": model, "tasks": tasks, "protocol": protocol, "seqlen": seqlen, "stride": stride,
              "limit": limit, "batch_size": batch_size, "dtype": dtype, "device": device}
    kind, where = resolve_source(model)
    inputs = {"model": str(where) if kind in {"folder", "gguf"} else model}
    with record_run("eval", config=config, inputs=inputs) as run:
        with console.status(f"loading {model}"):
            loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        record_precision(run, loaded)
        if sparse := semi_structured_on_cuda(loaded):
            console.print(f"{sparse} 2:4-sparse linears run as semi-structured sparse tensors on the GPU")
        results = {}
        for name in tasks:
            metrics = run_task(loaded, tokenizer, name, protocol=protocol, seqlen=seqlen, stride=stride, limit=limit,
                               batch_size=batch_size, data_dir=data_dir, text_field=text_field)
            results[name] = metrics
            run.log_metrics({f"{name}.{k}": v for k, v in _flatten(metrics).items()})
            print_table(f"{model} · {name}", ["metric", "value"], _rows(name, metrics))
        save_json(json_out, {"model": model, "run_id": run.id, "results": results})
    console.print(f"run {run.id} recorded")


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat

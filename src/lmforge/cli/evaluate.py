"""`lmforge eval MODEL --task ...`: perplexity, multiple choice, speed."""

from __future__ import annotations

from typing import Any

import typer

from lmforge.cli.common import (check_at_least, check_outputs, console, device_option, dtype_option, human_bytes, print_table,
                                progress_bar, record_precision, save_json)
from lmforge.cli.evaluate_tasks import print_task_file
from lmforge.compress.storage.sparse import semi_structured_on_cuda
from lmforge.evaluate import PROTOCOLS
from lmforge.evaluate.tasks import EvalSettings, is_task_file, write_samples
from lmforge.models import load_model, model_input
from lmforge.runs import record_run
from lmforge.workflows.evaluate import check_task, flatten_metrics, run_task, run_task_file, task_file_metrics


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


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
                             help="comma-separated: wikitext2 | web_articles | speed | corpus path | an lm-eval task or "
                                  "group (arc_easy, piqa, hellaswag, winogrande, lambada_openai, mmlu, gsm8k, or one "
                                  "under --include-path) | an lm-eval task .yaml"),
    protocol: str = typer.Option("windows", help=f"perplexity protocol: {' | '.join(PROTOCOLS)}"),
    seqlen: int = typer.Option(2048, help="window length in tokens (perplexity) / max length (multiple choice)"),
    stride: int = typer.Option(None, help="sliding protocol: tokens between window starts (default seqlen/2)"),
    limit: int = typer.Option(None, help="windows (windows/sliding), documents (rolling) or questions"),
    batch_size: int = typer.Option(1, help="sequences per forward pass (results do not depend on it)"),
    json_out: str = typer.Option(None, "--json", help="write the metrics to this JSON file"),
    data_dir: str = typer.Option(None, help="folder with the named data sets (default ../shared/data)"),
    text_field: str = typer.Option("text", help="jsonl/parquet field holding the text"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    include_path: list[str] = typer.Option([], help="folder of lm-eval task YAML files (repeatable)"),
    num_fewshot: int = typer.Option(None, help="lm-eval tasks: few-shot examples (default: the task file's)"),
    apply_chat_template: bool = typer.Option(False, help="lm-eval tasks: render prompts with the model's chat template"),
    system_prompt: str = typer.Option(None, help="lm-eval tasks: system instruction before the task description"),
    fewshot_as_multiturn: bool = typer.Option(None, "--fewshot-as-multiturn/--no-fewshot-as-multiturn",
                                              help="few-shot examples as chat turns (default: on with a chat template)"),
    log_samples: str = typer.Option(None, help="lm-eval tasks: write every document's prompt, answers and scores (JSONL)"),
    trust_task_code: bool = typer.Option(False, help="lm-eval tasks: allow !function hooks in task files (runs their code)"),
    cache: bool = typer.Option(False, help="lm-eval tasks: reuse answers cached for this exact model, task and settings"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> dict[str, dict[str, Any]]:
    """Evaluate a model: perplexity (windows / rolling / sliding), lm-eval task files, speed and memory."""
    check_at_least(1, limit=limit, seqlen=seqlen, stride=stride, batch_size=batch_size)
    check_at_least(0, num_fewshot=num_fewshot)
    check_outputs(files=[json_out, log_samples])
    tasks = [t.strip() for t in task.split(",") if t.strip()]
    for name in tasks:
        if not is_task_file(name, include_path):
            check_task(name)
    config = {"model": model, "tasks": tasks, "protocol": protocol, "seqlen": seqlen, "stride": stride,
              "limit": limit, "batch_size": batch_size, "dtype": dtype, "device": device}
    inputs = {"model": model_input(model)}
    with record_run("eval", config=config, inputs=inputs) as run:
        with console.status(f"loading {model}"):
            loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        record_precision(run, loaded)
        if sparse := semi_structured_on_cuda(loaded):
            console.print(f"{sparse} 2:4-sparse linears run as semi-structured sparse tensors on the GPU")
        results, task_results = {}, []
        settings = EvalSettings(num_fewshot=num_fewshot, limit=limit, apply_chat_template=apply_chat_template,
                                system_prompt=system_prompt, batch_size=batch_size, trust_task_code=trust_task_code,
                                fewshot_as_multiturn=apply_chat_template if fewshot_as_multiturn is None else fewshot_as_multiturn,
                                data_dir=data_dir)
        for name in tasks:
            if is_task_file(name, include_path):
                results[name], done = run_task_file(loaded, tokenizer, name, settings, include_paths=include_path,
                                                    cache=cache, progress=progress_bar)
                print_task_file(f"{model} · {name}", results[name], done)
                task_results += done
                run.log_metrics(task_file_metrics(results[name]))
                continue
            metrics = run_task(loaded, tokenizer, name, protocol=protocol, seqlen=seqlen, stride=stride, limit=limit,
                               batch_size=batch_size, data_dir=data_dir, text_field=text_field, progress=progress_bar)
            results[name] = metrics
            run.log_metrics({f"{name}.{k}": v for k, v in flatten_metrics(metrics).items()})
            print_table(f"{model} · {name}", ["metric", "value"], _rows(name, metrics))
        save_json(json_out, {"model": model, "run_id": run.id, "results": results})
        if log_samples:
            console.print(f"wrote {write_samples(log_samples, task_results)}")
    console.print(f"run {run.id} recorded")
    return results


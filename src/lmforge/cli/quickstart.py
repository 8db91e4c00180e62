"""`lmforge quickstart`: the whole tour on SmolLM2-135M in one command, one table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from lmforge.cli.common import console, human_bytes, print_table, save_json
from lmforge.cli.evaluate import run_task
from lmforge.models import load_model, pull, read_metadata
from lmforge.models.info import disk_bytes
from lmforge.runs import record_run

MODEL = "smollm2-135m"


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)


def evaluate_model(model, tokenizer, *, windows: int, questions: int, seqlen: int = 2048) -> dict[str, Any]:
    """The quickstart's evaluation of one model: a wikitext2 slice, an ARC-Easy slice, speed and memory."""
    wikitext = run_task(model, tokenizer, "wikitext2", protocol="windows", seqlen=seqlen, limit=windows, batch_size=1)
    arc = run_task(model, tokenizer, "arc_easy", limit=questions, batch_size=8)
    speed = run_task(model, tokenizer, "speed")
    return {
        "wikitext2_ppl": wikitext["ppl"], "wikitext2_windows": wikitext["windows"], "wikitext2_seqlen": seqlen,
        "arc_easy_acc": arc["acc"], "arc_easy_acc_norm": arc["acc_norm"], "arc_easy_questions": arc["questions"],
        "model_bytes": speed["model_bytes"], "decode_tokens_per_s": speed["decode_tokens_per_s"],
        "decode_tokens_per_s_batch8": speed["batch8"]["decode_tokens_per_s"],
        "prompt_tokens_per_s": speed["prompt_tokens_per_s"], "time_to_first_token_s": speed["time_to_first_token_s"],
    }


def quickstart_command(
    windows: int = typer.Option(4, help="wikitext2 windows of 2048 tokens to score"),
    questions: int = typer.Option(200, help="ARC-Easy questions to score"),
    out: str = typer.Option("quickstart", "-o", "--out", help="folder for the JSON results"),
) -> None:
    """Pull SmolLM2-135M, evaluate it (wikitext2 slice, ARC-Easy slice, speed) and print one table."""
    started = time.perf_counter()
    out_dir = Path(out)
    config = {"model": MODEL, "windows": windows, "questions": questions}
    with record_run("quickstart", config=config) as run:
        folder = pull(MODEL, progress=console.print)
        grid = (read_metadata(folder).get("source_quantization") or {}).get("weight_grid_description")
        if grid:
            console.print(f"[dim]source weights: {grid}; int4 asymmetric g32 would reproduce them exactly[/]")
        with console.status(f"loading {MODEL}"):
            model, tokenizer = load_model(folder)
        rows = {"fp32": {**evaluate_model(model, tokenizer, windows=windows, questions=questions),
                         "disk_bytes": disk_bytes(folder)}}
        run.log_metrics({f"{name}.{k}": v for name, metrics in rows.items() for k, v in metrics.items()})
        print_table(
            f"lmforge quickstart · {MODEL} · wikitext2 windows protocol (seqlen 2048, first {windows} windows), "
            f"ARC-Easy first {questions} questions",
            ["model", "wikitext2 ppl", "ARC-Easy acc", "acc_norm", "disk", "model RAM", "decode tok/s (b1)",
             "decode tok/s (b8)", "prompt tok/s"],
            [(name, m["wikitext2_ppl"], m["arc_easy_acc"], m["arc_easy_acc_norm"], human_bytes(m.get("disk_bytes")),
              human_bytes(m["model_bytes"]), m["decode_tokens_per_s"], m["decode_tokens_per_s_batch8"],
              m["prompt_tokens_per_s"]) for name, m in rows.items()],
        )
        save_json(out_dir / "quickstart.json", {"run_id": run.id, "results": rows,
                                                "seconds": time.perf_counter() - started})
    console.print(f"done in {time.perf_counter() - started:.0f} s; run {run.id} recorded (`lmforge runs show {run.id}`)")

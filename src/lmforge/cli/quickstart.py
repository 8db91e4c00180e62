"""`lmforge quickstart`: the whole tour on SmolLM2-135M in one command.

pull → compress (GPTQ int4 g64, with before/after evaluation) → prune (50 % Wanda)
and evaluate it → bias audit of the base model against the int4 one → report.html.
Each step is the same command a user would type, so each records its own run and
the report is built from those records.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from lmforge.cli.common import Text, check_outputs, console, human_bytes, overwrite_option, print_table, save_json
from lmforge.io import atomic_path
from lmforge.models import ZOO, available_zoo_name, pull, read_metadata
from lmforge.runs import RunStore

MODEL = "smollm2-135m"  # the base model; offline, its zoo entry names the Instruct Q4_1 GGUF instead


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)


def _step(title: str, args: list[str]) -> Any:
    """Run one lmforge command in-process, exactly as typed on the command line; returns what the command returns."""
    from lmforge.cli.main import app

    console.rule(Text.assemble((title, "bold"), "  ", (f"lmforge {' '.join(args)}", "dim")))
    return app(args=args, standalone_mode=False)


def quickstart_card(model: str) -> str:
    """What is known of the zoo model the tour really used; intended use etc. stay "missing" in the report."""
    entry = ZOO[model]
    return (f"model_name: {entry.weights.split('/')[-1]} ({entry.precision}), GPTQ int4 g64 and Wanda 50 % "
            f"(lmforge quickstart, zoo name {model})\nbase_model: {entry.weights}\nlicense: {entry.license}\nlanguage: [en]\n")


def quickstart_command(
    out: str = typer.Option("quickstart", "-o", "--out", help="folder for models, JSON results and the report"),
    windows: int = typer.Option(4, help="wikitext2 windows of 2048 tokens scored per model"),
    questions: int = typer.Option(100, help="ARC-Easy questions scored per model"),
    calib_samples: int = typer.Option(16, help="calibration samples of 2048 tokens (GPTQ and Wanda)"),
    audit_pairs: int = typer.Option(150, help="CrowS-Pairs pairs scored per model in the bias audit"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Pull SmolLM2-135M, compress it (GPTQ int4 g64, 50 % Wanda), evaluate, audit bias, write report.html."""
    started, started_epoch = time.perf_counter(), time.time()
    out_dir = Path(out)
    int4_dir, wanda_dir = out_dir / "smollm2-gptq-int4-g64", out_dir / "smollm2-wanda50"
    common_eval = ["--eval-windows", str(windows), "--arc-limit", str(questions), "--speed-tokens", "64"]
    replace = ["--overwrite"] if overwrite else []
    for target in (int4_dir, wanda_dir):  # a rerun into the same folder: fail now, not after the first step
        check_outputs(target, "model", overwrite)

    model = available_zoo_name(MODEL)
    if model != MODEL:
        console.print(f"note: the hub is unreachable, so this tour uses {model} ({ZOO[model].weights}, "
                      f"{ZOO[model].precision}) instead of {MODEL}")
    folder = pull(model, progress=console.print)
    grid = (read_metadata(folder).get("source_quantization") or {}).get("weight_grid_description")
    if grid:
        console.print(f"source weights: {grid}; symmetric int4 g64 is a real test of a method, "
                      "asymmetric g32 would reproduce them exactly", style="dim")
    compressed = _step("1/5 quantize: GPTQ int4, groups of 64, symmetric", [
        "compress", model, "--method", "gptq", "--bits", "4", "--group-size", "64", "--calib", "web_articles",
        "--calib-samples", str(calib_samples), "-o", str(int4_dir), *common_eval, *replace])
    _step("2/5 prune: Wanda, 50 % of every row", [
        "prune", model, "--method", "wanda", "--sparsity", "0.5", "--samples", str(calib_samples), "-o", str(wanda_dir), *replace])
    wanda = _step("3/5 evaluate the pruned model", [
        "eval", str(wanda_dir), "--task", "wikitext2,speed", "--limit", str(windows)])
    wanda |= _step("3/5 evaluate the pruned model (ARC-Easy)", [
        "eval", str(wanda_dir), "--task", "arc_easy", "--limit", str(questions), "--batch-size", "8"])
    audit = _step("4/5 bias audit: base vs int4 (CrowS-Pairs)", [
        "audit", model, "--suite", "bias", "--compare", str(int4_dir), "--limit", str(audit_pairs)])

    rows = {
        "fp32": _row(compressed["baseline"]),
        "GPTQ int4 g64 (symmetric)": _row(compressed["quantized"]),
        "Wanda 50 % (unstructured)": {
            "wikitext2_ppl": wanda["wikitext2"]["ppl"], "arc_easy_acc": wanda["arc_easy"]["acc"],
            "model_ram_bytes": wanda["speed"]["model_bytes"], "decode_tokens_per_s": wanda["speed"]["decode_tokens_per_s"]},
    }
    print_table(
        f"lmforge quickstart · {model} · wikitext2 windows protocol (seqlen 2048, first {windows} windows) · "
        f"ARC-Easy first {questions} questions · decode at batch 1",
        ["model", "wikitext2 ppl", "ARC-Easy acc", "model RAM", "decode tok/s"],
        [(name, r["wikitext2_ppl"], r["arc_easy_acc"], human_bytes(r["model_ram_bytes"]), r["decode_tokens_per_s"])
         for name, r in rows.items()],
    )
    this_tour = [f"--runs={r.id}" for r in RunStore().list(limit=None) if r.started >= started_epoch]
    card = out_dir / "card.yaml"  # only what is known of the base model; intended use etc. stay "missing"
    with atomic_path(card) as tmp:
        tmp.write_text(quickstart_card(model))
    _step("5/5 report", ["report", "-o", str(out_dir / "report" / "report.html"), "--card", str(card), *this_tour])
    seconds = time.perf_counter() - started
    save_json(out_dir / "quickstart.json", {"results": rows, "audit": audit["report"], "seconds": seconds})
    console.print(f"quickstart finished in {seconds / 60:.1f} min; open {out_dir / 'report' / 'report.html'}")


def _row(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics.get(key) for key in ("wikitext2_ppl", "arc_easy_acc", "model_ram_bytes", "decode_tokens_per_s")}

"""`lmforge export MODEL --gguf Q4_K_M -o model.gguf [--method gptq]`: one GGUF file for llama.cpp and Ollama."""

from __future__ import annotations

from collections import Counter

import typer

from lmforge.cli.common import check_at_least, check_output_file, console, human_bytes, overwrite_option, print_table, progress_bar
from lmforge.compress.export.gguf_recipes import RECIPES
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, lmforge quantized folder, .gguf file or hub id"),
    gguf: str = typer.Option(None, "--gguf", help=f"GGUF type: {', '.join(RECIPES)}; omit to keep a quantized "
                                                  "model's own type (F32 for a full-precision one)"),
    out: str = typer.Option(..., "-o", "--out", help="the .gguf file to write"),
    method: str = typer.Option("rtn", help="rtn | gptq: GPTQ onto the type's own block grids (full-precision models)"),
    calib: str = typer.Option("web_articles", help="calibration corpus for --method gptq: a named data set or a path"),
    calib_samples: int = typer.Option(128, help="calibration samples"),
    seqlen: int = typer.Option(2048, help="tokens per calibration sample"),
    seed: int = typer.Option(0, help="calibration sampling seed"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Write a model as one GGUF file (weights, tokenizer and chat template) that llama.cpp and Ollama run."""
    from lmforge.workflows.export import export_to_gguf

    check_at_least(1, calib_samples=calib_samples, seqlen=seqlen)
    check_output_file(out, overwrite, inputs=[model])
    settings = {"model": model, "gguf": gguf, "method": method, "calib": calib, "calib_samples": calib_samples,
                "seqlen": seqlen, "seed": seed}
    with record_run("export", config=settings, inputs={"model": model}) as run:
        with progress_bar("calibrating layers", None) as advance:
            written = export_to_gguf(model, out, gguf, method=method, calib=calib, calib_samples=calib_samples,
                                     seqlen=seqlen, seed=seed, progress=advance)
        run.add_artifact("gguf", written.path)
        run.log_metrics({"file_bytes": written.path.stat().st_size, "fallbacks": len(written.fallbacks)})
    counts = Counter(written.types.values())
    print_table(f"{written.path.name}: tensors by GGML type", ["type", "tensors"], sorted(counts.items()))
    if written.fallbacks:
        reasons = Counter(why.split(" (")[0] for why in written.fallbacks.values())
        console.print("fallbacks (row length not a multiple of the type's block, as llama.cpp's quantizer does): "
                      + ", ".join(f"{why} × {n}" for why, n in reasons.items()))
    console.print(f"wrote {written.path} ({human_bytes(written.path.stat().st_size)}); run {run.id} recorded")

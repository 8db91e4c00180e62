"""`lmforge prune MODEL -o OUT --method wanda|sparsegpt|magnitude|structured`: a sparse or smaller model."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import (check_at_least, check_fraction, check_outputs, device_option, dtype_option, human_bytes,
                                overwrite_option, print_table, progress_bar, record_precision, save_json)
from lmforge.compress.defaults import SINK_SHARE
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


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
    seqlen: int = typer.Option(None, help="calibration sample length in tokens (default 2048, or the model's context)"),
    sink_share: float = typer.Option(SINK_SHARE, help="sparsegpt and the structured refit: least share of the Hessian held by "
                                               "each sequence's first token (the attention sink); 0 = the unweighted Hessian"),
    quantize_bits: int = typer.Option(None, "--quantize-bits", help="then quantize the survivors (RTN, symmetric), e.g. 4"),
    group_size: int = typer.Option(64, help="group size for --quantize-bits"),
    json_out: Path = typer.Option(None, "--json", help="also write the summary as JSON"),
    overwrite: bool = overwrite_option(),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Prune a model (unstructured, N:M or structured) and save it; sparse weights are stored as bitmask + values."""
    from lmforge.compress import config_from_dict
    from lmforge.models import fit_seqlen, load_model, model_input
    from lmforge.workflows.prune import calibration, prune_model, save_compressed

    check_fraction("--sparsity", sparsity)
    check_fraction("--heads", heads)
    check_fraction("--mlp", mlp)
    check_at_least(1, samples=samples, seqlen=seqlen, group_size=group_size, quantize_bits=quantize_bits)
    check_outputs(out, "model", overwrite, files=[json_out], inputs=[model])
    seqlen = fit_seqlen(model, seqlen)
    extra = {"sink_share": sink_share} if method in {"sparsegpt", "structured"} else {}
    settings = {"method": method, "sparsity": sparsity, "pattern": pattern, "heads": heads, "mlp": mlp,
                "reconstruct": reconstruct, "calib": calib,
                "samples": samples, "seqlen": seqlen, "quantize_bits": quantize_bits, "group_size": group_size, "dtype": dtype, "device": device, **extra}
    if method == "structured":
        config = config_from_dict({"method": method, "head_fraction": heads, "mlp_fraction": mlp,
                                   "reconstruct": reconstruct, **extra})
    else:
        config = config_from_dict({"method": method, "sparsity": sparsity, "pattern": pattern, **extra})
    with record_run("prune", config=settings, inputs={"model": model_input(model)}) as run:
        loaded, tokenizer = load_model(model, dtype=dtype, device=device)
        record_precision(run, loaded)
        calib_tokens = calibration(tokenizer, calib, samples, seqlen) if config.needs_calibration else None
        with progress_bar(f"pruning ({method})", total=loaded.config.num_hidden_layers) as advance:
            summary = prune_model(loaded, config, calib_tokens, quantize_bits=quantize_bits, group_size=group_size,
                                  progress=advance)
        storage = save_compressed(loaded, tokenizer, out, {"pruning": {**settings, "source": model}},
                                  sparse=method != "structured")
        if storage:
            summary["storage"] = storage
        run.add_artifact("model", out)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        run.log_metrics(metrics)
    rows = [(k, v) for k, v in metrics.items()]
    if storage:
        rows += [("dense bytes", human_bytes(storage["dense_bytes"])), ("stored bytes", human_bytes(storage["stored_bytes"]))]
    print_table(f"prune {model} → {out}", ["field", "value"], rows)
    save_json(json_out, summary)

"""`lmforge compress MODEL --method gptq --bits 4 --group-size 64 -o OUT`: quantize and compare with the original."""

from __future__ import annotations

from typing import Any

import typer

from lmforge.cli.common import (check_at_least, check_output_file, check_outputs, console, device_option, dtype_option, human_bytes, overwrite_option,
                                print_table, progress_bar, save_json)
from lmforge.compress.quantization.config import METHODS, SINK_SHARE
from lmforge.errors import LmforgeError
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_command)


def comparison_rows(result: dict[str, Any]) -> list[tuple]:
    """Table rows (metric, original, quantized) of a ``compress_and_compare`` result."""
    base, quant = result["baseline"], result["quantized"]
    rows = []
    for key, label in (("wikitext2_ppl", "wikitext2 perplexity"), ("arc_easy_acc", "ARC-Easy acc"),
                       ("decode_tokens_per_s", "decode tokens/s (batch 1)")):
        if key in quant:
            rows.append((label, base.get(key), quant.get(key)))
    rows.append(("size on disk", human_bytes(base.get("disk_bytes")), human_bytes(quant.get("disk_bytes"))))
    rows.append(("model RAM", human_bytes(base["model_ram_bytes"]), human_bytes(quant["model_ram_bytes"])))
    rows.append(("RAM of quantized layers", human_bytes(quant["quantized_layers_fp32_bytes"]),
                 human_bytes(quant["quantized_layers_bytes"])))
    rows.append(("compression time (s)", "-", quant["compress_seconds"]))
    rows.append(("peak RSS while quantizing", "-", human_bytes(quant["peak_rss_bytes"])))
    return rows


def compress_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    method: str = typer.Option("gptq", help=f"{' | '.join(METHODS)}"),
    bits: int = typer.Option(4, help="8, 4, 3 (2 for research)"),
    group_size: int = typer.Option(64, help="input columns per scale/zero; 0 = one per output channel"),
    symmetric: bool = typer.Option(True, "--symmetric/--asymmetric", help="grid centred on zero, or min/max per group"),
    act_order: bool = typer.Option(False, help="GPTQ: quantize columns by decreasing Hessian diagonal (static groups)"),
    lm_head_bits: int = typer.Option(None, help="also quantize the output head (RTN; 8 = per channel), untied from "
                                     "the embeddings, which stay in full precision; the largest read of a decoded token"),
    share_embeddings: bool = typer.Option(False, help="with --lm-head-bits on a tied model: the embeddings read the quantized "
                                          "head's rows, one table for both (not exportable to GGUF/compressed-tensors)"),
    true_sequential: bool = typer.Option(False, help="GPTQ: re-measure inputs after each group of a layer's linears "
                                         "(about 1.5 × the time)"),
    sink_share: float = typer.Option(SINK_SHARE, help="GPTQ: least share of the Hessian held by each sequence's first token "
                                               "(the attention sink); 0 = the paper's unweighted Hessian"),
    skip: list[str] = typer.Option(["lm_head", "*embed*"], help="module name patterns kept in full precision (repeatable)"),
    skip_bad_groups: bool = typer.Option(False, help="keep layers whose width the group size does not divide, instead of failing"),
    calib: str = typer.Option("web_articles", help="calibration corpus: a named data set or a path"),
    calib_samples: int = typer.Option(128, help="calibration samples"),
    seqlen: int = typer.Option(None, help="tokens per calibration sample and perplexity window (default 2048, or the model's context)"),
    seed: int = typer.Option(0, help="calibration sampling seed"),
    out: str = typer.Option(None, "-o", "--out", help="folder for the quantized model (default: the run's artifacts)"),
    eval_windows: int = typer.Option(8, help="wikitext2 windows to score before and after (0: skip)"),
    arc_limit: int = typer.Option(200, help="ARC-Easy questions to score (0: skip)"),
    speed_tokens: int = typer.Option(64, help="tokens to decode for the speed row (0: skip)"),
    threads: int = typer.Option(2, help="CPU threads for evaluation and decoding"),
    compressed_tensors: str = typer.Option(None, "--compressed-tensors",
                                           help="also export to this folder in compressed-tensors format (transformers, vLLM)"),
    gguf: str = typer.Option(None, "--gguf", help="also export to this .gguf file for llama.cpp (int4 or int8, group size a multiple of 32; other GGUF types: lmforge export)"),
    json_out: str = typer.Option(None, "--json", help="also write the comparison as JSON"),
    overwrite: bool = overwrite_option(),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> dict[str, Any]:
    """Quantize a model (RTN, GPTQ or activation-aware), save it packed, and print before/after."""
    from lmforge.workflows.compress import compress_and_compare
    from lmforge.compress.export.compressed_tensors import export_compressed_tensors
    from lmforge.compress.export.gguf import export_gguf, ggml_type
    from lmforge.models import fit_seqlen, load_model, model_input

    if method not in METHODS:
        raise LmforgeError(f"unknown method '{method}'; use one of: {', '.join(METHODS)}")
    check_at_least(1, calib_samples=calib_samples, seqlen=seqlen, threads=threads)
    check_at_least(0, group_size=group_size, eval_windows=eval_windows, arc_limit=arc_limit, speed_tokens=speed_tokens)
    seqlen = fit_seqlen(model, seqlen)
    check_outputs(out, "model", overwrite, files=[json_out], inputs=[model])
    if gguf:  # fail before quantizing, not after
        ggml_type(bits, group_size or None, symmetric, "--gguf")
        check_output_file(gguf, overwrite, inputs=[model])
    check_outputs(compressed_tensors, "model", overwrite, inputs=[model])
    options: dict[str, Any] = {"bits": bits, "group_size": group_size or None, "symmetric": symmetric,
                               "skip": tuple(skip), "skip_bad_groups": skip_bad_groups, "lm_head_bits": lm_head_bits,
                               "share_embeddings": share_embeddings}
    if method == "gptq":
        options.update(act_order=act_order, sink_share=sink_share, true_sequential=true_sequential)
    config = METHODS[method](**options)
    if share_embeddings and (gguf or compressed_tensors):
        raise LmforgeError("--share-embeddings cannot be exported (--gguf, --compressed-tensors): drop one or the other")
    settings = {"model": model, **config.to_dict(), "calib": calib, "calib_samples": calib_samples, "seqlen": seqlen,
                "seed": seed, "eval_windows": eval_windows, "arc_limit": arc_limit, "dtype": dtype, "device": device}
    with record_run("compress", config=settings, inputs={"model": model_input(model)}) as run:
        out_dir = out or run.artifacts_dir / "model"
        with progress_bar("quantizing layers", None) as advance:
            result = compress_and_compare(
                model, config, calib=calib, calib_samples=calib_samples, seqlen=seqlen, seed=seed, out_dir=out_dir,
                eval_windows=eval_windows or None, arc_limit=arc_limit or None, speed_tokens=speed_tokens,
                threads=threads, progress=advance, say=lambda text: console.print(text, style="dim"), dtype=dtype, device=device,
            )
        typed = result.pop("result")
        if compressed_tensors:
            export_compressed_tensors(*load_model(out_dir), compressed_tensors)
            typed.exports["compressed_tensors"] = str(compressed_tensors)
        if gguf:
            export_gguf(*load_model(out_dir), gguf)
            typed.exports["gguf"] = str(gguf)
        run.log_result(typed)
        run.add_artifact("model", out_dir)
        run.log_metrics({f"model.{k}": v for k, v in result["precision"].items()})
    regime = f"{method} int{bits} {'g' + str(group_size) if group_size else 'per-channel'} {'symmetric' if symmetric else 'asymmetric'}"
    print_table(f"{model}: original vs {regime}", ["metric", "original", "quantized"], comparison_rows(result))
    skipped = result["report"]["skipped"]
    if skipped:
        console.print(f"kept in full precision: {', '.join(f'{n} ({why})' for n, why in skipped.items())}; embeddings are never quantized")
    if grid := (result.get("source_quantization") or {}).get("weight_grid_description"):
        console.print(f"note: the source weights were already quantized ({grid}); re-quantizing on that grid is exact, "
                      "so compare methods in other regimes (e.g. symmetric int4 g64)")
    save_json(json_out, {"run_id": run.id, **result})
    console.print(f"saved to {out_dir}; run {run.id} recorded")
    return result

"""Quantize a model and measure it beside the original: the function behind ``lmforge compress``.

Rows: wikitext2 perplexity (windows protocol), ARC-Easy accuracy, size on disk, model RAM
(bytes of parameters and buffers, shared tensors once), decode tokens/s at batch 1, plus
the compression time and peak RSS of the process.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from lmforge.compress.quantization.config import QuantConfig
from lmforge.compress.storage.qlinear import QuantLinear
from lmforge.compress.quantization.driver import is_quantized, plan, quantize
from lmforge.compress.storage.serialize import save_quantized
from lmforge.errors import LmforgeError
from lmforge.runs import CompressionResult, DataRef, ModelRef, canonical_metrics


def model_ram(model) -> int:
    from lmforge.models import tensor_bytes

    return sum(tensor_bytes(model).values())


def quantized_part_ram(model) -> tuple[int, int]:
    """(bytes held by the QuantLinears, bytes the same layers take in float32)."""
    held = full = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            held += sum(t.numel() * t.element_size() for t in module.buffers())
            full += module.in_features * module.out_features * 4 + (module.out_features * 4 if module.bias is not None else 0)
    return held, full


def measure(model, tokenizer, *, eval_windows: int | None = 8, seqlen: int = 2048, arc_limit: int | None = 200,
            speed_tokens: int = 64, threads: int = 2, folder: str | os.PathLike | None = None,
            say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The comparison row of one model; ``None``/0 limits skip that measurement."""
    from lmforge.data import load_corpus
    from lmforge.evaluate import multiple_choice, perplexity, speed
    from lmforge.models.info import disk_bytes

    row: dict[str, Any] = {"model_ram_bytes": model_ram(model), "disk_bytes": disk_bytes(folder)}
    torch.set_num_threads(threads)
    if eval_windows:
        say(f"wikitext2 perplexity, {eval_windows} windows of {seqlen}")
        result = perplexity(model, tokenizer, load_corpus("wikitext2"), protocol="windows", seqlen=seqlen, limit=eval_windows)
        row.update(wikitext2_ppl=result.ppl, wikitext2_tokens=result.tokens)
    if arc_limit:
        say(f"ARC-Easy, {arc_limit} questions")
        row["arc_easy_acc"] = multiple_choice(model, tokenizer, "arc_easy", limit=arc_limit)["acc"]
    if speed_tokens:
        say("decode speed, batch 1")
        timing = speed(model, tokenizer, new_tokens=speed_tokens, batch_sizes=(1,), repeats=2, threads=threads)
        row["decode_tokens_per_s"] = timing["decode_tokens_per_s"]
    return row


def check_group_size(model_source: str, config: QuantConfig) -> None:
    """Before the model loads: the group size divides the widths config.json gives (the layers' input widths)."""
    from lmforge.models.loading import source_config

    shape = source_config(model_source) or {}
    if not config.group_size or config.skip_bad_groups:
        return
    for field in ("hidden_size", "intermediate_size"):
        width = shape.get(field)
        if isinstance(width, int) and width % config.group_size:
            divisors = [g for g in (32, 64, 128, 256) if width % g == 0]
            raise LmforgeError(f"group size {config.group_size} does not divide the model's {field} {width}; pass --group-size "
                               f"{' or '.join(map(str, divisors)) or '0 (one per channel)'}, or --skip-bad-groups")


def compress_and_compare(
    model_source: str,
    config: QuantConfig,
    *,
    calib: str = "web_articles",
    calib_samples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    eval_windows: int | None = 8,
    arc_limit: int | None = 200,
    speed_tokens: int = 64,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
    dtype: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Load ``model_source`` (in ``dtype``, on ``device``: see ``load_model``), measure it, quantize it with ``config``, save it to ``out_dir``, measure again.

    Returns ``{"baseline": row, "quantized": row, "report": QuantReport dict, "out_dir": str, "result":
    CompressionResult}``: the rows for tables and JSON, the typed result for the run store.
    """
    from lmforge.data import calibration_batches, load_corpus
    from lmforge.evaluate import peak_rss_bytes, reset_peak_rss
    from lmforge.models import load_model, precision, read_metadata, resolve_source

    check_group_size(model_source, config)
    model, tokenizer = load_model(model_source, dtype=dtype, device=device)
    kind, where = resolve_source(model_source)
    source_folder = None
    if kind == "zoo":
        from lmforge.models import zoo_path

        source_folder = zoo_path(model_source)
    elif kind in {"folder", "gguf"}:
        source_folder = where
    # fail on bad input before spending minutes on the baseline
    if is_quantized(model):
        raise LmforgeError(f"{model_source} is already quantized; compress the full-precision model instead")
    plan(model, config)
    calibration, calib_ref = None, None
    if config.needs_calibration:
        corpus = load_corpus(calib)
        calibration = calibration_batches(tokenizer, corpus, calib_samples, seqlen, seed)
        calib_ref = DataRef.describe(corpus.source) if corpus.source else DataRef(name=str(calib))
    measure_args = dict(eval_windows=eval_windows, seqlen=seqlen, arc_limit=arc_limit, speed_tokens=speed_tokens,
                        threads=threads, say=say)
    baseline = measure(model, tokenizer, folder=source_folder, **measure_args)
    base_ref = ModelRef.describe(model, model_source, source_folder)  # before quantizing: it works in place

    say(f"quantizing with {config.method} ({config.bits}-bit, group {config.group_size or 'per-channel'}, "
        f"{'symmetric' if config.symmetric else 'asymmetric'})")
    reset_peak_rss()  # the peak of quantizing, not of the baseline evaluation before it
    start = time.perf_counter()
    report = quantize(model, config, calibration, progress=progress)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    source_meta = read_metadata(source_folder) if kind in {"zoo", "folder"} else {}
    if out_dir is not None:
        save_quantized(model, tokenizer, out_dir, report.to_dict(),
                       {"source": str(model_source), "source_quantization": source_meta.get("source_quantization")})
    quantized = measure(model, tokenizer, folder=out_dir, **measure_args)
    held, full = quantized_part_ram(model)
    quantized.update(compress_seconds=seconds, peak_rss_bytes=peak, quantized_layers_bytes=held,
                     quantized_layers_fp32_bytes=full)
    cost = {"compress_seconds": seconds, "peak_rss_bytes": peak}
    result = CompressionResult(
        base=base_ref, output=ModelRef.describe(model, str(out_dir) if out_dir else "(not saved)", out_dir),
        recipe=config.to_dict(), base_metrics=canonical_metrics(baseline),
        output_metrics=canonical_metrics({k: v for k, v in quantized.items() if k not in cost}), cost=cost,
        details={"skipped": report.to_dict()["skipped"], "quantized_layers_bytes": held,
                 "quantized_layers_fp32_bytes": full},
        calibration=calib_ref)
    return {"baseline": baseline, "quantized": quantized, "report": report.to_dict(), "precision": precision(model),
            "out_dir": str(out_dir) if out_dir else None,
            "source_quantization": source_meta.get("source_quantization"), "result": result}

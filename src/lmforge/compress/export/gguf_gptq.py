"""GPTQ straight onto GGML's block grids: each decoder linear is quantized into the type its GGUF recipe gives it
(Q4_K with its sub-block scales and mins, Q6_K, Q5_0, ...), layer by layer as ``quantize`` does, so the codes
llama.cpp reads are the error-feedback ones, not a rounding of weights quantized on another grid."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from lmforge.compress.export.gguf_quants import BlockFormat
from lmforge.compress.quantization.config import GPTQ
from lmforge.compress.quantization.gptq import gptq_on
from lmforge.compress.sequential import decoder_layers, hessians_by_group, layerwise


def gptq_block_codes(model, calibration: torch.Tensor, formats: dict[str, BlockFormat], *,
                     settings: GPTQ = GPTQ(), progress: Callable[[int], None] | None = None) -> dict[str, tuple]:
    """``formats``: linear module name -> its block format. Returns name -> ``(codes, grid)``.

    Runs on a copy of ``model``: each quantized linear's weight there is replaced by what llama.cpp will
    decode, so later layers are calibrated on the outputs of the quantized ones.
    """
    model = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = [names[id(layer)] for layer in decoder_layers(model)]
    results: dict[str, tuple] = {}

    def process_layer(index: int, layer, inputs) -> None:
        for name, full, hessian in hessians_by_group(layer, prefixes[index], inputs, formats,
                                                     settings.true_sequential, settings.sink_share):
            linear, fmt = layer.get_submodule(name), formats[full]
            codes, grid = gptq_on(linear.weight, hessian, fmt, settings.act_order, damp=settings.damp,
                                  block_size=settings.block_size, name=full)
            linear.weight.copy_(fmt.decode(codes, grid).to(linear.weight.dtype))
            results[full] = (codes, grid)

    with torch.no_grad():
        layerwise(model, calibration, process_layer, batch_size=1, progress=progress)
    return results

"""``prune(model, config, calibration)``: magnitude, Wanda or SparseGPT over a whole model, layer by layer.

Every linear (``nn.Linear``, GPT-2's ``Conv1D``) inside the decoder layers is pruned in place (zeros written into
the dense weight); embeddings and ``lm_head`` are left alone, as in the papers.
Wanda and SparseGPT see each layer's inputs as produced by the already-pruned layers
before it (``compress.sequential``), so errors do not compound unnoticed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from lmforge.compress.pruning.config import Magnitude, PruneConfig, SparseGPT, Wanda
from lmforge.compress.pruning.magnitude import magnitude_mask
from lmforge.compress.pruning.masks import sparsity_of
from lmforge.compress.sequential import LayerInputs, decoder_layers, layerwise, linear_input_stats
from lmforge.compress.pruning.sparsegpt import sparsegpt_prune
from lmforge.compress.pruning.wanda import wanda_mask
from lmforge.errors import LmforgeError
from lmforge.models.linears import is_linear, linear_weight


@dataclass
class PruneResult:
    """What ``prune`` did: per-linear sparsity, the overall sparsity of the decoder linears, the time."""

    config: dict[str, Any]
    linears: dict[str, float]
    sparsity: float
    pruned_parameters: int
    seconds: float
    calibration_shape: tuple[int, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sparsegpt(weight: torch.Tensor, config: SparseGPT, sparsity: float, stats) -> None:
    weight.copy_(sparsegpt_prune(weight, stats.sink_weighted_hessian(config.sink_share), sparsity, config.nm,
                                 config.block_size, config.damp))


def _wanda(weight: torch.Tensor, config: Wanda, sparsity: float, stats) -> None:
    weight.mul_(wanda_mask(weight, stats.sq_norm, sparsity, config.nm).to(weight.dtype))


def _magnitude(weight: torch.Tensor, config: Magnitude, sparsity: float, stats) -> None:
    weight.mul_(magnitude_mask(weight, sparsity, config.nm).to(weight.dtype))


# How each config type prunes one linear's weight ([out, in]; for GPT-2's Conv1D a view of its transposed
# weight) in place, given that linear's input statistics: ``prune``
# dispatches on the config's type through this table (a new method is a config class and one entry here).
PRUNE_LINEAR: dict[type, Callable[..., None]] = {Magnitude: _magnitude, Wanda: _wanda, SparseGPT: _sparsegpt}


@torch.no_grad()
def prune(
    model: nn.Module,
    config: PruneConfig,
    calibration: torch.Tensor | None = None,
    *,
    batch_size: int = 1,  # calibration sequences per forward: 1 keeps the peak low, same speed at seqlen 2048
    progress: Callable[[int], None] | None = None,
) -> PruneResult:
    """Prune ``model``'s decoder linears in place; ``calibration`` is ``[n_samples, seqlen]`` token ids.

    Magnitude pruning ignores ``calibration``; Wanda and SparseGPT require it.
    """
    if type(config) not in PRUNE_LINEAR:
        raise LmforgeError(f"prune() takes {', '.join(t.__name__ for t in PRUNE_LINEAR)}, not {type(config).__name__} "
                           "(structured pruning: structured_prune)")
    layers = decoder_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    started = time.perf_counter()
    done: dict[str, float] = {}

    def process(index: int, layer: nn.Module, inputs: LayerInputs | None) -> None:
        modules = dict(layer.named_modules())
        wanted = {n: config.sparsity_for(f"{prefix}.{index}.{n}") for n, m in modules.items() if is_linear(m)}
        chosen = {name: sparsity for name, sparsity in wanted.items() if sparsity}
        # As in the reference implementations, all linears of a layer are measured before any is pruned.
        stats = (
            linear_input_stats(layer, inputs, list(chosen), hessian=config.needs_hessian)
            if inputs is not None and chosen else {}
        )
        for name, sparsity in chosen.items():
            PRUNE_LINEAR[type(config)](linear_weight(modules[name]), config, sparsity, stats.get(name))
            done[f"{prefix}.{index}.{name}"] = sparsity_of(linear_weight(modules[name]))

    if not config.needs_calibration:
        for index, layer in enumerate(layers):
            process(index, layer, None)
            if progress:
                progress(1)
    else:
        if calibration is None:
            raise LmforgeError(f"{config.method} pruning needs calibration data: pass calibration_batches(tokenizer, corpus, n, seqlen)")
        layerwise(model, calibration, process, batch_size=batch_size, progress=progress)

    linears = [m for layer in layers for m in layer.modules() if is_linear(m)]
    total = sum(m.weight.numel() for m in linears)
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    if not done or not zeros:  # a prune that touched nothing must not look like success
        found = f"{len(linears)} linear layers, none selected by the config" if linears else \
            f"no linear layers lmforge recognises in {type(model).__name__}'s decoder layers"
        raise LmforgeError(f"pruning removed nothing ({found}); check --sparsity and the model")
    return PruneResult(
        config=config.to_dict(),
        linears=done,
        sparsity=zeros / max(total, 1),
        pruned_parameters=zeros,
        seconds=time.perf_counter() - started,
        calibration_shape=tuple(calibration.shape) if calibration is not None and config.needs_calibration else None,
    )


@torch.no_grad()
def prune_then_quantize(
    model: nn.Module,
    prune_config: PruneConfig,
    quant_config,
    calibration: torch.Tensor | None = None,
    *,
    batch_size: int = 1,  # calibration sequences per forward: 1 keeps the peak low, same speed at seqlen 2048
) -> dict[str, Any]:
    """Prune first, then quantize the surviving weights (``compress.quantize``) with pruned zeros kept exact.

    On any grid (symmetric or not) code = zero point decodes to exactly 0. RTN maps a 0 weight
    to it already; GPTQ/AWQ move pruned weights while compensating errors, so their codes at
    pruned positions are set back to the zero point (``resnapped`` counts them).
    """
    from lmforge.compress.storage.packing import pack
    from lmforge.compress.storage.qlinear import QuantLinear
    from lmforge.compress.quantization.driver import quantize

    pruned = prune(model, prune_config, calibration, batch_size=batch_size)
    masks = {name: module.weight != 0 for name, module in model.named_modules() if name in pruned.linears}
    report = quantize(model, quant_config, calibration, batch_size=batch_size)
    resnapped = 0
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) and name in masks:
            codes = module.codes()
            zero = module.zeros.repeat_interleave(module.group_size, dim=1)
            moved = ~masks[name] & (codes != zero)
            resnapped += int(moved.sum())
            module.qweight.copy_(pack(torch.where(masks[name], codes, zero), module.bits))
    return {"prune": pruned.to_dict(), "quantize": report.to_dict(),
            "resnapped_codes": resnapped}

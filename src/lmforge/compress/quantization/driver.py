"""``quantize(model, config, calibration)``: swap a model's linears for packed ``QuantLinear``s, in place.

RTN needs no data. GPTQ and AWQ go layer by layer (``compress.sequential``): each decoder
layer is quantized from the inputs produced by the already-quantized layers before it, so
peak memory is the model plus one layer's calibration activations. Linears outside the
decoder layers that are not skipped (e.g. an ``lm_head`` the user asked for) use RTN.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from lmforge.compress.quantization.awq import search_scales
from lmforge.compress.quantization.config import AWQ, GPTQ, QuantConfig
from lmforge.compress.quantization.gptq import gptq
from lmforge.compress.storage.pages import release_file_pages
from lmforge.compress.storage.qlinear import QuantEmbedding, QuantLinear
from lmforge.compress.quantization.rtn import rtn
from lmforge.compress.sequential import (LayerInputs, decoder_layers, hessians_by_group, layerwise, linear_groups,
                                         linear_input_stats)
from lmforge.errors import LmforgeError
from lmforge.models.linears import is_linear, linear_features, linear_weight

_GROUP_SIZES = (8, 16, 32, 64, 128, 256, 512)


@dataclass
class QuantReport:
    """What ``quantize`` did: per quantized linear its method and settings, per kept linear the reason."""

    config: dict[str, Any]
    quantized: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    calibration: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, QuantLinear) for module in model.modules())


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(leaf, p) for p in patterns)


def output_head_name(model: nn.Module) -> str | None:
    """Module name of the model's output head (``lm_head`` for most causal LMs), if it is a linear."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return next((name for name, module in model.named_modules() if module is head), None) if isinstance(head, nn.Linear) else None


def plan(model: nn.Module, config: QuantConfig) -> tuple[list[str], dict[str, str]]:
    """Names of the linears to quantize, and the kept ones with the reason (the head of ``lm_head_bits`` aside)."""
    chosen, skipped = [], {}
    head = output_head_name(model) if config.lm_head_bits else None
    for name, module in model.named_modules():
        if not is_linear(module) or name == head:
            continue
        if _matches(name, config.skip):
            skipped[name] = "skip list"
            continue
        width = linear_features(module)[0]
        if config.group_size and width % config.group_size:
            if config.skip_bad_groups:
                skipped[name] = f"group size {config.group_size} does not divide its width {width}"
                continue
            working = [str(g) for g in _GROUP_SIZES if width % g == 0] or ["none"]
            raise LmforgeError(
                f"group size {config.group_size} does not divide the input width {width} of {name}; "
                f"sizes that work: {', '.join(working)}, or per-channel (group_size=None), "
                "or skip such layers (skip_bad_groups=True / --skip-bad-groups)"
            )
        chosen.append(name)
    return chosen, skipped


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of ``name``; the replaced linear's memory-mapped weight pages go back to the system."""
    parent, _, leaf = name.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    replaced = getattr(owner, leaf)
    setattr(owner, leaf, module)
    if is_linear(replaced):
        release_file_pages(replaced.weight)


def _rtn_module(linear: nn.Module, config: QuantConfig) -> QuantLinear:
    codes, scale, zero = rtn(linear_weight(linear), config.bits, config.group_size, config.symmetric)
    return QuantLinear.from_codes(codes, scale, zero, config.bits, linear.bias)


def quantize(
    model: nn.Module,
    config: QuantConfig,
    calibration: torch.Tensor | None = None,
    *,
    batch_size: int = 1,  # calibration sequences per forward: 1 keeps the peak low, same speed at seqlen 2048
    progress: Callable[[int], None] | None = None,
) -> QuantReport:
    """Quantize ``model`` in place with ``config`` (RTN, GPTQ or AWQ); returns a ``QuantReport``.

    ``calibration``: LongTensor ``[n_samples, seqlen]``, e.g. ``lmforge.data.calibration_batches``.
    ``progress(n)`` is called once per decoder layer done.
    """
    if is_quantized(model):
        raise LmforgeError("the model is already quantized; load the full-precision model and quantize that instead")
    if config.needs_calibration and calibration is None:
        raise LmforgeError(
            f"{config.method} needs calibration data: pass calibration=calibration_batches(tokenizer, corpus, n_samples, seqlen)"
        )
    names, skipped = plan(model, config)
    if not names:
        recognised = any(is_linear(m) for layer in decoder_layers(model) for m in layer.modules())
        raise LmforgeError("nothing to quantize: " + ("every linear layer is in the skip list" if recognised else
                           f"no linear layers lmforge recognises in {type(model).__name__}'s decoder layers"))
    head_plan = _head_plan(model, config) if config.lm_head_bits else None  # fail now, not after calibrating every layer
    report = QuantReport(config=config.to_dict(), skipped=skipped)
    if calibration is not None and config.needs_calibration:
        report.calibration = {"samples": int(calibration.shape[0]), "seqlen": int(calibration.shape[1])}
    start = time.perf_counter()
    todo = set(names)
    if (process := CALIBRATED_LAYER.get(type(config))) is not None:
        layer_names = {id(m): n for n, m in model.named_modules()}
        prefixes = [layer_names[id(layer)] for layer in decoder_layers(model)]

        def process_layer(index: int, layer: nn.Module, inputs: LayerInputs) -> None:
            process(layer, prefixes[index], inputs, config, todo, report)

        with torch.no_grad():
            layerwise(model, calibration, process_layer, batch_size=batch_size, progress=progress)
    with torch.no_grad():
        for name in sorted(todo):  # RTN, or linears outside the decoder layers
            _set_module(model, name, _rtn_module(model.get_submodule(name), config))
            report.quantized[name] = {"method": "rtn"}
        if head_plan is not None:
            _quantize_head(model, *head_plan, config, report)
    todo.clear()
    _own_remaining_tensors(model)
    report.seconds = time.perf_counter() - start
    return report


def _head_plan(model: nn.Module, config: QuantConfig) -> tuple[str, int | None]:
    """(module name, group size) of the output head ``lm_head_bits`` asks for; checked before any work is done."""
    name = output_head_name(model)
    if name is None:
        raise LmforgeError(f"lm_head_bits is set, but {type(model).__name__} has no linear output head to quantize")
    group = None if config.lm_head_bits == 8 else config.group_size
    width = model.get_submodule(name).in_features
    if group and width % group:
        raise LmforgeError(f"group size {group} does not divide the output head's width {width}; "
                           "use lm_head_bits=8 (per channel) or another group size")
    if config.share_embeddings and not _head_is_tied(model, name):
        raise LmforgeError("share_embeddings needs an output head tied to the input embeddings, and this model's are separate: "
                           "leave share_embeddings off (the embeddings stay in full precision)")
    return name, group


def _head_is_tied(model: nn.Module, head_name: str) -> bool:
    embeddings = model.get_input_embeddings()
    return isinstance(embeddings, nn.Embedding) and embeddings.weight is model.get_submodule(head_name).weight


def _quantize_head(model: nn.Module, name: str, group: int | None, config: QuantConfig, report: QuantReport) -> None:
    """RTN on the output head at ``lm_head_bits``; a head tied to the embeddings leaves them in full precision,
    or with ``share_embeddings`` replaces them by a lookup into the quantized head."""
    head = model.get_submodule(name)
    codes, scale, zero = rtn(head.weight.detach(), config.lm_head_bits, group, config.symmetric)
    quantized = QuantLinear.from_codes(codes, scale, zero, config.lm_head_bits, head.bias)
    _set_module(model, name, quantized)
    report.quantized[name] = {"method": "rtn", "bits": config.lm_head_bits, "group_size": group}
    report.skipped.pop(name, None)
    if config.share_embeddings:
        embeddings = model.get_input_embeddings()
        embedding_name = next(n for n, m in model.named_modules() if m is embeddings)
        model.set_input_embeddings(QuantEmbedding(quantized, embeddings.padding_idx))
        report.quantized[embedding_name] = {"method": f"shared with {name}"}
        report.skipped.pop(embedding_name, None)


def _own_remaining_tensors(model: nn.Module) -> None:
    """Copy the tensors left in full precision out of the weights file's memory map.

    transformers maps safetensors files into memory; while one tensor of the file is alive
    (the embeddings), the pages of the float weights we replaced stay mapped and counted in
    the process RSS. Owning copies of the remaining tensors lets the whole map go.
    """
    copies: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, QuantLinear):
            continue
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is None or tensor.device.type != "cpu":
                continue
            if tensor.data_ptr() not in copies:  # tied tensors (embeddings = lm_head) are copied once
                copies[tensor.data_ptr()] = tensor.data.clone()
            tensor.data = copies[tensor.data_ptr()]


def _gptq_layer(layer, prefix, inputs, config: GPTQ, todo: set[str], report: QuantReport) -> None:
    for name, full, hessian in hessians_by_group(layer, prefix, inputs, set(todo), config.true_sequential,
                                                 config.sink_share):
        linear = layer.get_submodule(name)
        codes, scale, zero = gptq(linear_weight(linear), hessian, config.bits, config.group_size,
                                  config.symmetric, config.act_order, config.damp, config.block_size, name=full)
        _set_module(layer, name, QuantLinear.from_codes(codes, scale, zero, config.bits, linear.bias))
        todo.discard(full)
        report.quantized[full] = {"method": "gptq"}


def _norm_producers(layer: nn.Module, inputs: LayerInputs, names: list[str]) -> dict[str, nn.Module | None]:
    """For each linear in ``names``, the norm module whose output is its input (None if not a norm)."""
    modules = dict(layer.named_modules())
    outputs: list[tuple[nn.Module, Any]] = []
    consumed: dict[str, Any] = {}
    handles = [m.register_forward_hook(lambda m, a, out: outputs.append((m, out)))
               for n, m in modules.items() if n and "norm" in type(m).__name__.lower()]
    for name in names:
        handles.append(modules[name].register_forward_pre_hook(
            lambda m, a, name=name: consumed.setdefault(name, a[0])))
    try:
        layer(inputs.hidden[0], **inputs.kwargs[0])
    finally:
        for handle in handles:
            handle.remove()
    return {name: next((m for m, out in outputs if out is consumed.get(name)), None) for name in names}


@torch.no_grad()
def _fold_into_norm(norm: nn.Module, s: torch.Tensor, probe: torch.Tensor) -> bool:
    """Make ``norm``'s output ``norm(x) / s``; True if done, checked on ``probe`` (else the norm is left as it was).

    Norms scale by ``w`` (llama, LayerNorm: divide ``w`` and the bias by ``s``) or by ``1 + w``
    (Gemma: ``w ← (1 + w) / s − 1``). Which one a norm class uses is read off its output, not its name.
    """
    weight, bias = norm.weight, getattr(norm, "bias", None)
    original = (weight.detach().clone(), None if bias is None else bias.detach().clone())
    probe = probe.to(weight.dtype)
    wanted = norm(probe).float() / s
    scale = s.to(torch.float32)
    for fold in (lambda w: w / scale, lambda w: (1 + w) / scale - 1):
        weight.copy_(fold(original[0].float()).to(weight.dtype))
        if bias is not None:
            bias.copy_((original[1].float() / scale).to(bias.dtype))
        tolerance = 1e-4 if weight.dtype == torch.float32 else 2e-2
        if torch.allclose(norm(probe).float(), wanted, rtol=tolerance, atol=tolerance * float(wanted.abs().max())):
            return True
    weight.copy_(original[0])
    if bias is not None:
        bias.copy_(original[1])
    return False


def _awq_layer(layer, prefix, inputs, config: AWQ, todo: set[str], report: QuantReport) -> None:
    groups = linear_groups(layer, inputs, true_sequential=True)
    producers = _norm_producers(layer, inputs, [g[0] for g in groups])
    stats = linear_input_stats(layer, inputs, [g[0] for g in groups], hessian=False, sample_tokens=config.sample_tokens)
    for group in groups:
        local = [n for n in group if f"{prefix}.{n}" in todo]
        if not local:
            continue
        linears = [layer.get_submodule(n) for n in local]
        first = stats[group[0]]
        s, alpha, error, rtn_error = search_scales([linear_weight(m) for m in linears], first.samples, first.abs_mean,
                                                   config.bits, config.group_size, config.symmetric, config.grid)
        norm = producers[group[0]]
        # folding 1/s into the norm is exact only if every reader of the norm's output is scaled by s
        fold = norm is not None and len(local) == len(group) and getattr(norm, "weight", None) is not None \
            and norm.weight.shape == s.shape and _fold_into_norm(norm, s, inputs.hidden[0][:1])
        for name, linear in zip(local, linears):
            codes, scale, zero = rtn(linear_weight(linear).float() * s, config.bits, config.group_size, config.symmetric)
            module = QuantLinear.from_codes(codes, scale, zero, config.bits, linear.bias, None if fold else s)
            _set_module(layer, name, module)
            full = f"{prefix}.{name}"
            todo.discard(full)
            report.quantized[full] = {"method": "awq", "alpha": alpha, "folded": fold,
                                      "calib_error": error, "calib_error_rtn": rtn_error}


# How each calibrated config type quantizes one decoder layer from its captured inputs: ``quantize`` dispatches on
# the config's type through this table; a type not in it (RTN) needs no calibration and is rounded per linear.
CALIBRATED_LAYER: dict[type, Callable[..., None]] = {GPTQ: _gptq_layer, AWQ: _awq_layer}

"""Layer-by-layer calibration: the engine shared by quantization (GPTQ, AWQ) and pruning (Wanda, SparseGPT).

Peak memory stays near the model plus one decoder layer's activations: the
calibration tokens go through the embeddings once, then each decoder layer in
turn sees the outputs of the (already compressed) layers before it.

API
---
``decoder_layers(model) -> nn.ModuleList``
    The stack of transformer blocks (``model.model.layers`` for llama-like models).
``capture_layer_inputs(model, calibration, batch_size) -> LayerInputs``
    Runs the model on ``calibration`` (LongTensor ``[n, seqlen]``) in batches and stops
    each forward at the first decoder layer (a pre-hook raises), keeping that layer's
    hidden states and keyword arguments (position embeddings, attention mask, ...)
    per batch.
``run_layer(layer, inputs) -> list[Tensor]``
    The layer's outputs for every batch (no grad).
``layerwise(model, calibration, process_layer, batch_size=8, progress=None)``
    For each decoder layer in order: ``process_layer(index, layer, inputs)`` (may change
    the layer in place, e.g. swap or edit its linears), then the layer's outputs
    become the next layer's inputs. ``inputs`` is a ``LayerInputs``:
    ``inputs.hidden`` (list of ``[b, seqlen, hidden]`` tensors, one per batch) and
    ``inputs.kwargs`` (one dict per batch, pass as ``layer(hidden, **kwargs)``).
``linear_groups(layer, inputs, true_sequential=True) -> list[list[str]]``
    The layer's linear names (``nn.Linear``, GPT-2's ``Conv1D``) in execution order, grouped by shared input
    (llama: [q, k, v], [o], [gate, up], [down]). With ``true_sequential=False``: one group.
    Compress group by group and recompute statistics after each group, so later
    groups see the errors of earlier ones (GPTQ's "true sequential").
``linear_input_stats(layer, inputs, names, hessian=True, sample_tokens=0) -> dict[str, LinearStats]``
    Forward hooks on the named linears accumulate, in float32 over all calibration
    tokens, the Hessian ``H = 2/n Σ x xᵀ`` (GPTQ/SparseGPT) or, with ``hessian=False``,
    ``abs_mean = mean |x_j|`` (AWQ); ``sq_norm = Σ x_j²`` per input channel (Wanda:
    ``‖X_j‖₂ = sqrt(sq_norm)``; read off H's diagonal when there is one); the token count ``n``. With ``sample_tokens``,
    ``samples`` keeps about that many evenly spaced input rows ``[m, in]`` (AWQ's search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.models.info import model_device
from lmforge.models.linears import is_linear

# Keyword arguments of a decoder layer that only make sense for generation with a cache.
_DROP_KWARGS = ("past_key_values", "past_key_value", "use_cache", "output_attentions")


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the first decoder layer's inputs are captured."""


@dataclass
class LayerInputs:
    """One decoder layer's inputs for all calibration batches."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)


@dataclass
class LinearStats:
    """Statistics of one linear layer's inputs over the calibration tokens (float32)."""

    n: int = 0
    hessian: torch.Tensor | None = None
    sink_hessian: torch.Tensor | None = field(default=None, repr=False)  # the part of ``hessian`` from position 0
    sq_sum: torch.Tensor | None = field(default=None, repr=False)  # Σ x² per channel, kept when there is no Hessian
    abs_sum: torch.Tensor | None = field(default=None, repr=False)
    sample_list: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def samples(self) -> torch.Tensor:
        return torch.cat(self.sample_list)

    @property
    def sq_norm(self) -> torch.Tensor:
        """Σ x_j² over the calibration tokens, per input channel."""
        return self.sq_sum if self.hessian is None else torch.diagonal(self.hessian) * (self.n / 2)

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.n, 1)

    def sink_weighted_hessian(self, share: float) -> torch.Tensor:
        """``hessian`` with each sequence's first token weighted up until it holds at least ``share`` of the trace.

        The first token of every sequence becomes an attention sink: every later token
        attends to its key and value. In a calibration set it is one row in ``seqlen``, and
        where its (normalized) input points in a direction no other token uses, plain GPTQ
        or SparseGPT pushes the rounding error of the other columns into exactly that
        direction. Measured on SmolLM2-135M (int4 g64): the sink's v_proj output error rose
        to 1.2-1.9 × its norm in layers 19-28 (RTN: 0.1-0.2), and perplexity ended 20 %
        above RTN's. Raising the first tokens' weight to ``share`` of the trace keeps their
        error near RTN's at a small cost on the other tokens; linears whose first-token share
        is already at least ``share`` (the layers that write massive activations) are untouched.
        """
        if self.hessian is None or self.sink_hessian is None or share <= 0:
            return self.hessian
        total, sink = float(torch.trace(self.hessian)), float(torch.trace(self.sink_hessian))
        if sink <= 0 or sink >= share * total:
            return self.hessian
        extra = (share * total - sink) / (sink * (1 - share))  # (1 + extra)·sink = share·(total + extra·sink)
        return self.hessian + extra * self.sink_hessian

    def add(self, x: torch.Tensor, hessian: bool, sample_stride: int = 0) -> None:
        first = x.detach()[:, 0].float() if hessian and x.ndim == 3 else None  # [batch, seq, width]: each position 0
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if sample_stride:
            self.sample_list.append(x[::sample_stride].clone())
        m, width = x.shape
        if not hessian:
            if self.sq_sum is None:
                self.sq_sum, self.abs_sum = torch.zeros(width, device=x.device), torch.zeros(width, device=x.device)
            self.sq_sum += x.square().sum(0)
            self.abs_sum += x.abs().sum(0)
        else:
            if self.hessian is None:
                self.hessian = torch.zeros(width, width, device=x.device)
                self.sink_hessian = torch.zeros(width, width, device=x.device)
            # running mean of 2 x xᵀ, rescaled as tokens arrive so that H stays O(1)
            keep, weight = self.n / (self.n + m), (2.0 / (self.n + m)) ** 0.5
            self.hessian *= keep
            scaled = x * weight
            self.hessian.addmm_(scaled.T, scaled)
            self.sink_hessian *= keep
            if first is not None:
                self.sink_hessian.addmm_((first * weight).T, first * weight)
        self.n += m


def decoder_layers(model) -> nn.ModuleList:
    """The model's list of decoder blocks (llama, mistral, qwen, phi, gpt-neox, gpt2-like layouts)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    raise LmforgeError(
        f"cannot find the decoder layers of {type(model).__name__}; layer-by-layer compression supports "
        "llama-like (model.layers), OPT-like, GPT-2-like and GPT-NeoX-like models"
    )


@torch.no_grad()
def capture_layer_inputs(model, calibration: torch.Tensor, batch_size: int = 8) -> LayerInputs:
    """The first decoder layer's hidden states and keyword arguments for each calibration batch."""
    if calibration.ndim != 2 or calibration.dtype != torch.long:
        raise LmforgeError(f"calibration must be a LongTensor [n_samples, seqlen], got {tuple(calibration.shape)} {calibration.dtype}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and calibration.numel() and int(calibration.max()) >= vocab:
        raise LmforgeError(f"calibration token id {int(calibration.max())} is outside the model's vocabulary ({vocab}); "
                           "tokenize the calibration corpus with this model's tokenizer")
    first = decoder_layers(model)[0]
    device = model_device(model)
    captured = LayerInputs(hidden=[], kwargs=[])

    def grab(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden.detach())
        captured.kwargs.append({k: v for k, v in kwargs.items() if k not in _DROP_KWARGS and k != "hidden_states"})
        raise _StopForward

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for start in range(0, calibration.shape[0], batch_size):
            batch = calibration[start : start + batch_size].to(device)
            try:
                model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def _output_tensor(out) -> torch.Tensor:
    # transformers ≥ 5 returns a tensor from decoder layers; older versions a tuple
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs) -> list[torch.Tensor]:
    return [_output_tensor(layer(hidden, **kwargs)) for hidden, kwargs in zip(inputs.hidden, inputs.kwargs)]


def layerwise(
    model,
    calibration: torch.Tensor,
    process_layer: Callable[[int, nn.Module, LayerInputs], None],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Call ``process_layer(index, layer, inputs)`` on each decoder layer in order, feeding outputs forward."""
    inputs = _in_one_block(capture_layer_inputs(model, calibration, batch_size))
    for index, layer in enumerate(decoder_layers(model)):
        process_layer(index, layer, inputs)
        with torch.no_grad():
            for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
                hidden.copy_(_output_tensor(layer(hidden, **kwargs)))  # in place: one set of activations alive
        if progress is not None:
            progress(1)


def _in_one_block(inputs: LayerInputs) -> LayerInputs:
    """The hidden states moved into one allocation, to be overwritten in place layer after layer.

    Kept as the separate tensors each layer returns, the activations that stay alive end up
    between the freed temporaries of the next forward in the allocator's heap and the heap only
    grows. The other cure, making glibc map and unmap every large buffer, cost 20 % of GPTQ's
    time in page faults on SmolLM2 (the peak was 0.08 GB lower).
    """
    if not inputs.hidden:
        return inputs
    block = torch.empty((sum(h.shape[0] for h in inputs.hidden), *inputs.hidden[0].shape[1:]),
                        dtype=inputs.hidden[0].dtype, device=inputs.hidden[0].device)
    start = 0
    for i, hidden in enumerate(inputs.hidden):
        view = block[start : start + hidden.shape[0]]
        view.copy_(hidden)
        inputs.hidden[i] = view
        start += hidden.shape[0]
    return inputs


def linear_names(layer: nn.Module) -> list[str]:
    """Names of the layer's linears: ``nn.Linear`` and GPT-2's ``Conv1D`` (see ``models.linears``)."""
    return [name for name, module in layer.named_modules() if is_linear(module)]


@torch.no_grad()
def linear_groups(layer: nn.Module, inputs: LayerInputs, true_sequential: bool = True) -> list[list[str]]:
    """The layer's linears in the order they run, grouped by the input tensor they share."""
    modules = dict(layer.named_modules())
    order: list[tuple[str, torch.Tensor]] = []  # keeps the inputs alive, so `is` compares them safely
    handles = []
    for name in linear_names(layer):
        def record(module, args, name=name):
            order.append((name, args[0]))
        handles.append(modules[name].register_forward_pre_hook(record))
    try:
        first = LayerInputs(hidden=inputs.hidden[:1], kwargs=inputs.kwargs[:1])
        run_layer(layer, first)
    finally:
        for handle in handles:
            handle.remove()
    seen: set[str] = set()
    groups: list[list[str]] = []
    last_input = None
    for name, tensor in order:
        if name in seen:
            continue
        seen.add(name)
        if groups and tensor is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = tensor
    # linears the forward never reached still get compressed, last
    unreached = [n for n in linear_names(layer) if n not in seen]
    if unreached:
        groups.append(unreached)
    return groups if true_sequential else [[name for group in groups for name in group]]


@torch.no_grad()
def linear_input_stats(
    layer: nn.Module, inputs: LayerInputs, names: list[str], hessian: bool = True, sample_tokens: int = 0
) -> dict[str, LinearStats]:
    """Run the layer on all calibration batches and gather input statistics of the named linears."""
    modules = dict(layer.named_modules())
    stats = {name: LinearStats() for name in names}
    stride = max(1, -(-inputs.tokens // sample_tokens)) if sample_tokens else 0
    pending: set[str] = set()
    seen: dict[int, tuple[torch.Tensor, str]] = {}  # this forward's inputs, by identity
    handles = []
    for name in names:
        def accumulate(module, args, name=name):
            x = args[0]
            if id(x) in seen and seen[id(x)][0] is x:  # q/k/v, gate/up read one tensor: accumulate it once
                stats[name] = stats[seen[id(x)][1]]
            else:
                seen[id(x)] = (x, name)
                stats[name].add(x, hessian, stride)
            pending.discard(name)
            if not pending:  # every named linear has its input: the rest of the layer is not needed
                raise _StopForward
        handles.append(modules[name].register_forward_pre_hook(accumulate))
    try:
        for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
            pending.update(names)
            seen.clear()
            try:
                layer(hidden, **kwargs)
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    return stats


def hessians_by_group(layer: nn.Module, prefix: str, inputs: LayerInputs, wanted, true_sequential: bool,
                      sink_share: float):
    """(name, full name, Hessian) of each linear of ``layer`` whose full name (``prefix.name``) is in ``wanted``,
    group by group (``linear_groups``), the Hessian sink-weighted. A generator: a group's inputs are measured only
    after the caller has handled the previous group, so the linears it replaced feed the ones after them."""
    for group in linear_groups(layer, inputs, true_sequential):
        local = [n for n in group if f"{prefix}.{n}" in wanted]
        if not local:
            continue
        stats = linear_input_stats(layer, inputs, local)
        for name in local:
            yield name, f"{prefix}.{name}", stats.pop(name).sink_weighted_hessian(sink_share)

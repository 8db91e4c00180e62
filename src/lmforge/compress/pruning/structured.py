"""Structured pruning: remove whole attention heads and MLP channels, so the matrices really shrink.

The result is a smaller *dense* model whose config says so (``num_attention_heads``,
``head_dim``, ``intermediate_size``); it saves and loads with plain transformers.

Importance is measured on calibration data, layer by layer (``compress.sequential``):

* a query head h contributes ``X_h W_hᵀ`` to the attention output, where ``X_h`` is its
  slice of ``o_proj``'s input and ``W_h`` the matching columns of ``o_proj``; its
  importance is ``‖X_h W_hᵀ‖² ∝ tr(W_h H_hh W_hᵀ)`` with H the Hessian of ``o_proj``'s input;
* an MLP channel j contributes ``x_j w_jᵀ`` through ``down_proj``; its importance is
  ``‖x_j‖² ‖w_j‖²``.

With ``reconstruct`` (the default) the kept columns of ``o_proj`` and ``down_proj`` are then
refit by least squares to the layer's original output on the calibration tokens,
``W' = W H[:, K] H[K, K]⁻¹`` (K the kept input columns, H their input Hessian, damped),
so what the removed heads and channels carried is folded into the survivors where it
correlates with them. The kept heads' and channels' activations do not change, so this
fit is exact for the pruned layer's input.

Grouped-query attention is respected: every key/value head keeps the same number of
query heads (the least important ones in each group go), so keys and values are untouched
and ``num_attention_heads`` stays a multiple of ``num_key_value_heads``.
Heads: llama-style attention (``self_attn.q_proj`` … ``o_proj``: llama, mistral, qwen2/3, gemma2). MLP channels:
every layout in ``MLP_LAYOUTS`` (those, plus phi3's fused ``gate_up_proj``, GPT-NeoX and OPT); other blocks are
refused in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from lmforge.compress.sequential import LayerInputs, decoder_layers, layerwise, linear_input_stats
from lmforge.compress.pruning.config import Structured
from lmforge.errors import LmforgeError
from lmforge.models.linears import is_conv1d, is_linear, linear_weight


@dataclass
class StructuredResult:
    """Kept query heads and MLP channels per layer (indices into the original model), sizes before and after."""

    kept_heads: list[list[int]] = field(default_factory=list)
    kept_channels: list[list[int]] = field(default_factory=list)
    parameters_before: int = 0
    parameters_after: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["kept_heads"] = [len(h) for h in self.kept_heads]
        summary["kept_channels"] = [len(c) for c in self.kept_channels]
        return summary


def head_importance(o_proj_hessian: torch.Tensor, o_weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``tr(W_h H_hh W_hᵀ)`` for each head h: the energy of its contribution to the attention output."""
    heads = o_weight.shape[1] // head_dim
    scores = torch.empty(heads)
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        w = o_weight[:, cols].float()
        scores[h] = torch.einsum("oi,ij,oj->", w, o_proj_hessian[cols, cols], w)
    return scores


def channel_importance(down_sq_norm: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """``‖x_j‖² ‖w_j‖²``: the energy of MLP channel j's contribution through ``down_proj``."""
    return down_sq_norm.float() * down_weight.float().square().sum(0)


def keep_heads_per_group(scores: torch.Tensor, kv_heads: int, keep_per_group: int) -> list[int]:
    """The ``keep_per_group`` best query heads of every key/value group, in original order."""
    per_group = len(scores) // kv_heads
    kept = []
    for g in range(kv_heads):
        best = torch.topk(scores[g * per_group : (g + 1) * per_group], keep_per_group).indices + g * per_group
        kept += sorted(best.tolist())
    return kept


def refit_kept_columns(weight: torch.Tensor, hessian: torch.Tensor, kept: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """``argmin_W' Σ‖W x − W' x_K‖²`` over the calibration inputs: ``W H[:, K] (H[K, K] + λI)⁻¹``, ``[out, |K|]``."""
    h = hessian.double()
    h_kk = h[kept][:, kept]
    h_kk = h_kk + damp * torch.diagonal(h_kk).mean() * torch.eye(len(kept), dtype=h.dtype)
    refit = torch.linalg.solve(h_kk, h[kept] @ weight.double().T).T  # H[K, K] is symmetric
    return refit.to(weight.dtype)


def _shrink_linear(linear: nn.Module, index: torch.Tensor, dim: int) -> nn.Module:
    """A new linear of the same kind keeping ``index`` along ``dim`` of the ``[out, in]`` weight (0: outputs, 1: inputs)."""
    weight = linear_weight(linear).index_select(dim, index).clone()
    out_features, in_features = weight.shape
    bias = linear.bias is not None
    if is_conv1d(linear):  # GPT-2 stores the transpose
        new = type(linear)(out_features, in_features).to(weight.device, weight.dtype)
        new.weight.data = weight.T.contiguous()
    else:
        new = nn.Linear(in_features, out_features, bias=bias, dtype=weight.dtype, device=weight.device)
        new.weight.data = weight
    if bias:
        new.bias.data = linear.bias.data.index_select(0, index).clone() if dim == 0 else linear.bias.data.clone()
    return new


def head_columns(heads: list[int], head_dim: int) -> torch.Tensor:
    """Indices of ``heads``' slices in the concatenated head outputs (``q_proj`` rows, ``o_proj`` columns)."""
    return torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)])


def shrink_attention(attn: nn.Module, kept_heads: list[int], head_dim: int, kv_heads: int) -> None:
    """Keep only ``kept_heads`` query heads: rows of ``q_proj``, columns of ``o_proj``."""
    index = head_columns(kept_heads, head_dim)
    attn.q_proj = _shrink_linear(attn.q_proj, index, 0)
    attn.o_proj = _shrink_linear(attn.o_proj, index, 1)
    attn.num_key_value_groups = len(kept_heads) // kv_heads


@dataclass(frozen=True)
class MlpLayout:
    """Where a block's MLP channels live: output rows of ``inputs``, input columns of ``output``, width in ``config_key``."""

    inputs: tuple[str, ...]
    output: str
    config_key: str = "intermediate_size"
    blocks: int = 1  # channel blocks stacked in each input (phi3's gate_up_proj holds gate and up: 2)


MLP_LAYOUTS = (
    MlpLayout(("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # llama, mistral, qwen2/3, gemma2
    MlpLayout(("mlp.gate_up_proj",), "mlp.down_proj", blocks=2),  # phi3
    MlpLayout(("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),  # gpt-neox
    MlpLayout(("fc1",), "fc2", config_key="ffn_dim"),  # opt
    MlpLayout(("mlp.c_fc",), "mlp.c_proj", config_key="n_inner"),  # gpt2 (Conv1D; n_inner None means 4 × hidden)
)
_HEAD_LINEARS = ("self_attn.q_proj", "self_attn.o_proj")


def shrink_mlp(layer: nn.Module, layout: MlpLayout, kept_channels: list[int], width: int) -> None:
    """Keep only ``kept_channels`` (of ``width``): rows of the layout's inputs (in every block), columns of its output."""
    index = torch.tensor(kept_channels)
    rows = torch.cat([index + block * width for block in range(layout.blocks)])
    for name in layout.inputs:
        _replace(layer, name, _shrink_linear(layer.get_submodule(name), rows, 0))
    _replace(layer, layout.output, _shrink_linear(layer.get_submodule(layout.output), index, 1))


def _replace(layer: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, leaf, module)


def block_layout(model, heads: bool) -> tuple[MlpLayout, bool]:
    """The model's MLP layout and whether its attention heads can be pruned; a one-line refusal for blocks
    structured pruning cannot shrink (or heads asked of an attention it cannot shrink)."""
    names = {name for name, module in decoder_layers(model)[0].named_modules() if is_linear(module)}
    layout = next((lay for lay in MLP_LAYOUTS if {*lay.inputs, lay.output} <= names), None)
    llama_heads = set(_HEAD_LINEARS) <= names
    if layout is None or (heads and not llama_heads):
        what = "MLP" if layout is None else "attention-head (it needs separate self_attn.q_proj and o_proj; use --heads 0)"
        raise LmforgeError(
            f"structured pruning supports llama-style blocks and the MLPs of phi3, gpt2, gpt-neox and opt; "
            f"{type(model).__name__} has no {what} layout it can shrink: use unstructured or N:M pruning (lmforge prune --method wanda)"
        )
    return layout, llama_heads


@torch.no_grad()
def structured_prune(
    model: nn.Module,
    config: Structured,
    calibration: torch.Tensor,
    *,
    batch_size: int = 1,  # calibration sequences per forward: 1 keeps the peak low, same speed at seqlen 2048
    progress: Callable[[int], None] | None = None,
) -> StructuredResult:
    """Remove the least important heads and MLP channels of every layer in place and update ``model.config``."""
    layout, prune_heads = block_layout(model, config.head_fraction > 0)
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    keep_per_group = (heads // kv_heads) - int((heads // kv_heads) * config.head_fraction)
    width = getattr(cfg, layout.config_key) or 4 * cfg.hidden_size
    keep_channels = width - int(width * config.mlp_fraction)
    result = StructuredResult(parameters_before=sum(p.numel() for p in model.parameters()))
    refits = [layout.output, *(["self_attn.o_proj"] if prune_heads else [])]

    def process(index: int, layer: nn.Module, inputs: LayerInputs) -> None:
        stats = linear_input_stats(layer, inputs, refits, hessian=True)
        weights = {name: linear_weight(layer.get_submodule(name)) for name in refits}  # [out, in], before shrinking
        kept = {}
        if prune_heads:
            scores = head_importance(stats["self_attn.o_proj"].hessian, weights["self_attn.o_proj"], head_dim)
            kept_heads = keep_heads_per_group(scores, kv_heads, keep_per_group)
            shrink_attention(layer.self_attn, kept_heads, head_dim, kv_heads)
            kept["self_attn.o_proj"] = head_columns(kept_heads, head_dim)
            result.kept_heads.append(kept_heads)
        channels = channel_importance(stats[layout.output].sq_norm, weights[layout.output])
        kept_channels = sorted(torch.topk(channels, keep_channels).indices.tolist())
        shrink_mlp(layer, layout, kept_channels, width)
        kept[layout.output] = torch.tensor(kept_channels)
        if config.reconstruct:
            for name, columns in kept.items():
                hessian = stats[name].sink_weighted_hessian(config.sink_share)
                refit = refit_kept_columns(weights[name], hessian, columns, config.damp)
                module = layer.get_submodule(name)
                module.weight.data = refit.T.contiguous() if is_conv1d(module) else refit
        result.kept_channels.append(kept_channels)

    layerwise(model, calibration, process, batch_size=batch_size, progress=progress)
    if prune_heads:
        cfg.head_dim = head_dim
        cfg.num_attention_heads = kv_heads * keep_per_group
    setattr(cfg, layout.config_key, keep_channels)
    result.parameters_after = sum(p.numel() for p in model.parameters())
    result.config = {"num_attention_heads": cfg.num_attention_heads, "head_dim": head_dim, layout.config_key: keep_channels,
                     **asdict(config)}
    return result

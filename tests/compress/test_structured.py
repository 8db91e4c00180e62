"""Structured pruning: the shrunk model equals the masked dense model, and reloads in transformers; the refit is least squares."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.compress.pruning.structured import Structured, keep_heads_per_group, refit_kept_columns, structured_prune
from lmforge.errors import LmforgeError
from lmforge.models import tiny_llama


def masked_dense(model, kept_heads, kept_channels, head_dim):
    """The original model with removed heads' o_proj columns and removed channels' down_proj columns zeroed."""
    masked = copy.deepcopy(model)
    for layer, heads, channels in zip(masked.model.layers, kept_heads, kept_channels):
        head_mask = torch.zeros(layer.self_attn.o_proj.weight.shape[1])
        for h in heads:
            head_mask[h * head_dim : (h + 1) * head_dim] = 1
        layer.self_attn.o_proj.weight.data *= head_mask
        channel_mask = torch.zeros(layer.mlp.down_proj.weight.shape[1])
        channel_mask[channels] = 1
        layer.mlp.down_proj.weight.data *= channel_mask
    return masked


def test_structurally_pruned_model_equals_masked_dense_and_reloads(tmp_path):
    model = tiny_llama(hidden_size=64, layers=2, heads=8, kv_heads=2, intermediate_size=96, vocab_size=256, seed=3)
    calibration = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    pruned = copy.deepcopy(model)
    result = structured_prune(pruned, Structured(head_fraction=0.5, mlp_fraction=0.25, reconstruct=False), calibration)
    assert [len(h) for h in result.kept_heads] == [4, 4]
    assert [len(c) for c in result.kept_channels] == [72, 72]
    layer = pruned.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (4 * 8, 64) and layer.mlp.down_proj.weight.shape == (64, 72)
    assert result.parameters_after < result.parameters_before
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = masked_dense(model, result.kept_heads, result.kept_channels, head_dim=8)
    with torch.no_grad():
        expected = reference(tokens).logits
        assert torch.allclose(pruned(tokens).logits, expected, atol=1e-5)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_attention_heads == 4 and reloaded.config.intermediate_size == 72
    with torch.no_grad():
        assert torch.allclose(reloaded(tokens).logits, expected, atol=1e-5)


def test_refit_is_the_least_squares_solution():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(24, 24, generator=generator) * torch.linspace(0.1, 3, 24)
    x = torch.randn(500, 24, generator=generator, dtype=torch.float64) @ mixing.double()  # correlated inputs
    weight = torch.randn(10, 24, generator=generator)
    kept = torch.tensor(sorted(torch.randperm(24, generator=generator)[:15].tolist()))
    refit = refit_kept_columns(weight, (2 / len(x)) * x.T @ x, kept, damp=0.0)  # the scale of H does not matter
    brute = torch.linalg.lstsq(x[:, kept], x @ weight.double().T).solution.T
    assert torch.allclose(refit.double(), brute, atol=1e-4)
    error = lambda w: ((x @ weight.double().T - x[:, kept] @ w.double().T) ** 2).sum()
    assert error(refit) < 0.9 * error(weight[:, kept])


def test_refit_brings_the_pruned_model_closer_to_the_dense_one(tmp_path):
    model = tiny_llama(hidden_size=64, layers=2, heads=8, kv_heads=2, intermediate_size=96, vocab_size=256, seed=3)
    calibration = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(1))
    errors = {}
    for reconstruct in (False, True):
        pruned = copy.deepcopy(model)
        structured_prune(pruned, Structured(head_fraction=0.5, mlp_fraction=0.5, reconstruct=reconstruct), calibration)
        with torch.no_grad():
            errors[reconstruct] = (pruned(tokens).logits - model(tokens).logits).square().mean().item()
    assert errors[True] < 0.8 * errors[False]
    pruned.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.allclose(AutoModelForCausalLM.from_pretrained(tmp_path)(tokens).logits, pruned(tokens).logits, atol=1e-5)


def test_heads_are_kept_within_each_kv_group():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.8, 0.7, 0.3, 0.4])
    assert keep_heads_per_group(scores, kv_heads=2, keep_per_group=2) == [1, 2, 4, 5]


def test_fractions_outside_unit_interval_are_user_errors():
    with pytest.raises(LmforgeError, match="mlp_fraction"):
        Structured(mlp_fraction=1.0)

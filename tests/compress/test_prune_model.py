"""prune() over a whole (tiny) model."""

import copy

import pytest
import torch

from lmforge.compress.pruning.masks import satisfies_nm, NM
from lmforge.compress.pruning import Magnitude, SparseGPT, Wanda, prune
from lmforge.compress.pruning.wanda import wanda_mask
from lmforge.errors import LmforgeError
from lmforge.models import tiny_llama


@pytest.fixture(scope="module")
def model_and_calibration():
    model = tiny_llama(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128, vocab_size=256, seed=0)
    calibration = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(0))
    return model, calibration


def logits_error(model, pruned, tokens):
    with torch.no_grad():
        return float((model(tokens).logits - pruned(tokens).logits).pow(2).mean())


def test_wanda_first_layer_mask_matches_its_definition_and_lm_head_is_kept(model_and_calibration):
    model, calibration = model_and_calibration
    pruned = copy.deepcopy(model)
    seen = []
    q_proj = model.model.layers[0].self_attn.q_proj
    handle = q_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, 64)))
    with torch.no_grad():
        model(calibration)
    handle.remove()
    inputs = torch.cat(seen)
    result = prune(pruned, Wanda(0.5), calibration)
    expected = wanda_mask(q_proj.weight, (inputs**2).sum(0), 0.5)
    assert torch.equal(pruned.model.layers[0].self_attn.q_proj.weight != 0, expected)
    assert torch.equal(pruned.lm_head.weight, model.lm_head.weight)
    assert torch.equal(pruned.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert len(result.linears) == 2 * 7 and abs(result.sparsity - 0.5) < 1e-6


def test_sparsegpt_beats_magnitude_on_the_whole_model(model_and_calibration):
    model, calibration = model_and_calibration
    errors = {}
    for config in (Magnitude(0.5), Wanda(0.5), SparseGPT(0.5, block_size=32)):
        pruned = copy.deepcopy(model)
        prune(pruned, config, calibration)
        errors[config.method] = logits_error(model, pruned, calibration)
    assert errors["sparsegpt"] < errors["magnitude"]
    assert errors["wanda"] < errors["magnitude"]


def test_nm_pattern_and_overrides_and_skip(model_and_calibration):
    model, calibration = model_and_calibration
    pruned = copy.deepcopy(model)
    prune(pruned, SparseGPT(pattern="2:4", block_size=32), calibration)
    for module in pruned.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            assert satisfies_nm(module.weight != 0, NM(2, 4))
    pruned = copy.deepcopy(model)
    result = prune(pruned, Magnitude(0.5, overrides={"*.mlp.down_proj": 0.25}, skip=("model.layers.1.self_attn.*",)))
    assert result.linears["model.layers.0.mlp.down_proj"] == 0.25
    assert result.linears["model.layers.0.mlp.up_proj"] == 0.5
    assert "model.layers.1.self_attn.q_proj" not in result.linears
    assert torch.equal(pruned.model.layers[1].self_attn.q_proj.weight, model.model.layers[1].self_attn.q_proj.weight)


def test_bad_configs_are_user_errors(model_and_calibration):
    model, _ = model_and_calibration
    with pytest.raises(LmforgeError, match="sparsity must be in"):
        Wanda(1.0)
    with pytest.raises(LmforgeError, match="1 ≤ N < M"):
        SparseGPT(pattern="4:2")
    with pytest.raises(LmforgeError, match="needs calibration"):
        prune(copy.deepcopy(model), Wanda(0.5))
    with pytest.raises(LmforgeError, match="override sparsity"):
        Magnitude(0.5, overrides={"*": 1.2})


@pytest.mark.parametrize("quant", ["rtn", "gptq"])
def test_prune_then_quantize_keeps_pruned_weights_exactly_zero(model_and_calibration, quant):
    from lmforge.compress import GPTQ, RTN
    from lmforge.compress.pruning import prune_then_quantize
    from lmforge.compress.storage.qlinear import QuantLinear

    model, calibration = model_and_calibration
    pruned = copy.deepcopy(model)
    prune(pruned, Wanda(0.5), calibration)
    masks = {n: m.weight != 0 for n, m in pruned.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n}
    both = copy.deepcopy(model)
    config = RTN(bits=4, group_size=32) if quant == "rtn" else GPTQ(bits=4, group_size=32)
    summary = prune_then_quantize(both, Wanda(0.5), config, calibration)
    for name, mask in masks.items():
        module = both.get_submodule(name)
        assert isinstance(module, QuantLinear)
        weight = module.dequantize()
        assert (weight[~mask] == 0).all()
    if quant == "rtn":
        assert summary["resnapped_codes"] == 0  # a symmetric grid maps 0 to the zero point by itself

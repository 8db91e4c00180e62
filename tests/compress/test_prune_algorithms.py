"""Pruning masks and algorithms against brute-force references and each other."""

import itertools

import pytest
import torch

from lmforge.compress.pruning.magnitude import magnitude_mask
from lmforge.compress.pruning.masks import NM, nm_mask, parse_pattern, row_topk_mask, satisfies_nm
from lmforge.compress.pruning.sparsegpt import sparsegpt_prune
from lmforge.compress.pruning.wanda import wanda_mask
from lmforge.errors import LmforgeError


def correlated_layer(rows=64, cols=128, tokens=2048, seed=0):
    """A random layer and inputs whose channels are correlated and have very different scales."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=g)
    mixing = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    scales = torch.exp(torch.randn(cols, generator=g))
    inputs = (torch.randn(tokens, cols, generator=g) @ mixing) * scales
    return weight, inputs


def test_wanda_mask_equals_brute_force_top_k_per_row():
    weight, inputs = correlated_layer()
    sq_norms = (inputs**2).sum(0)
    mask = wanda_mask(weight, sq_norms, 0.5)
    for row in range(weight.shape[0]):
        scores = [abs(float(weight[row, j])) * float(inputs[:, j].norm()) for j in range(weight.shape[1])]
        kept = sorted(range(len(scores)), key=lambda j: scores[j], reverse=True)[: weight.shape[1] // 2]
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == set(kept)


def test_nm_masks_satisfy_the_pattern_and_keep_the_largest_in_each_group():
    scores = torch.rand(16, 64, generator=torch.Generator().manual_seed(1))
    for n, m in [(2, 4), (4, 8), (1, 4)]:
        mask = nm_mask(scores, NM(n, m))
        assert satisfies_nm(mask, NM(n, m))
        for row, group in itertools.product(range(16), range(64 // m)):
            block = scores[row, group * m : (group + 1) * m]
            expected = set(torch.argsort(block, descending=True)[: m - n].tolist())
            assert set(torch.nonzero(mask[row, group * m : (group + 1) * m]).flatten().tolist()) == expected


def test_sparsegpt_nm_output_satisfies_the_pattern():
    weight, inputs = correlated_layer()
    hessian = 2 * inputs.T @ inputs / len(inputs)
    for n, m in [(2, 4), (4, 8)]:
        pruned = sparsegpt_prune(weight, hessian, pattern=NM(n, m), block_size=32)
        assert satisfies_nm(pruned != 0, NM(n, m))


def test_unstructured_masks_have_exact_per_row_sparsity():
    weight, inputs = correlated_layer()
    hessian = 2 * inputs.T @ inputs / len(inputs)
    for sparsity in (0.3, 0.5, 0.75):
        assert (magnitude_mask(weight, sparsity).sum(1) == 128 - int(128 * sparsity)).all()
        pruned = sparsegpt_prune(weight, hessian, sparsity, block_size=32)
        assert ((pruned == 0).sum(1) == int(128 * sparsity)).all()


@pytest.mark.parametrize("pattern", [None, NM(2, 4)])
def test_output_error_orders_sparsegpt_below_wanda_below_magnitude(pattern):
    weight, inputs = correlated_layer()
    hessian = 2 * inputs.T @ inputs / len(inputs)
    reference = inputs @ weight.T

    def error(pruned):
        return float(((inputs @ pruned.T - reference) ** 2).mean())

    magnitude = error(weight * magnitude_mask(weight, 0.5, pattern))
    wanda = error(weight * wanda_mask(weight, (inputs**2).sum(0), 0.5, pattern))
    pruned = sparsegpt_prune(weight, hessian, 0.5, pattern)
    sparsegpt = error(pruned)
    assert sparsegpt < wanda < magnitude
    # the OBS update is worth something: same mask without the update is clearly worse
    assert sparsegpt < 0.85 * error(weight * (pruned != 0))


def test_sparsegpt_with_zero_sparsity_keeps_the_weights():
    weight, inputs = correlated_layer()
    hessian = 2 * inputs.T @ inputs / len(inputs)
    assert torch.allclose(sparsegpt_prune(weight, hessian, 0.0), weight, atol=1e-5)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_a_user_error(sparsity):
    with pytest.raises(LmforgeError, match="sparsity must be in"):
        row_topk_mask(torch.rand(4, 8), sparsity)


@pytest.mark.parametrize("text", ["4:4", "5:4", "0:4", "2-4"])
def test_bad_nm_patterns_are_user_errors(text):
    with pytest.raises(LmforgeError):
        parse_pattern(text)


def test_nm_width_must_divide():
    with pytest.raises(LmforgeError, match="multiple of 4"):
        nm_mask(torch.rand(4, 10), NM(2, 4))

"""Bitmask + values storage: exact round trip, and fewer bytes only where it pays."""

import copy

import pytest
import torch

from lmforge.compress.pruning import Magnitude, prune
from lmforge.compress.storage.sparse import load_sparse, pack_bitmask, packing_saves_bytes, save_sparse, to_semi_structured, unpack_bitmask
from lmforge.errors import LmforgeError
from lmforge.models import tiny_model_and_tokenizer


def test_bitmask_round_trip_is_exact():
    tensor = torch.randn(37, 29) * (torch.rand(37, 29) > 0.6)
    parts = pack_bitmask(tensor)
    assert parts["bitmask"].numel() == (37 * 29 + 7) // 8
    assert torch.equal(unpack_bitmask(parts["bitmask"], parts["values"], (37, 29)), tensor)


def test_packing_only_when_it_saves_bytes():
    dense = torch.randn(64, 64)
    assert not packing_saves_bytes(dense)
    dense[:, :4] = 0  # 6 % zeros: still more than 1/32 sparse, packing wins by a little
    assert packing_saves_bytes(dense)


def test_pruned_model_saves_smaller_and_reloads_identically(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(hidden_size=64, layers=2, intermediate_size=128, tie_word_embeddings=True)
    pruned = copy.deepcopy(model)
    prune(pruned, Magnitude(0.5))
    sizes = save_sparse(pruned, tokenizer, tmp_path / "sparse")
    assert sizes["packed_tensors"] == 14
    assert sizes["stored_bytes"] < sizes["dense_bytes"]
    reloaded, _ = load_sparse(tmp_path / "sparse")
    tokens = torch.randint(0, len(tokenizer), (1, 16))
    with torch.no_grad():
        assert torch.equal(reloaded(tokens).logits, pruned(tokens).logits)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    # the folder loads through the same door as every other model
    from lmforge.models import load_model

    loaded, _ = load_model(tmp_path / "sparse")
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, pruned(tokens).logits)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_semi_structured_needs_a_gpu():
    with pytest.raises(LmforgeError, match="NVIDIA GPU"):
        to_semi_structured(torch.nn.Linear(8, 8))

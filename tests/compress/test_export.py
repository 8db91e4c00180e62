import pytest
import torch

from lmforge.compress import AWQ, RTN, quantize
from lmforge.compress.export.compressed_tensors import export_compressed_tensors, pack_int32
from lmforge.errors import LmforgeError
from lmforge.models import tiny_model_and_tokenizer


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_int32_puts_code_i_in_bits_i(bits):
    codes = torch.randint(0, 2**bits, (3, 21), generator=torch.Generator().manual_seed(bits))
    words = pack_int32(codes, bits).to(torch.int64) & 0xFFFFFFFF
    factor = 32 // bits
    unpacked = torch.stack([(words >> (bits * i)) & (2**bits - 1) for i in range(factor)], dim=-1).reshape(3, -1)
    assert torch.equal(unpacked[:, :21], codes) and not unpacked[:, 21:].any()


def test_compressed_tensors_export_loads_back_in_transformers(tmp_path, optional):
    optional("compressed_tensors", "export")
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_model_and_tokenizer(layers=2, hidden_size=64, tie_word_embeddings=True)
    generator = torch.Generator().manual_seed(0)
    test = torch.randint(0, model.config.vocab_size, (2, 16), generator=generator)
    quantize(model, RTN(bits=4, group_size=32))
    with torch.no_grad():
        expected = model(test).logits
    export_compressed_tensors(model, tokenizer, tmp_path / "ct")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(test).logits, expected, rtol=1e-5, atol=1e-5)


def test_export_refuses_what_the_format_cannot_express(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(layers=1, hidden_size=64)
    calibration = torch.randint(0, model.config.vocab_size, (2, 16))
    quantize(model, AWQ(bits=4, group_size=32, symmetric=False, grid=2), calibration)
    with pytest.raises(LmforgeError, match="input scale|asymmetric"):
        export_compressed_tensors(model, tokenizer, tmp_path / "ct")

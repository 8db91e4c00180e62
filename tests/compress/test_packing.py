import pytest
import torch

from lmforge.compress.storage.packing import pack, storage_bits, unpack


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trips_every_code(bits):
    codes = torch.randint(0, 2**bits, (7, 256), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    codes[0, : 2**bits] = torch.arange(2**bits)  # every code value appears
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() * 8 == codes.numel() * storage_bits(bits)
    assert torch.equal(unpack(packed, bits), codes)


def test_int4_layout_low_nibble_first():
    packed = pack(torch.tensor([[1, 2, 15, 0]]), 4)
    assert packed.tolist() == [[0x21, 0x0F]]

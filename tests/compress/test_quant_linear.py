import pytest
import torch

from lmforge.compress.storage import kernels
from lmforge.compress.storage.qlinear import KERNEL_MAX_ROWS, QuantLinear
from lmforge.compress.quantization.rtn import rtn


@pytest.mark.parametrize("bits,group_size,symmetric", [(4, 64, True), (4, 32, False), (8, None, True), (8, 64, False),
                                                       (3, 64, True), (2, 16, False), (4, 6, True)])
@pytest.mark.parametrize("rows", [1, 3, 9, KERNEL_MAX_ROWS // 2 + 5])  # flat rows: 2 (one dot each), 6 and 18 (tiles with
# remainders; 50 outputs leave a partial tile and a partial 4 × 4 block), past KERNEL_MAX_ROWS (dequantize-then-matmul)
def test_output_equals_matmul_with_dequantized_weight(bits, group_size, symmetric, rows):
    g = torch.Generator().manual_seed(bits * 100 + rows)
    weight, bias = torch.randn(50, 192, generator=g), torch.randn(50, generator=g)
    codes, scale, zero = rtn(weight, bits, group_size, symmetric)
    layer = QuantLinear.from_codes(codes, scale, zero, bits, bias)
    size = group_size or 192
    dequantized = (codes.float() - zero.repeat_interleave(size, 1)) * scale.repeat_interleave(size, 1)
    assert torch.equal(layer.dequantize(), dequantized)
    x = torch.randn(2, rows, 192, generator=g)
    expected = x @ dequantized.T + bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-4)


def test_native_kernel_is_used_and_storage_is_packed():
    assert kernels.available(), "the C kernel should compile on this machine"
    codes, scale, zero = rtn(torch.randn(32, 128), 4, 64, True)
    layer = QuantLinear.from_codes(codes, scale, zero, 4)
    assert layer.qweight.dtype == torch.uint8 and layer.qweight.shape == (32, 64)  # two codes per byte
    assert not any(p.is_floating_point() and p.numel() >= 32 * 128 for p in layer.state_dict().values())
    x = torch.randn(1, 128)
    torch.testing.assert_close(kernels.packed_matmul(x, layer.qweight, layer.scales, layer.zeros, 4, 64),
                               x @ layer.dequantize().T, rtol=1e-5, atol=1e-5)


def test_input_scale_divides_the_input():
    codes, scale, zero = rtn(torch.randn(16, 64), 4, 32, True)
    s = torch.rand(64) + 0.5
    layer = QuantLinear.from_codes(codes, scale, zero, 4, input_scale=s)
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), (x / s) @ layer.dequantize().T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
def test_kernel_on_two_threads_equals_one_thread(bits):
    # 1 × 576 × 1536 multiply-adds: above the threshold, so the rows are split between OpenMP threads
    assert 576 * 1536 >= kernels.PARALLEL_MIN_MACS
    codes, scale, zero = rtn(torch.randn(1536, 576, generator=torch.Generator().manual_seed(bits)), bits, 64, True)
    layer = QuantLinear.from_codes(codes, scale, zero, bits)
    x = torch.randn(1, 576)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = layer(x)
        torch.set_num_threads(2)
        double = layer(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, double)  # each output row is computed whole by one thread
    torch.testing.assert_close(double, x @ layer.dequantize().T, rtol=1e-5, atol=1e-4)

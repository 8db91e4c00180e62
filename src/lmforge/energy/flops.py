"""FLOPs of training and inference, and model FLOPs utilization (MFU).

Training a dense transformer costs about 6·N FLOPs per token (2·N forward,
4·N backward; Kaplan et al. 2020), inference about 2·N. Attention over a
context of T tokens adds 12·L·d·T per trained token (6·L·d·T at inference),
the term PaLM's MFU definition includes (Chowdhery et al. 2022, appendix B).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Dense (no sparsity) peak throughput of common accelerators, FLOP/s, by dtype family.
_GPU_PEAKS = {
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp32": 91.6e12},
    "A10G": {"bf16": 70e12, "fp32": 31.2e12},
    "L4": {"bf16": 121e12, "fp32": 30.3e12},
    "V100": {"bf16": 125e12, "fp32": 15.7e12},
    "T4": {"bf16": 65e12, "fp32": 8.1e12},
    "RTX 4090": {"bf16": 165e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp32": 35.6e12},
}


def training_flops(n_params: float, tokens: float, n_layers: int = 0, d_model: int = 0, seq_len: int = 0) -> float:
    """≈ 6·N·D, plus the attention term 12·L·d·T·D when the shape is given."""
    return (6.0 * n_params + 12.0 * n_layers * d_model * seq_len) * tokens


def inference_flops(n_params: float, tokens: float, n_layers: int = 0, d_model: int = 0, seq_len: int = 0) -> float:
    """≈ 2·N per token, plus 6·L·d·T per token (PaLM's accounting) when the shape is given."""
    return (2.0 * n_params + 6.0 * n_layers * d_model * seq_len) * tokens


_measured_cpu_peak: dict = {}


def peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> tuple[float, str]:
    """The device's peak FLOP/s and where the number comes from.

    GPUs: the vendor's dense peak for the dtype from a table. CPUs have no
    published number we can trust for a virtual machine, so the peak is what a
    large matmul reaches on this machine with torch's threads (measured once).
    """
    import torch

    dtype = dtype or torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        family = "bf16" if dtype in (torch.bfloat16, torch.float16) else "fp32"
        for key, peaks in _GPU_PEAKS.items():
            if key in name:
                return peaks[family], f"{name} datasheet {family} dense peak"
        return float("nan"), f"{name}: unknown peak"
    if dtype not in _measured_cpu_peak:
        _measured_cpu_peak[dtype] = _measure_matmul_flops(dtype)
    return _measured_cpu_peak[dtype], f"measured {str(dtype).removeprefix('torch.')} matmul peak on this CPU"


def _measure_matmul_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.3) -> float:
    import torch

    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: thread pool and kernel selection
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        a @ b
        calls += 1
    return 2.0 * size**3 * calls / elapsed

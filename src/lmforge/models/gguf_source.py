"""Reading GGUF files: validate them and say which quantization grid their weights came from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lmforge.errors import LmforgeError

# What each GGML block type means for someone re-quantizing the dequantized weights.
GRIDS = {
    "F32": "float32 (no quantization)",
    "F16": "float16",
    "BF16": "bfloat16",
    "Q8_0": "symmetric int8, blocks of 32 (one scale per block)",
    "Q4_0": "symmetric int4, blocks of 32 (one scale per block)",
    "Q4_1": "asymmetric int4, blocks of 32 (scale and minimum per block)",
    "Q5_0": "symmetric int5, blocks of 32",
    "Q5_1": "asymmetric int5, blocks of 32",
    "Q4_K": "k-quant int4, super-blocks of 256 with 8 sub-blocks of 32",
    "Q6_K": "k-quant int6, super-blocks of 256 with 16 sub-blocks of 16",
}


def read_gguf(path: str | Path):
    """Open a GGUF file with the `gguf` package, turning a damaged file into a one-line error."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"GGUF file not found: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise LmforgeError(f"{path} is not a GGUF file (bad magic bytes); pass a .gguf exported by llama.cpp or gguf-py")
    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ValueError(f"tensor {tensor.name} ends past the end of the file")
    except LmforgeError:
        raise
    except Exception as exc:  # the gguf package raises many types for damaged files
        raise LmforgeError(f"{path} is truncated or damaged ({exc}); download or export it again") from None
    return reader


def gguf_source_quantization(path: str | Path) -> dict:
    """Count tensors by GGML type and describe the grid of the weight matrices.

    Re-quantizing dequantized GGUF weights on the grid they came from reproduces
    them exactly, which says nothing about a quantization method: tell the user.
    """
    reader = read_gguf(path)
    counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    matrix_types = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
    dominant = matrix_types.most_common(1)[0][0] if matrix_types else None
    return {
        "file": str(Path(path).resolve()),
        "tensor_types": dict(counts),
        "weight_grid": dominant,
        "weight_grid_description": GRIDS.get(dominant, dominant),
    }

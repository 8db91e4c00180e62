"""Quantization configs: one dataclass per method; ``quantize(model, config, calibration)`` reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmforge.compress.defaults import SINK_SHARE
from lmforge.errors import LmforgeError

SUPPORTED_BITS = (2, 3, 4, 8)
DEFAULT_SKIP = ("lm_head", "*embed*")


@dataclass
class QuantConfig:
    """Fields shared by all methods.

    ``bits``: 8, 4, 3 (2 for research). 2/3/4-bit codes are stored packed two per byte
    (a 3-bit grid in 4-bit storage), 8-bit codes one per byte.
    ``group_size``: input columns sharing one scale and zero point; ``None`` = one per output channel.
    ``symmetric``: grid centred on zero (zero point fixed at ``2**(bits-1)``), else min/max per group.
    ``skip``: fnmatch patterns of module names left in full precision (default: lm_head and embeddings).
    ``skip_bad_groups``: leave layers whose width ``group_size`` does not divide in full precision
    (and report them) instead of failing.
    ``lm_head_bits``: also quantize the output head, round-to-nearest with that many bits (8: per
    output channel; fewer: in groups of ``group_size``). A head tied to the embeddings is untied:
    the embeddings stay in full precision. At batch-1 decode the head is the largest matrix read
    per token (SmolLM2: 49,152 × 576, 113 MB in fp32).
    ``share_embeddings``: with ``lm_head_bits`` on a model whose head is tied to its embeddings,
    keep them tied: the embedding lookup reads the quantized head's rows, so one quantized table
    serves both (SmolLM2, int8: 28 MB instead of 113 MB of fp32 embeddings plus the 28 MB head).
    """

    bits: int = 4
    group_size: int | None = 64
    symmetric: bool = True
    skip: tuple[str, ...] = DEFAULT_SKIP
    skip_bad_groups: bool = False
    lm_head_bits: int | None = None
    share_embeddings: bool = False

    method = "base"
    needs_calibration = False

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise LmforgeError(f"bits={self.bits} is not supported; use one of {', '.join(map(str, SUPPORTED_BITS))}")
        if self.group_size is not None and (self.group_size < 2 or self.group_size % 2):
            raise LmforgeError(f"group_size={self.group_size} must be an even number ≥ 2 (or None for per-channel)")
        if self.lm_head_bits is not None and self.lm_head_bits not in SUPPORTED_BITS:
            raise LmforgeError(f"lm_head_bits={self.lm_head_bits} is not supported; use one of "
                               f"{', '.join(map(str, SUPPORTED_BITS))} (or leave it unset to keep the head in full precision)")
        if self.share_embeddings and self.lm_head_bits is None:
            raise LmforgeError("share_embeddings reads the embeddings from the quantized output head: set lm_head_bits too (e.g. 8)")
        self.skip = tuple(self.skip)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


@dataclass
class RTN(QuantConfig):
    """Round-to-nearest on the grid; no calibration."""

    method = "rtn"


@dataclass
class GPTQ(QuantConfig):
    """GPTQ with the paper's defaults. ``act_order`` quantizes columns by decreasing Hessian diagonal
    (with static groups); ``true_sequential`` re-measures inputs after each group of linears
    (q/k/v, o, gate/up, down) instead of measuring all of a layer's linears in one pass, as the
    paper's code and llm-compressor do. It takes about 1.5 × the time and did not help on SmolLM2
    int4 g64 (wikitext2, 32 windows: 26.32 with it, 26.14 in one pass);
    ``sink_share``: least share of the Hessian's trace held by each sequence's first token, the
    attention sink (``LinearStats.sink_weighted_hessian``); 0 is the paper's unweighted Hessian."""

    act_order: bool = False
    damp: float = 0.01
    block_size: int = 128
    true_sequential: bool = False
    sink_share: float = SINK_SHARE

    method = "gptq"
    needs_calibration = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.damp <= 1:
            raise LmforgeError(f"damp={self.damp} must be in (0, 1]; 0.01 is the usual choice")
        if self.block_size < 1:
            raise LmforgeError(f"block_size={self.block_size} must be ≥ 1; 128 is the usual choice")
        if not 0 <= self.sink_share < 1:
            raise LmforgeError(f"sink_share={self.sink_share} must be in [0, 1); {SINK_SHARE} is the default, 0 turns it off")


@dataclass
class AWQ(QuantConfig):
    """Activation-aware scaling: per group of linears sharing an input, search ``s = mean|x|^α``
    over ``grid`` values of α in [0, 1) minimizing the output error on ``sample_tokens`` calibration rows."""

    grid: int = 20
    sample_tokens: int = 4096

    method = "awq"
    needs_calibration = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid < 1 or self.sample_tokens < 1:
            raise LmforgeError("AWQ needs grid ≥ 1 and sample_tokens ≥ 1")


METHODS: dict[str, type[QuantConfig]] = {cls.method: cls for cls in (RTN, GPTQ, AWQ)}

"""GGML's block formats as quantization grids: fit a grid to weights, encode and decode codes, pack the bytes.

Every format here is an affine grid per *group* of consecutive weights in a row, ``w = q · scale + offset``
with integer codes ``q ∈ [0, qmax]``; what differs is how ``scale``/``offset`` are chosen and stored:

    Q8_0  groups of 32, fp16 d:            w = (q - 128) · d        (q - 128 ∈ [-127, 127])
    Q4_0  groups of 32, fp16 d:            w = (q - 8) · d          d = (signed max) / -8
    Q5_0  groups of 32, fp16 d:            w = (q - 16) · d
    Q4_1  groups of 32, fp16 d and m:      w = q · d + m            m = min, d = (max - min) / 15
    Q5_1  groups of 32, fp16 d and m:      w = q · d + m            d = (max - min) / 31
    Q4_K  super-blocks of 256 = 8 groups of 32, fp16 d, dmin; 6-bit sc_j, m_j:  w = q · d·sc_j - dmin·m_j
    Q5_K  the same with 5-bit codes
    Q6_K  super-blocks of 256 = 16 groups of 16, fp16 d; int8 sc_j:   w = (q - 32) · d·sc_j

A format's ``span`` is how many columns are fitted together (32, or 256 for k-quants: their group scales
share one super-block scale). ``fit`` returns a dict of tensors, each ``[rows, ·]`` along the columns, so
fits of successive spans concatenate along dim 1 — GPTQ fits a span when its error feedback reaches it.
``encode`` of the 32-block types follows ggml's reference quantizer (codes from the fp32 ``d``, then ``d``
stored as fp16), so RTN here is byte-identical to gguf-py's ``quants.quantize``; k-quants encode against
the stored (rounded) grid, as ggml's reference does.

The k-quant fit is a small search, not min/max: per group, candidate scales around the min/max one are
tried and (scale, min) refit by weighted least squares on the chosen codes; the weights are the
calibration importance of each column (the diagonal of GPTQ's Hessian, what llama.cpp's imatrix holds)
or, without one, ``|w| + rms(w)`` as ggml uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from gguf import GGMLQuantizationType as T

SUPER = 256  # weights per k-quant super-block


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _fp16_bytes(x: torch.Tensor) -> torch.Tensor:
    """``[..., k]`` float → ``[..., 2k]`` little-endian fp16 bytes."""
    return x.to(torch.float16).contiguous().view(torch.uint8)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _nibbles(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return (low.to(torch.uint8) & 0x0F) | ((high.to(torch.uint8) & 0x0F) << 4)


def _bits(plane: torch.Tensor, count: int) -> torch.Tensor:
    """``[..., count, n]`` 0/1 → ``[..., n]`` bytes with bit i from plane i."""
    out = torch.zeros(plane.shape[:-2] + plane.shape[-1:], dtype=torch.uint8)
    for i in range(count):
        out |= plane[..., i, :].to(torch.uint8) << i
    return out


# ---- the 32-weight block types: ggml's reference formulas ------------------------------------------------------


def _fit_symmetric(levels: int) -> Callable:
    def fit(w: torch.Tensor, importance=None) -> dict:
        rows, cols = w.shape
        blocks = w.reshape(rows, cols // 32, 32)
        index = blocks.abs().argmax(dim=-1, keepdim=True)
        d = torch.gather(blocks, -1, index).squeeze(-1) / -levels  # signed: the largest |w| gets code 0
        return {"d": d}
    return fit


def _fit_q8(w: torch.Tensor, importance=None) -> dict:
    rows, cols = w.shape
    return {"d": w.reshape(rows, cols // 32, 32).abs().max(dim=-1).values / 127}


def _fit_min_max(qmax: int) -> Callable:
    def fit(w: torch.Tensor, importance=None) -> dict:
        rows, cols = w.shape
        blocks = w.reshape(rows, cols // 32, 32)
        low, high = blocks.min(dim=-1).values, blocks.max(dim=-1).values
        return {"d": (high - low) / qmax, "m": low}
    return fit


@dataclass(frozen=True)
class BlockFormat:
    name: str
    qtype: T
    bits: int
    group: int  # weights sharing one scale/offset
    span: int  # weights fitted (and stored) together
    fit: Callable[..., dict]  # (weights [rows, k·span], importance [k·span] | None) -> grid
    levels: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]  # grid -> stored (scale, offset) [rows, groups]
    encode: Callable[[torch.Tensor, dict, slice], torch.Tensor]  # (w [rows, n], grid, group slice) -> codes
    pack: Callable[[torch.Tensor, dict], torch.Tensor]  # (codes [rows, cols], grid) -> uint8 [rows, bytes]

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def decode(self, codes: torch.Tensor, grid: dict, groups: slice = slice(None)) -> torch.Tensor:
        """Weights that llama.cpp reads back from ``codes`` (the columns of ``groups``) on ``grid``."""
        scale, offset = self.levels(grid)
        width = codes.shape[1]
        return codes * _expand(scale, groups, width) + _expand(offset, groups, width)

    def quantize(self, weight: torch.Tensor, importance: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Round to nearest on the fitted grid: ``(codes [rows, cols] float, grid)``."""
        w = weight.detach().float()
        grid = self.fit(w, importance)
        return self.encode(w, grid, slice(0, w.shape[1] // self.group)), grid

    def row_bytes(self, cols: int) -> int:
        return cols // self.span * _BLOCK_BYTES[self.qtype]


_BLOCK_BYTES = {T.Q8_0: 34, T.Q4_0: 18, T.Q4_1: 20, T.Q5_0: 22, T.Q5_1: 24, T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210}


def _offset_levels(centre: int) -> Callable:
    def levels(grid):
        d = _fp16(grid["d"])
        return d, -centre * d
    return levels


def _min_levels(grid):
    return _fp16(grid["d"]), _fp16(grid["m"])


def _expand(x: torch.Tensor, groups: slice, width: int) -> torch.Tensor:
    """The per-group values of ``groups`` spread over ``width`` columns (a whole group each, or one column)."""
    picked = x[:, groups]
    return picked.repeat_interleave(width // picked.shape[1], 1)


def _encode_centred(centre: int, qmax: int) -> Callable:
    def encode(w, grid, group):  # ggml: trunc(w / d + centre + 0.5), from the fp32 d
        inverse = _expand(_inverse(grid["d"]), group, w.shape[1])
        return torch.clamp(torch.trunc(w * inverse + (centre + 0.5)), 0, qmax)
    return encode


def _encode_q8(w, grid, group):  # ggml: roundf (half away from zero) of w / d
    x = w * _expand(_inverse(grid["d"]), group, w.shape[1])
    return torch.clamp(torch.sign(x) * torch.floor(x.abs() + 0.5), -127, 127) + 128


def _encode_from_min(qmax: int) -> Callable:
    def encode(w, grid, group):
        inverse, low = _expand(_inverse(grid["d"]), group, w.shape[1]), _expand(grid["m"], group, w.shape[1])
        return torch.clamp(torch.trunc((w - low) * inverse + 0.5), 0, qmax)
    return encode


def _halves(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 32-block keeps weight j in the low nibble of byte j and weight j + 16 in its high nibble."""
    blocks = codes.reshape(codes.shape[0], -1, 32).to(torch.uint8)
    return blocks, _nibbles(blocks[..., :16], blocks[..., 16:])


def _pack_q8(codes, grid):
    blocks = (codes.reshape(codes.shape[0], -1, 32) - 128).to(torch.int8).view(torch.uint8)
    return torch.cat([_fp16_bytes(grid["d"].unsqueeze(-1)), blocks], -1).reshape(codes.shape[0], -1)


def _pack_4(codes, grid):
    _, qs = _halves(codes)
    parts = [_fp16_bytes(grid["d"].unsqueeze(-1))] + ([_fp16_bytes(grid["m"].unsqueeze(-1))] if "m" in grid else [])
    return torch.cat(parts + [qs], -1).reshape(codes.shape[0], -1)


def _pack_5(codes, grid):
    blocks, qs = _halves(codes)
    high = (blocks >> 4) & 1  # bit 4 of weight j is bit j of a little-endian uint32
    qh = _bits(high.reshape(*high.shape[:-1], 4, 8).transpose(-1, -2), 8)
    parts = [_fp16_bytes(grid["d"].unsqueeze(-1))] + ([_fp16_bytes(grid["m"].unsqueeze(-1))] if "m" in grid else [])
    return torch.cat(parts + [qh, qs], -1).reshape(codes.shape[0], -1)


# ---- k-quants --------------------------------------------------------------------------------------------------


def _group_weights(w: torch.Tensor, importance: torch.Tensor | None, size: int) -> torch.Tensor:
    """Per-weight importance ``[rows, groups, size]``: calibration's ``E[x²]`` per column, else ggml's ``|w| + rms``."""
    rows, cols = w.shape
    if importance is not None:
        return importance.float().clamp(min=0).expand(rows, cols).reshape(rows, cols // size, size) + 1e-12
    groups = w.reshape(rows, cols // size, size)
    return groups.abs() + groups.pow(2).mean(-1, keepdim=True).sqrt()


def _search_affine(x: torch.Tensor, weights: torch.Tensor, qmax: int, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group of ``x [..., n]``: ``(scale ≥ 0, minimum ≤ 0)`` with ``x ≈ q·scale + minimum`` minimising the
    weighted squared error; candidate code assignments come from scales around the min/max one, and (scale,
    minimum) are refit by least squares on each (what ggml's make_qkx2_quants does)."""
    low = x.min(-1, keepdim=True).values.clamp(max=0)
    high = x.max(-1, keepdim=True).values
    span = (high - low).clamp(min=1e-30)
    best_scale, best_min = span / qmax, low
    q = torch.clamp(torch.round((x - low) / best_scale), 0, qmax)
    best_error = (weights * (q * best_scale + low - x).pow(2)).sum(-1, keepdim=True)
    sw, swx = weights.sum(-1, keepdim=True), (weights * x).sum(-1, keepdim=True)
    for step in range(steps + 1):
        inverse = (qmax - 1 + 0.1 * step) / span  # ggml: rmin = -1, rdelta = 0.1
        q = torch.clamp(torch.round(inverse * (x - low)), 0, qmax)
        swq, swqq, swqx = (weights * q).sum(-1, keepdim=True), (weights * q * q).sum(-1, keepdim=True), (weights * q * x).sum(-1, keepdim=True)
        det = sw * swqq - swq * swq
        ok = det > 0
        scale = torch.where(ok, (sw * swqx - swq * swx) / torch.where(ok, det, 1), best_scale)
        minimum = torch.where(ok, (swqq * swx - swq * swqx) / torch.where(ok, det, 1), best_min)
        # the minimum must stay ≤ 0 (stored as a positive offset); refit the scale alone with it at 0
        positive = minimum > 0
        scale = torch.where(positive, swqx / swqq.clamp(min=1e-30), scale)
        minimum = torch.where(positive, torch.zeros_like(minimum), minimum)
        error = (weights * (q * scale + minimum - x).pow(2)).sum(-1, keepdim=True)
        better = ok & (error < best_error) & (scale > 0)
        best_scale, best_min = torch.where(better, scale, best_scale), torch.where(better, minimum, best_min)
        best_error = torch.where(better, error, best_error)
    return best_scale.squeeze(-1), best_min.squeeze(-1)


def _search_symmetric(x: torch.Tensor, weights: torch.Tensor, half: int, steps: int = 9) -> torch.Tensor:
    """Per group: signed scale with ``x ≈ (q - half)·scale``, q ∈ [0, 2·half - 1], weighted least squares over
    candidate assignments ``round(x · (-(half + 0.1 t) / max))`` (ggml's make_qx_quants)."""
    index = x.abs().argmax(-1, keepdim=True)
    peak = torch.gather(x, -1, index)
    peak = torch.where(peak == 0, torch.full_like(peak, 1e-30), peak)
    best_scale, best_error = None, None
    for step in range(-steps, steps + 1):
        inverse = -(half + 0.1 * step) / peak
        q = torch.clamp(torch.round(inverse * x), -half, half - 1)
        sqq, sqx = (weights * q * q).sum(-1, keepdim=True), (weights * q * x).sum(-1, keepdim=True)
        scale = sqx / sqq.clamp(min=1e-30)
        error = (weights * (q * scale - x).pow(2)).sum(-1, keepdim=True)
        if best_scale is None:
            best_scale, best_error = scale, error
        else:
            better = error < best_error
            best_scale, best_error = torch.where(better, scale, best_scale), torch.where(better, error, best_error)
    return best_scale.squeeze(-1)


def _fit_k_affine(qmax: int) -> Callable:
    def fit(w: torch.Tensor, importance=None) -> dict:
        rows, cols = w.shape
        x = w.reshape(rows, cols // 32, 32)
        scale, minimum = _search_affine(x, _group_weights(w, importance, 32), qmax)
        scale, offset = scale.reshape(rows, -1, 8), (-minimum).reshape(rows, -1, 8)  # [rows, supers, 8]
        max_scale, max_offset = scale.max(-1).values, offset.max(-1).values
        sc = torch.clamp(torch.round(scale * _inverse(max_scale / 63).unsqueeze(-1)), 0, 63)
        mn = torch.clamp(torch.round(offset * _inverse(max_offset / 63).unsqueeze(-1)), 0, 63)
        return {"d": _fp16(max_scale / 63), "dmin": _fp16(max_offset / 63), "sc": sc, "mn": mn}
    return fit


def _k_affine_levels(grid):
    scale = (grid["d"].unsqueeze(-1) * grid["sc"]).flatten(1)
    return scale, -(grid["dmin"].unsqueeze(-1) * grid["mn"]).flatten(1)


def _fit_q6_k(w: torch.Tensor, importance=None) -> dict:
    rows, cols = w.shape
    x = w.reshape(rows, cols // 16, 16)
    scale = _search_symmetric(x, _group_weights(w, importance, 16), 32).reshape(rows, -1, 16)
    index = scale.abs().argmax(-1, keepdim=True)
    peak = torch.gather(scale, -1, index).squeeze(-1)
    inverse = _inverse(peak / -128)  # the largest |scale| gets sc = -128
    sc = torch.clamp(torch.round(scale * inverse.unsqueeze(-1)), -128, 127)
    return {"d": _fp16(peak / -128), "sc": sc}


def _q6_k_levels(grid):
    scale = (grid["d"].unsqueeze(-1) * grid["sc"]).flatten(1)
    return scale, -32 * scale


def _encode_on_levels(fmt_levels: Callable, qmax: int) -> Callable:
    def encode(w, grid, group):
        scale, offset = (_expand(t, group, w.shape[1]) for t in fmt_levels(grid))
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        return torch.where(scale == 0, torch.zeros_like(w), torch.clamp(torch.round((w - offset) / safe), 0, qmax))
    return encode


def _k_scales(grid) -> torch.Tensor:
    """Q4_K/Q5_K's 12 bytes of 6-bit sub-block scales and mins: the low 6 bits of groups 0-3 in bytes 0-3 (scales)
    and 4-7 (mins), groups 4-7's low nibbles in bytes 8-11, their top 2 bits in the top bits of bytes 0-7."""
    sc, mn = grid["sc"].to(torch.uint8), grid["mn"].to(torch.uint8)
    first = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    second = mn[..., :4] | ((mn[..., 4:] >> 4) << 6)
    third = (sc[..., 4:] & 0x0F) | ((mn[..., 4:] & 0x0F) << 4)
    return torch.cat([first, second, third], -1)


def _k_pairs(codes: torch.Tensor) -> torch.Tensor:
    """Each 64 weights of a super-block as 32 bytes: weights 0-31 in the low nibbles, 32-63 in the high ones."""
    pairs = codes.reshape(codes.shape[0], -1, 4, 2, 32).to(torch.uint8)
    return _nibbles(pairs[..., 0, :], pairs[..., 1, :]).flatten(-2)


def _pack_q4_k(codes, grid):
    rows = codes.shape[0]
    head = [_fp16_bytes(grid["d"].unsqueeze(-1)), _fp16_bytes(grid["dmin"].unsqueeze(-1)), _k_scales(grid)]
    return torch.cat(head + [_k_pairs(codes)], -1).reshape(rows, -1)


def _pack_q5_k(codes, grid):
    rows = codes.shape[0]
    groups = codes.reshape(rows, -1, 8, 32).to(torch.uint8)
    qh = _bits((groups >> 4) & 1, 8)  # bit g of byte l: the fifth bit of weight l of group g
    head = [_fp16_bytes(grid["d"].unsqueeze(-1)), _fp16_bytes(grid["dmin"].unsqueeze(-1)), _k_scales(grid)]
    return torch.cat(head + [qh, _k_pairs(codes)], -1).reshape(rows, -1)


def _pack_q6_k(codes, grid):
    """Each half (128 weights) of a super-block: 64 bytes of low nibbles (weights 0-63 low, 64-127 high) and
    32 bytes of top 2 bits (weight 32·k + l in bits 2k, 2k+1 of byte l); then 16 int8 scales and fp16 d."""
    rows = codes.shape[0]
    halves = codes.reshape(rows, -1, 2, 128).to(torch.uint8)
    low = halves & 0x0F
    ql = _nibbles(low[..., :64], low[..., 64:])
    top = (halves >> 4).reshape(rows, -1, 2, 4, 32)
    qh = top[..., 0, :] | (top[..., 1, :] << 2) | (top[..., 2, :] << 4) | (top[..., 3, :] << 6)
    scales = grid["sc"].to(torch.int8).view(torch.uint8)
    return torch.cat([ql.flatten(-2), qh.flatten(-2), scales, _fp16_bytes(grid["d"].unsqueeze(-1))], -1).reshape(rows, -1)


FORMATS = {
    f.name: f for f in [
        BlockFormat("Q8_0", T.Q8_0, 8, 32, 32, _fit_q8, _offset_levels(128), _encode_q8, _pack_q8),
        BlockFormat("Q4_0", T.Q4_0, 4, 32, 32, _fit_symmetric(8), _offset_levels(8), _encode_centred(8, 15), _pack_4),
        BlockFormat("Q4_1", T.Q4_1, 4, 32, 32, _fit_min_max(15), _min_levels, _encode_from_min(15), _pack_4),
        BlockFormat("Q5_0", T.Q5_0, 5, 32, 32, _fit_symmetric(16), _offset_levels(16), _encode_centred(16, 31), _pack_5),
        BlockFormat("Q5_1", T.Q5_1, 5, 32, 32, _fit_min_max(31), _min_levels, _encode_from_min(31), _pack_5),
        BlockFormat("Q4_K", T.Q4_K, 4, 32, SUPER, _fit_k_affine(15), _k_affine_levels,
                    _encode_on_levels(_k_affine_levels, 15), _pack_q4_k),
        BlockFormat("Q5_K", T.Q5_K, 5, 32, SUPER, _fit_k_affine(31), _k_affine_levels,
                    _encode_on_levels(_k_affine_levels, 31), _pack_q5_k),
        BlockFormat("Q6_K", T.Q6_K, 6, 16, SUPER, _fit_q6_k, _q6_k_levels, _encode_on_levels(_q6_k_levels, 63), _pack_q6_k),
    ]
}

# What llama.cpp's quantizer writes when a row's length is not a multiple of a type's block (llama-quant.cpp):
# each k-quant falls back to the 32-block type of about the same size; F16 if even that does not divide.
FALLBACKS = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def pack_rows(fmt: BlockFormat, codes: torch.Tensor, grid: dict) -> np.ndarray:
    """The GGML bytes of ``codes [rows, cols]`` on ``grid``: ``uint8 [rows, fmt.row_bytes(cols)]``."""
    out = fmt.pack(codes, grid).numpy()
    assert out.shape[1] == fmt.row_bytes(codes.shape[1])
    return out

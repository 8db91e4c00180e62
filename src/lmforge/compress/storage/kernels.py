"""A small native CPU kernel for low-batch matmuls with packed 4-bit and 8-bit weights.

Why our own: on x86 CPUs, torch 2.13's ``aten._weight_int4pack_mm_for_cpu`` and
``aten._weight_int8pack_mm`` measured 3-30× slower than the dense float32 matmul at
batch 1 with float32 activations (bf16 activations: int4 still 3× slower). Decoding is
a sequence of matrix-vector products that are bound by reading the weights, so a plain
loop over packed bytes (vectorized by the compiler, threads by OpenMP) is what makes
the smaller model also the faster one.

The kernel is C, compiled on first use with the system compiler into the lmforge cache
and called through ctypes. Without a compiler ``available()`` is False and the quantized
linear falls back to dequantize-then-matmul (correct, slower).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.io import write_json
from lmforge.paths import cache_dir

log = logging.getLogger(__name__)

# Matmuls smaller than this (multiply-adds) run on the calling thread. OpenMP shares torch's thread pool
# (one libgomp), so on an idle machine a second thread costs microseconds; on a machine whose cores are
# all busy, waking it can cost milliseconds: set LMFORGE_QMM_PARALLEL_MIN_MACS higher there.
PARALLEL_MIN_MACS = int(os.environ.get("LMFORGE_QMM_PARALLEL_MIN_MACS", str(1 << 18)))

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#ifndef TILED_MIN_ROWS
#define TILED_MIN_ROWS 4
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* out[m, n] = sum_g scale[n, g] * (sum_{k in g} x[m, k] * q[n, k] - zero[n, g] * sum_{k in g} x[m, k])
   q: two 4-bit codes per byte (low nibble: even k) or one 8-bit code per byte.
   prep[m] holds x de-interleaved for 4-bit (even columns, then odd) followed by the G group sums. */

static void prepare(const float* x, int64_t M, int64_t K, int64_t gs, int packed4, float* prep) {
    const int64_t G = K / gs, half = K / 2, stride = K + G;
    for (int64_t m = 0; m < M; m++) {
        const float* xm = x + m * K;
        float* pm = prep + m * stride;
        if (packed4)
            for (int64_t j = 0; j < half; j++) { pm[j] = xm[2 * j]; pm[half + j] = xm[2 * j + 1]; }
        else
            for (int64_t k = 0; k < K; k++) pm[k] = xm[k];
        for (int64_t g = 0; g < G; g++) {
            float sum = 0.0f;
            for (int64_t k = g * gs; k < (g + 1) * gs; k++) sum += xm[k];
            pm[K + g] = sum;
        }
    }
}

static float row_u4(const float* pm, const uint8_t* row, const float* sc, const uint8_t* zr, int64_t K, int64_t gs) {
    const int64_t G = K / gs, half = K / 2, ghalf = gs / 2;
    const float* even = pm;
    const float* odd = pm + half;
    const float* gsum = pm + K;
    float total = 0.0f;
#ifdef __AVX512F__
    if (ghalf % 16 == 0) {
        __m512 vt = _mm512_setzero_ps();
        const __m512i low = _mm512_set1_epi32(15);
        for (int64_t g = 0; g < G; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int64_t j = g * ghalf; j < (g + 1) * ghalf; j += 16) {
                __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(row + j)));
                __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(b, low));
                __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
                acc = _mm512_fmadd_ps(lo, _mm512_loadu_ps(even + j), acc);
                acc = _mm512_fmadd_ps(hi, _mm512_loadu_ps(odd + j), acc);
            }
            vt = _mm512_fmadd_ps(acc, _mm512_set1_ps(sc[g]), vt);
            total -= sc[g] * (float)zr[g] * gsum[g];
        }
        return total + _mm512_reduce_add_ps(vt);
    }
#endif
    for (int64_t g = 0; g < G; g++) {
        float acc = 0.0f;
        for (int64_t j = g * ghalf; j < (g + 1) * ghalf; j++)
            acc += even[j] * (float)(row[j] & 15) + odd[j] * (float)(row[j] >> 4);
        total += sc[g] * (acc - (float)zr[g] * gsum[g]);
    }
    return total;
}

static float row_u8(const float* pm, const uint8_t* row, const float* sc, const uint8_t* zr, int64_t K, int64_t gs) {
    const int64_t G = K / gs;
    const float* gsum = pm + K;
    float total = 0.0f;
#ifdef __AVX512F__
    if (gs % 16 == 0) {
        __m512 vt = _mm512_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int64_t k = g * gs; k < (g + 1) * gs; k += 16) {
                __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(row + k))));
                acc = _mm512_fmadd_ps(q, _mm512_loadu_ps(pm + k), acc);
            }
            vt = _mm512_fmadd_ps(acc, _mm512_set1_ps(sc[g]), vt);
            total -= sc[g] * (float)zr[g] * gsum[g];
        }
        return total + _mm512_reduce_add_ps(vt);
    }
#endif
    for (int64_t g = 0; g < G; g++) {
        float acc = 0.0f;
        for (int64_t k = g * gs; k < (g + 1) * gs; k++) acc += pm[k] * (float)row[k];
        total += sc[g] * (acc - (float)zr[g] * gsum[g]);
    }
    return total;
}

/* out[m, r] = x[m0 + m] . tile[r0 + r] for a block of up to 4 × 4; a full block keeps its 16 sums in registers */
static void dots4x4(const float* x, int64_t m0, int64_t mb, const float* tile, int64_t r0, int64_t rb, int64_t K,
                    float* out, int64_t N) {
#ifdef __AVX512F__
    if (mb == 4 && rb == 4 && K % 16 == 0) {
        __m512 acc[4][4];
        for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) {
            __m512 w0 = _mm512_loadu_ps(tile + (r0 + 0) * K + k), w1 = _mm512_loadu_ps(tile + (r0 + 1) * K + k);
            __m512 w2 = _mm512_loadu_ps(tile + (r0 + 2) * K + k), w3 = _mm512_loadu_ps(tile + (r0 + 3) * K + k);
            for (int i = 0; i < 4; i++) {
                __m512 xv = _mm512_loadu_ps(x + (m0 + i) * K + k);
                acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
                acc[i][2] = _mm512_fmadd_ps(xv, w2, acc[i][2]);
                acc[i][3] = _mm512_fmadd_ps(xv, w3, acc[i][3]);
            }
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) out[(m0 + i) * N + r0 + j] = _mm512_reduce_add_ps(acc[i][j]);
        return;
    }
#endif
    for (int64_t i = 0; i < mb; i++)
        for (int64_t j = 0; j < rb; j++) {
            const float* xm = x + (m0 + i) * K;
            const float* wr = tile + (r0 + j) * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += xm[k] * wr[k];
            out[(m0 + i) * N + r0 + j] = acc;
        }
}

/* Several rows of x: decode a tile of TILE weight rows to float once, then take every x row's dot product with
   them, so the unpacking is paid once per weight row, not once per (row of x, weight row). */
#define TILE 16
static void qmm_tiled(const float* x, int64_t M, int64_t K, const uint8_t* w, const float* scales,
                      const uint8_t* zeros, int64_t N, int64_t gs, int packed4, float* out, int threads) {
    const int64_t G = K / gs, row_bytes = packed4 ? K / 2 : K, tiles = (N + TILE - 1) / TILE;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float* tile = (float*)malloc(sizeof(float) * TILE * K);
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < tiles; t++) {
            const int64_t n0 = t * TILE, rows = N - n0 < TILE ? N - n0 : TILE;
            for (int64_t r = 0; r < rows; r++) {
                const uint8_t* row = w + (n0 + r) * row_bytes;
                const float* sc = scales + (n0 + r) * G;
                const uint8_t* zr = zeros + (n0 + r) * G;
                float* dst = tile + r * K;
                for (int64_t g = 0; g < G; g++) {
                    const float s = sc[g], z = (float)zr[g];
                    if (packed4)
                        for (int64_t j = g * gs / 2; j < (g + 1) * gs / 2; j++) {
                            dst[2 * j] = s * ((float)(row[j] & 15) - z);
                            dst[2 * j + 1] = s * ((float)(row[j] >> 4) - z);
                        }
                    else
                        for (int64_t k = g * gs; k < (g + 1) * gs; k++) dst[k] = s * ((float)row[k] - z);
                }
            }
            for (int64_t m0 = 0; m0 < M; m0 += 4)
                for (int64_t r0 = 0; r0 < rows; r0 += 4)
                    dots4x4(x, m0, M - m0 < 4 ? M - m0 : 4, tile, r0, rows - r0 < 4 ? rows - r0 : 4, K, out + n0, N);
        }
        free(tile);
    }
}

void qmm(const float* x, int64_t M, int64_t K, const uint8_t* w, const float* scales, const uint8_t* zeros,
         int64_t N, int64_t gs, int packed4, float* out, int threads) {
    if (M >= TILED_MIN_ROWS) { qmm_tiled(x, M, K, w, scales, zeros, N, gs, packed4, out, threads); return; }
    const int64_t G = K / gs, stride = K + G, row_bytes = packed4 ? K / 2 : K;
    float* prep = (float*)malloc(sizeof(float) * M * stride);
    prepare(x, M, K, gs, packed4, prep);
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            out[m * N + n] = packed4
                ? row_u4(prep + m * stride, w + n * row_bytes, scales + n * G, zeros + n * G, K, gs)
                : row_u8(prep + m * stride, w + n * row_bytes, scales + n * G, zeros + n * G, K, gs);
    free(prep);
}
"""

_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]


def _cpu_signature() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{flags}"


def source_digest() -> str:
    """sha256 of what the library is built from: the C source, the flags and the CPU it is built for."""
    return hashlib.sha256((_SOURCE + " ".join(_FLAGS) + _cpu_signature()).encode()).hexdigest()


def _stamp(library: Path) -> Path:
    return library.with_suffix(".json")


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_library_matches(library: Path, digest: str) -> bool:
    """True if ``library`` exists and its stamp says it was built from ``digest`` and its bytes are unchanged since.

    A cached shared object is loaded into the process and called with raw pointers: one left by another
    lmforge version, truncated by a full disk or edited afterwards must be rebuilt, never loaded.
    """
    try:
        stamp = json.loads(_stamp(library).read_text())
        return stamp.get("source_sha256") == digest and stamp.get("library_sha256") == _file_sha256(library)
    except (OSError, ValueError):
        return False


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("LMFORGE_NO_NATIVE_KERNELS"):
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler found; quantized linears use the slower dequantize-then-matmul path")
        return None
    digest = source_digest()
    target = cache_dir() / "kernels" / f"lmforge_qmm_{digest[:16]}.so"
    if not cached_library_matches(target, digest):  # missing, or not the library this source built: (re)build
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            source = Path(tmp) / "qmm.c"
            source.write_text(_SOURCE)
            built = Path(tmp) / "qmm.so"
            result = subprocess.run([compiler, *_FLAGS, str(source), "-o", str(built)], capture_output=True, text=True)
            if result.returncode != 0:
                log.warning("could not compile the quantized-matmul kernel (%s); using the slower path",
                            (result.stderr.strip().splitlines() or ["unknown error"])[-1])
                return None
            os.replace(built, target)
            write_json(_stamp(target), {"source_sha256": digest, "library_sha256": _file_sha256(target)})
    library = ctypes.CDLL(str(target))
    library.qmm.restype = None
    library.qmm.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    return library


def available() -> bool:
    return _library() is not None


def check_operands(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   storage_bits: int, group_size: int) -> None:
    """Refuse, before any pointer reaches C, every tensor whose dtype, shape, layout or device the kernel does not read.

    The kernel trusts its pointers: fp16 scales read as float32 (``model.half()`` on a quantized model)
    or a strided view would read past the end of the buffer instead of failing.
    """
    expected = {"x": (x, torch.float32), "qweight": (packed, torch.uint8), "scales": (scales, torch.float32),
                "zeros": (zeros, torch.uint8)}
    for name, (tensor, dtype) in expected.items():
        if tensor.dtype != dtype:
            raise LmforgeError(f"packed kernel: {name} is {tensor.dtype}, it needs {dtype}")
        if tensor.device.type != "cpu":
            raise LmforgeError(f"packed kernel: {name} is on {tensor.device}, it runs on the CPU")
        if not tensor.is_contiguous() or tensor.ndim != 2:
            raise LmforgeError(f"packed kernel: {name} must be a contiguous 2-D tensor, got shape {tuple(tensor.shape)} "
                               f"strides {tensor.stride()}")
    if storage_bits not in (4, 8):
        raise LmforgeError(f"packed kernel: storage of {storage_bits} bits; it reads 4 or 8")
    rows, cols = x.shape
    n_out = scales.shape[0]
    if group_size <= 0 or cols % group_size or (storage_bits == 4 and group_size % 2):
        raise LmforgeError(f"packed kernel: group size {group_size} does not divide the input width {cols}")
    shapes = {"qweight": (packed, (n_out, cols * storage_bits // 8)), "scales": (scales, (n_out, cols // group_size)),
              "zeros": (zeros, (n_out, cols // group_size))}
    for name, (tensor, shape) in shapes.items():
        if tuple(tensor.shape) != shape:
            raise LmforgeError(f"packed kernel: {name} has shape {tuple(tensor.shape)}, expected {shape} for input width {cols}")


def packed_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                  storage_bits: int, group_size: int) -> torch.Tensor:
    """``x [M, K] float32 @ dequant(packed).T`` → ``[M, N]`` float32, on CPU, with the native kernel."""
    library = _library()
    x = x.contiguous()
    check_operands(x, packed, scales, zeros, storage_bits, group_size)
    rows, cols = x.shape
    n_out = scales.shape[0]
    out = torch.empty(rows, n_out, dtype=torch.float32)
    threads = torch.get_num_threads() if rows * cols * n_out >= PARALLEL_MIN_MACS else 1
    library.qmm(x.data_ptr(), rows, cols, packed.data_ptr(), scales.data_ptr(), zeros.data_ptr(), n_out, group_size,
                int(storage_bits == 4), out.data_ptr(), threads)
    return out

"""The packed int4/int8 kernel against dequantize-then-matmul, by the number of rows of x (batch × tokens).

QuantLinear multiplies with the native kernel up to ``KERNEL_MAX_ROWS`` rows and dequantizes above; this
measures both paths on SmolLM2-135M's shapes (an MLP up-projection, 576 → 1536, int4 g64; the int8 output
head, 576 → 49152) so that limit is a measured one. Both paths run in this process on the same module and
inputs, timed by the same clock (median of ``--repeats`` after a warm-up); outputs are checked equal.

    flock /tmp/lmforge-heavy.lock python benchmarks/packed_kernel_rows.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmforge.cli.common import print_table
from lmforge.compress.storage import qlinear
from provenance import save_result

SHAPES = {"mlp up 576→1536 int4 g64": (1536, 576, 4), "lm_head 576→49152 int8 g64": (49152, 576, 8)}


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,16,32,128,512,1024,2048")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/packed_kernel_rows.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (n_out, n_in, bits) in SHAPES.items():
        codes = torch.randint(0, 2 ** bits, (n_out, n_in), dtype=torch.uint8, generator=g)
        layer = qlinear.QuantLinear.from_codes(codes, torch.rand(n_out, n_in // 64, generator=g) / 100,
                                               torch.full((n_out, n_in // 64), 2 ** (bits - 1)), bits)
        for m in map(int, args.rows.split(",")):
            x = torch.randn(m, n_in, generator=g)
            results = {}
            for path, limit in (("kernel", 1 << 30), ("dequantize", 0)):
                qlinear.KERNEL_MAX_ROWS = limit
                results[path] = (timed(lambda: layer(x), args.repeats), layer(x))
            gap = (results["kernel"][1] - results["dequantize"][1]).abs().max().item()
            scale = results["dequantize"][1].abs().max().item()
            rows.append({"shape": name, "rows": m, "kernel_ms": 1e3 * results["kernel"][0],
                         "dequantize_ms": 1e3 * results["dequantize"][0],
                         "speedup": results["dequantize"][0] / results["kernel"][0], "max_rel_diff": gap / scale})
    print_table(f"packed kernel vs dequantize-then-matmul, {args.threads} threads",
                ["shape", "rows", "kernel ms", "dequantize ms", "kernel speed-up", "max rel diff"],
                [(r["shape"], r["rows"], r["kernel_ms"], r["dequantize_ms"], r["speedup"], r["max_rel_diff"]) for r in rows])
    save_result(args.out, {"threads": args.threads, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()

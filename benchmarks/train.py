"""Training throughput: `lmforge train`'s loop against a minimal plain-PyTorch loop (nanoGPT-like).

Both train the same llama shape on the same packed WikiText-2 windows with AdamW,
gradient clipping and the same batch; the baseline is the smallest loop that
does that (no schedule, no eval, no bookkeeping). Runs alternate, and the
median of the repeats is reported with MFU against this CPU's measured matmul peak.

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/train.py --out benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lmforge.cli.common import print_table
from provenance import save_result
from lmforge.energy import peak_flops, training_flops
from lmforge.train import prepare_data, pretrain, train_config
from lmforge.train.pretrain import build_model, non_embedding_params


def plain_loop(config, data, steps: int) -> float:
    """nanoGPT's train loop, reduced to its core; returns tokens/s over the timed steps."""
    model = build_model(config, None, torch.device("cpu")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    start = None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        batch = data.train[torch.randint(0, len(data.train), (config.batch_size,), generator=generator)]
        logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * config.tokens_per_step / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = train_config({
        "model": {"hidden_size": args.width, "layers": args.layers, "heads": max(1, args.width // 32),
                  "kv_heads": max(1, args.width // 32), "intermediate_size": 16 * round(8 / 3 * args.width / 16),
                  "vocab_size": 2048, "context_length": args.context_length},
        "corpus": "wikitext2", "batch_size": args.batch_size, "max_steps": args.steps + 1,
        "eval_interval": 10**9, "log_interval": 10**9, "warmup_steps": 2,
    })
    tokenizer, data = prepare_data(config)
    lmforge_rates, plain_rates = [], []
    for _ in range(args.repeats):
        lmforge_rates.append(pretrain(config, tokenizer=tokenizer, data=data, log=None).tokens_per_s)
        plain_rates.append(plain_loop(config, data, args.steps))

    model = build_model(config, tokenizer, torch.device("cpu"))
    shape = config.model
    flops_per_token = training_flops(non_embedding_params(model) + shape.vocab_size * shape.hidden_size, 1,
                                     shape.layers, shape.hidden_size, shape.context_length)
    peak, source = peak_flops("cpu")
    rows = []
    for name, rates in (("lmforge train", lmforge_rates), ("plain PyTorch loop", plain_rates)):
        rate = statistics.median(rates)
        rows.append((name, rate, rate * flops_per_token / peak, rate / statistics.median(plain_rates)))
    title = (f"training throughput: {args.width}x{args.layers} llama, {config.tokens_per_step} tokens/step, "
             f"{args.threads} thread(s), median of {args.repeats}; MFU vs {source} ({peak / 1e9:.1f} GFLOP/s)")
    print_table(title, ["loop", "tokens/s", "MFU", "vs plain"], rows)
    save_result(args.out, {"config": config.to_dict(), "threads": args.threads, "peak_flops": peak,
                         "peak_flops_source": source, "lmforge_tokens_per_s": lmforge_rates,
                         "plain_tokens_per_s": plain_rates, "flops_per_token": flops_per_token,
                         "rows": [dict(zip(["loop", "tokens_per_s", "mfu", "ratio"], r)) for r in rows]})  # random data, no files


if __name__ == "__main__":
    main()

"""Recovery by distillation after pruning SmolLM2-135M, within a fixed CPU time budget.

The teacher is the dense model, the student its pruned copy: 50 % Wanda (zeros kept by
masking), or with ``--prune structured`` a smaller dense model (``--heads``/``--mlp``
fractions removed) trained as a student of the larger teacher. Training text: web_articles gold text (not the evaluation set). Perplexity:
WikiText-2 raw test, windows of 2048 tokens, the first ``--windows`` windows, measured
for dense, pruned, and the student along the way (the recovery curve).
Recovered fraction = (ppl_pruned − ppl_student) / (ppl_pruned − ppl_dense).

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/distill.py --minutes 20 --out benchmarks/results/distill.json
"""

from __future__ import annotations

import argparse
import copy

import torch

from lmforge.cli.common import console, print_table
from lmforge.paths import data_dir
from provenance import save_result
from lmforge.compress.pruning import Wanda, prune
from lmforge.compress.pruning.structured import Structured, structured_prune
from lmforge.data import calibration_batches, load_corpus
from lmforge.evaluate import perplexity
from lmforge.models import load_model
from lmforge.train.distill import DistillConfig, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget (evaluations excluded)")
    parser.add_argument("--steps", type=int, default=80, help="schedule length; training stops earlier if the time runs out")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--prune", choices=("wanda", "structured"), default="wanda")
    parser.add_argument("--pattern", default="unstructured", help="wanda: unstructured or N:M")
    parser.add_argument("--heads", type=float, default=0.0, help="structured: fraction of query heads removed per group")
    parser.add_argument("--mlp", type=float, default=0.25, help="structured: fraction of MLP channels removed")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=2048, help="evaluation window and calibration sample length")
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/distill.json")
    args = parser.parse_args()
    torch.manual_seed(0)

    teacher, tokenizer = load_model(args.model)
    wikitext, web = load_corpus("wikitext2"), load_corpus("web_articles")

    def ppl(model) -> float:
        return perplexity(model, tokenizer, wikitext, protocol="windows", seqlen=args.seqlen, limit=args.windows).ppl

    dense_ppl = ppl(teacher)
    student = copy.deepcopy(teacher)
    calibration = calibration_batches(tokenizer, web, args.calib_samples, args.seqlen, seed=0)
    if args.prune == "structured":
        shape = structured_prune(student, Structured(args.heads, args.mlp), calibration).to_dict()
        title = f"structured, heads {args.heads:g}, MLP {args.mlp:g}: {shape['parameters_after'] / shape['parameters_before']:.0%} of the parameters"
    else:
        shape = prune(student, Wanda(0.5, pattern=args.pattern), calibration).to_dict()
        title = f"50 % Wanda ({args.pattern})"
    config = DistillConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                           warmup_steps=5, temperature=args.temperature, eval_every=args.eval_every,
                           max_seconds=args.minutes * 60, seed=0)
    def show(point: dict) -> None:
        console.print(f"step {point['step']:>4}  {point['seconds'] / 60:5.1f} min  loss {point['loss']:.4f}  ppl {point['eval']:.2f}")

    result = distill(student, teacher, web, config, tokenizer=tokenizer, evaluate=ppl, log=show)
    pruned_ppl, final_ppl = result.curve[0]["eval"], result.curve[-1]["eval"]
    recovered = (pruned_ppl - final_ppl) / (pruned_ppl - dense_ppl)
    summary = {
        "protocol": {"eval": f"wikitext2 windows {args.seqlen} × {args.windows}", "train": "web_articles", "student": title,
                     "calibration": f"web_articles {tuple(calibration.shape)}", **vars(args)},
        "pruning": {k: v for k, v in shape.items() if k not in {"linears", "kept_heads", "kept_channels"}},
        "dense_ppl": dense_ppl, "pruned_ppl": pruned_ppl, "distilled_ppl": final_ppl, "recovered_fraction": recovered,
        "train_seconds": result.seconds, "steps": result.steps, "tokens": result.tokens, "curve": result.curve,
    }
    print_table(f"distillation after {title}, wikitext2 {args.seqlen} × {args.windows}",
                ["step", "train min", "loss", "ppl"],
                [(p["step"], p["seconds"] / 60, p["loss"], p["eval"]) for p in result.curve])
    print_table("recovery", ["dense ppl", "pruned ppl", "distilled ppl", "recovered"],
                [(dense_ppl, pruned_ppl, final_ppl, f"{recovered * 100:.0f} %")])
    save_result(args.out, summary, models=[args.model],
                data=[data_dir() / "wikitext2" / "wiki.test.raw", data_dir() / "web_articles"])


if __name__ == "__main__":
    main()

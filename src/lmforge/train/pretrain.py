"""Pretraining a llama-architecture model: the whole loop, visible, in one function.

One process or many: under ``torchrun`` every process takes its slice of each
global batch and DistributedDataParallel averages the gradients (gloo on CPU,
nccl on GPU), so N processes follow the curve of one process with the same
global batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lmforge.data import Corpus
from lmforge.energy import peak_flops, training_flops
from lmforge.errors import LmforgeError
from lmforge.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lmforge.train.config import TrainConfig
from lmforge.train.data import PackedData, load_tokenizer, tokenize_documents, train_tokenizer, training_corpus


@dataclass
class TrainResult:
    out_dir: Path | None
    steps: int
    losses: list[float]  # mean train loss of every optimizer step, from step 1
    eval_losses: list[tuple[int, float]]  # (step, validation loss)
    params: int
    non_embedding_params: int
    tokens: int  # tokens trained on in this call and the checkpoint it resumed
    flops: float
    tokens_per_s: float
    mfu: float
    peak_flops: float
    peak_flops_source: str
    train_seconds: float
    world_size: int = 1
    corpus_tokens: int = 0
    checkpoint: Path | None = None
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)

    @property
    def final_eval_loss(self) -> float:
        return self.eval_losses[-1][1] if self.eval_losses else float("nan")

    def metrics(self) -> dict:
        return {
            "steps": self.steps, "final_train_loss": self.losses[-1] if self.losses else None,
            "final_eval_loss": self.final_eval_loss, "params": self.params,
            "non_embedding_params": self.non_embedding_params, "tokens": self.tokens, "train_flops": self.flops,
            "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "peak_flops": self.peak_flops,
            "peak_flops_source": self.peak_flops_source, "train_seconds": self.train_seconds,
            "world_size": self.world_size, "corpus_tokens": self.corpus_tokens,
            "eval_losses": self.eval_losses,
        }


def distributed_context() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group torchrun describes, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def prepare_data(config: TrainConfig, corpus: Corpus | None = None, tokenizer=None) -> tuple[object, PackedData]:
    """The tokenizer (given, reused from a model, or trained on the corpus) and the packed corpus."""
    corpus = corpus or training_corpus(config.corpus, config.text_field)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else train_tokenizer(corpus, config.model.vocab_size)
    if len(tokenizer) > config.model.vocab_size:
        raise LmforgeError(
            f"the tokenizer has {len(tokenizer)} tokens but model.vocab_size is {config.model.vocab_size}; "
            f"set model.vocab_size to at least {len(tokenizer)}"
        )
    stream = tokenize_documents(tokenizer, corpus)
    return tokenizer, PackedData.from_stream(stream, config.model.context_length, config.val_fraction)


def build_model(config: TrainConfig, tokenizer, device: torch.device):
    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(config.model.to_hf(tokenizer)).to(device)
    model.config.use_cache = False
    return model


def non_embedding_params(model) -> int:
    """Parameters outside the token embedding and an untied output projection (Kaplan et al.'s N)."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return total - embedding.numel() - (0 if output is embedding else output.numel())


def optimizer_for(model, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norm gains)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


def warmup_cosine(total: int, warmup: int, floor: float = 0.0) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``floor`` at ``total``."""

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


@torch.no_grad()
def evaluate_loss(model, data: PackedData, config: TrainConfig, device: torch.device, bf16: bool) -> float:
    """Mean next-token loss on the first ``eval_batches`` micro-batches of the held-out windows."""
    model.eval()
    micro = config.micro_batch_size or config.batch_size
    windows = data.val[: config.eval_batches * micro]
    total, count = 0.0, 0
    for batch in windows.split(micro):
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch[:, :-1]).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    model.train()
    return total / count


def restore_checkpoint(resume: str | os.PathLike, config: TrainConfig, tokenizer=None) -> tuple[Path, dict, object]:
    """The checkpoint folder and state to resume from, and the tokenizer saved with it (unless one is given)."""
    folder, state = load_checkpoint(resume, config)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder / "model"))
    return folder, state, tokenizer


def load_checkpoint_weights(model, folder: Path, state: dict, data: PackedData, device: torch.device) -> None:
    """Load a checkpoint's weights into ``model``, refusing one of another shape or corpus."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model" / "model.safetensors"), device=str(device))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise LmforgeError(f"checkpoint {folder} does not match the model shape; start a new run")
    if state.get("train_windows") != len(data.train):
        raise LmforgeError(
            f"checkpoint {folder} was trained on {state.get('train_windows')} windows of this "
            f"corpus, it now has {len(data.train)}; resume on the same corpus and tokenizer"
        )


def train_step(forward, model, batch: torch.Tensor, micro: int, accumulation: int, world: int, bf16: bool,
               optimizer, scheduler, grad_clip: float) -> torch.Tensor:
    """One optimizer step over ``batch`` in micro-batches of ``micro`` (gradients accumulated, synced on the last);
    returns the step's mean loss, averaged over processes."""
    step_loss = torch.zeros((), device=batch.device)
    for index, micro_batch in enumerate(batch.split(micro)):
        last_micro = index == accumulation - 1
        sync = forward.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
        with sync, torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(micro_batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), micro_batch[:, 1:].flatten())
        (loss / accumulation).backward()
        step_loss += loss.detach() / accumulation
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(step_loss, op=dist.ReduceOp.AVG)
    return step_loss


def training_state(step: int, config: TrainConfig, data: PackedData, optimizer, scheduler, losses: list[float],
                   eval_losses: list[tuple[int, float]]) -> dict:
    """Everything a resumed run needs to continue exactly: optimizer, schedule, RNG, the curves so far."""
    return {
        "step": step, "samples_seen": step * config.batch_size, "train_windows": len(data.train),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
        "losses": losses, "eval_losses": eval_losses, "config": config.to_dict(),
    }


def resume_state(state: dict, optimizer, scheduler) -> tuple[int, list[float], list[tuple[int, float]]]:
    """Restore optimizer, schedule and RNG from ``training_state``; returns the step and the curves so far."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["step"], list(state["losses"]), [tuple(e) for e in state["eval_losses"]]


def steady_tokens_per_s(trained_steps: int, train_seconds: float, warmup_seconds: float, tokens_per_step: int) -> float:
    """Throughput in the steady state: the first step (allocator and kernel warm-up) is left out when there are more."""
    steps, seconds = (trained_steps - 1, train_seconds - warmup_seconds) if trained_steps > 1 else (trained_steps, train_seconds)
    return steps * tokens_per_step / seconds if seconds > 0 else 0.0


def pretrain(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    corpus: Corpus | None = None,
    tokenizer=None,
    data: PackedData | None = None,
    resume: str | os.PathLike | None = None,
    stop_at_step: int | None = None,
    log: Callable[[str], None] | None = print,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on the corpus; save checkpoints and the final model under ``out_dir``.

    ``data`` (with its ``tokenizer``) skips tokenization, e.g. across a scaling ladder;
    ``stop_at_step`` ends early as an interruption would (the schedule still spans ``config.steps``).
    """
    rank, world, device = distributed_context()
    config.validate(world)
    log = log if (log and rank == 0) else (lambda message: None)
    out_dir = Path(out_dir) if out_dir else None

    checkpoint_state = None
    if resume:
        checkpoint_folder, checkpoint_state, tokenizer = restore_checkpoint(resume, config, tokenizer)
    if data is None:
        tokenizer, data = prepare_data(config, corpus, tokenizer)

    model = build_model(config, tokenizer, device)
    if checkpoint_state is not None:
        load_checkpoint_weights(model, checkpoint_folder, checkpoint_state, data, device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = optimizer_for(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.steps, config.warmup_steps, config.min_lr_ratio))
    losses: list[float] = []
    eval_losses: list[tuple[int, float]] = []
    start_step = 0
    if checkpoint_state is not None:
        start_step, losses, eval_losses = resume_state(checkpoint_state, optimizer, scheduler)
        log(f"resumed from {checkpoint_folder} at step {start_step}")

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(train_model) if config.compile else train_model

    bf16 = use_bf16(config.precision, device)
    per_rank = config.batch_size // world
    micro = config.micro_batch_size or per_rank
    accumulation = per_rank // micro
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    n_non_embedding = non_embedding_params(model)
    shape = config.model
    flops_per_step = training_flops(n_non_embedding + shape.vocab_size * shape.hidden_size, config.tokens_per_step,
                                    shape.layers, shape.hidden_size, shape.context_length)
    peak, peak_source = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    last_step = min(config.steps, stop_at_step or config.steps)
    log(f"model: {n_params:,} parameters ({n_non_embedding:,} non-embedding); {len(data.train):,} training windows "
        f"of {shape.context_length} tokens; {config.steps} steps of {config.tokens_per_step:,} tokens; "
        f"{world} process(es) on {device.type}{', bf16 autocast' if bf16 else ''}")

    checkpoint_dir = out_dir / "checkpoints" if out_dir else None
    if out_dir and rank == 0:
        from lmforge.io import mark_artifact

        out_dir.mkdir(parents=True, exist_ok=True)
        mark_artifact(out_dir, "training run")  # a rerun may continue here; nothing else may be written over it
    last_checkpoint = None
    train_seconds, warmup_seconds, trained_steps, window_start, window_tokens = 0.0, 0.0, 0, time.perf_counter(), 0
    for step in range(start_step, last_step):
        step_start = time.perf_counter()
        batch = data.batch(step, config.batch_size, config.seed, rank, world).to(device)
        step_loss = train_step(forward, model, batch, micro, accumulation, world, bf16, optimizer, scheduler,
                               config.grad_clip)
        losses.append(step_loss.item())
        elapsed = time.perf_counter() - step_start
        train_seconds += elapsed
        trained_steps += 1
        if trained_steps == 1:
            warmup_seconds = elapsed
        window_tokens += config.tokens_per_step
        if progress:
            progress(1)
        done = step + 1
        if done % config.log_interval == 0 or done == last_step:
            seconds = time.perf_counter() - window_start
            rate = window_tokens / seconds
            log(f"step {done}/{config.steps}  loss {losses[-1]:.4f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                f"{rate:,.0f} tok/s  MFU {rate * flops_per_step / config.tokens_per_step / (peak * world):.1%}")
            window_start, window_tokens = time.perf_counter(), 0
        if done % config.eval_interval == 0 or done == last_step:
            eval_losses.append((done, evaluate_loss(model, data, config, device, bf16)))
            log(f"step {done}: eval loss {eval_losses[-1][1]:.4f}")
            window_start = time.perf_counter()
        if checkpoint_dir and (done == last_step or (config.checkpoint_interval and done % config.checkpoint_interval == 0)):
            state = training_state(done, config, data, optimizer, scheduler, losses, eval_losses)
            if rank == 0:
                last_checkpoint = save_checkpoint(checkpoint_dir, model, tokenizer, state, config.keep_checkpoints)
            if world > 1:
                dist.barrier()
            window_start = time.perf_counter()

    tokens_per_s = steady_tokens_per_s(trained_steps, train_seconds, warmup_seconds, config.tokens_per_step)
    result = TrainResult(
        out_dir=out_dir, steps=len(losses), losses=losses, eval_losses=eval_losses, params=n_params,
        non_embedding_params=n_non_embedding, tokens=len(losses) * config.tokens_per_step,
        flops=flops_per_step * len(losses), tokens_per_s=tokens_per_s,
        mfu=tokens_per_s * flops_per_step / config.tokens_per_step / (peak * world) if peak == peak else float("nan"),
        peak_flops=peak, peak_flops_source=peak_source, train_seconds=train_seconds, world_size=world,
        corpus_tokens=data.tokens, checkpoint=last_checkpoint, model=model, tokenizer=tokenizer,
    )
    if out_dir and rank == 0 and last_step == config.steps:
        from lmforge.models import save_model

        save_model(model, tokenizer, out_dir / "model",
                   metadata={"trained_by": "lmforge train", "config": config.to_dict(), **result.metrics()})
    return result

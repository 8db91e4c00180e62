"""Knowledge distillation: train a student to match a teacher's next-token distribution.

The loss per token is T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) (Hinton et al., 2015; the
T² keeps gradient magnitudes comparable across temperatures), plus optionally
cross-entropy on the true next token and the mean squared error between matched
hidden states (TinyBERT-style; student layer i ↔ teacher layer round(i·L_t/L_s)).

Two uses: recover quality after pruning (the student is the pruned teacher; its zeros
stay zero because gradients and weights are masked every step), and train a smaller
dense student from a larger teacher (same tokenizer). The loop below is the whole
trainer: AdamW, linear warmup then cosine decay, gradient clipping.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data import Corpus
from lmforge.data.calibration import tokenize_corpus
from lmforge.errors import LmforgeError
from lmforge.models.linears import is_linear
from lmforge.train.pretrain import optimizer_for, warmup_cosine


@dataclass
class DistillConfig:
    steps: int = 200
    batch_size: int = 4
    seq_len: int = 256
    lr: float = 1e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    temperature: float = 2.0
    kl_weight: float = 1.0
    ce_weight: float = 0.0
    hidden_weight: float = 0.0
    keep_sparsity: bool = True
    max_seconds: float | None = None
    eval_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "seq_len": self.seq_len >= 2,
            "lr": self.lr > 0, "temperature": self.temperature > 0,
            "kl_weight": self.kl_weight >= 0, "ce_weight": self.ce_weight >= 0, "hidden_weight": self.hidden_weight >= 0,
        }
        if bad := [name for name, ok in checks.items() if not ok]:
            raise LmforgeError(f"distillation setting {bad[0]}={getattr(self, bad[0])} is invalid; it must be positive")
        if self.kl_weight + self.ce_weight + self.hidden_weight == 0:
            raise LmforgeError("all distillation loss weights are zero; set kl_weight (default 1.0)")


@dataclass
class DistillResult:
    steps: int
    seconds: float
    tokens: int
    curve: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student) at temperature T, averaged over tokens."""
    vocab = student_logits.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, vocab).float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.reshape(-1, vocab).float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def hidden_loss(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean MSE between student layer outputs and the teacher's at proportional depth (embeddings excluded)."""
    student_layers, teacher_layers = len(student_hidden) - 1, len(teacher_hidden) - 1
    losses = [
        F.mse_loss(student_hidden[i], teacher_hidden[round(i * teacher_layers / student_layers)])
        for i in range(1, student_layers + 1)
    ]
    return torch.stack(losses).mean()


def sparsity_masks(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """Keep-masks of the linear weights that contain exact zeros (a pruned model's pattern)."""
    masks = {}
    for module in model.modules():
        if is_linear(module) and (module.weight == 0).any():
            masks[module.weight] = module.weight != 0
    return masks


def token_windows(tokenizer, corpus: Corpus, seq_len: int) -> torch.Tensor:
    tokens = tokenize_corpus(tokenizer, corpus)
    windows = len(tokens) // seq_len
    if windows < 1:
        raise LmforgeError(f"corpus '{corpus.name}' has {len(tokens)} tokens, fewer than one window of {seq_len}; use a larger corpus")
    return tokens[: windows * seq_len].reshape(windows, seq_len)


def _check_pair(student, teacher, config: DistillConfig) -> None:
    if student.config.vocab_size != teacher.config.vocab_size:
        raise LmforgeError(
            f"student vocabulary ({student.config.vocab_size}) differs from the teacher's ({teacher.config.vocab_size}); "
            "distillation on logits needs the same tokenizer"
        )
    if config.hidden_weight and student.config.hidden_size != teacher.config.hidden_size:
        raise LmforgeError("hidden-state loss needs equal hidden sizes; set hidden_weight=0 for a narrower student")


def distill(
    student: nn.Module,
    teacher: nn.Module,
    corpus: Corpus,
    config: DistillConfig | None = None,
    *,
    tokenizer=None,
    evaluate: Callable[[nn.Module], float] | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> DistillResult:
    """Train ``student`` in place on ``corpus`` (tokenized with ``tokenizer``) to match ``teacher``.

    ``evaluate(student) -> float`` (e.g. a short perplexity) is called at step 0, every
    ``eval_every`` steps and at the end; each point lands in ``result.curve``.
    ``max_seconds`` of training (evaluations not counted) ends it early; the schedule still spans ``steps``.
    """
    config = config or DistillConfig()
    if tokenizer is None:
        raise LmforgeError("distill needs the tokenizer that student and teacher share")
    _check_pair(student, teacher, config)
    windows = token_windows(tokenizer, corpus, config.seq_len)
    generator = torch.Generator().manual_seed(config.seed)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    masks = sparsity_masks(student) if config.keep_sparsity else {}
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = optimizer_for(student, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.steps, config.warmup_steps))
    result = DistillResult(steps=0, seconds=0.0, tokens=0, config=asdict(config))
    wants_hidden = config.hidden_weight > 0

    eval_seconds = 0.0

    def train_seconds() -> float:
        return time.perf_counter() - started - eval_seconds

    def checkpoint(step: int, loss: float) -> None:
        nonlocal eval_seconds
        point = {"step": step, "seconds": train_seconds(), "loss": loss}
        if evaluate is not None:
            begun = time.perf_counter()
            student.eval()
            point["eval"] = float(evaluate(student))
            student.train()
            eval_seconds += time.perf_counter() - begun
        result.curve.append(point)
        if log:
            log(point)

    started = time.perf_counter()
    checkpoint(0, math.nan)
    student.train()
    loss_value = math.nan
    for step in range(1, config.steps + 1):
        batch = windows[torch.randint(0, len(windows), (config.batch_size,), generator=generator)]
        with torch.no_grad():
            teacher_out = teacher(input_ids=batch, output_hidden_states=wants_hidden, use_cache=False)
        student_out = student(input_ids=batch, output_hidden_states=wants_hidden, use_cache=False)
        loss = config.kl_weight * kd_loss(student_out.logits, teacher_out.logits, config.temperature)
        if config.ce_weight:
            logits = student_out.logits[:, :-1].reshape(-1, student_out.logits.shape[-1]).float()
            loss = loss + config.ce_weight * F.cross_entropy(logits, batch[:, 1:].reshape(-1))
        if wants_hidden:
            loss = loss + config.hidden_weight * hidden_loss(student_out.hidden_states, teacher_out.hidden_states)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for param, mask in masks.items():
            param.grad.mul_(mask)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for param, mask in masks.items():
                param.mul_(mask)  # AdamW's weight decay and momentum must not revive pruned weights
        loss_value = float(loss.detach())
        result.steps, result.tokens = step, result.tokens + batch.numel()
        if progress:
            progress(1)
        out_of_time = config.max_seconds is not None and train_seconds() >= config.max_seconds
        if (config.eval_every and step % config.eval_every == 0) or step == config.steps or out_of_time:
            checkpoint(step, loss_value)
        if out_of_time:
            break
    student.eval()
    result.seconds = train_seconds()
    return result

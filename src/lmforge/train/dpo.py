"""Direct preference optimization (Rafailov et al. 2023) with a frozen reference whose log-probs are computed once.

A pair is a conversation so far (the prompt, a list of chat messages) and two answers to it, one preferred
(chosen) and one not (rejected). The prompt is rendered with the model's chat template and only the answer's
tokens count. With log π the summed answer log-probabilities of the policy and log π_ref those of the frozen
reference, the implicit rewards are r = β · (log π − log π_ref) and the loss of a pair is

    sigmoid: −(1 − ε) · log σ(r_c − r_r) − ε · log σ(r_r − r_c)       (ε = label smoothing: conservative DPO)
    robust:  [−(1 − ε) · log σ(r_c − r_r) + ε · log σ(r_r − r_c)] / (1 − 2ε)   (Chowdhury et al. 2024)

(TRL 1.16's ``sigmoid`` and ``robust`` losses; its ``sigmoid`` has no ε, ours with ε = 0 is the same). The
reference never changes, so its log-probs are computed once, before training, and cached on disk. Held-out
pairs are scored before and after: reward accuracy and margin, and the plain log-likelihood preference
(log π(chosen) > log π(rejected)), which is meaningful before training too, where every reward is 0.

Anthropic HH-RLHF dialogues ("\\n\\nHuman: … \\n\\nAssistant: …", chosen and rejected differing in the last
assistant turn) are parsed into messages; jsonl with ``prompt`` (text or messages), ``chosen`` and ``rejected``
(text or messages ending with the assistant's answer) works too.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.models.linears import attention_linear_names
from lmforge.paths import data_dir
from lmforge.train.checkpoint import rng_state, set_rng_state
from lmforge.train.pretrain import warmup_cosine

LOSS_TYPES = ("sigmoid", "robust")
_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass
class DpoConfig:
    data: str = "hh_rlhf"  # the named HH-RLHF harmless pairs, or a jsonl (.gz) of preference pairs
    limit: int | None = None  # training pairs (after the held-out ones are set aside)
    eval_pairs: int = 64
    beta: float = 0.1
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"
    lora: bool = True  # False: every weight is trained
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)  # empty: every attention linear
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8  # pairs per optimizer step
    micro_batch_size: int = 2
    max_length: int = 384  # tokens of prompt + answer
    max_prompt_length: int = 256  # the prompt keeps its last tokens
    lr: float = 5e-5
    warmup_steps: int = 4
    grad_clip: float = 1.0
    checkpoint_every: int = 10
    seed: int = 0

    def validate(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise LmforgeError(f"loss_type '{self.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if self.beta <= 0:
            raise LmforgeError(f"beta must be positive (got {self.beta})")
        if not 0 <= self.label_smoothing < 0.5:
            raise LmforgeError(f"label_smoothing must be in [0, 0.5) (got {self.label_smoothing})")
        if self.batch_size % self.micro_batch_size:
            raise LmforgeError(f"micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size}")
        if self.max_prompt_length >= self.max_length:
            raise LmforgeError(f"max_prompt_length={self.max_prompt_length} must be below max_length={self.max_length}")
        if self.eval_pairs < 1:
            raise LmforgeError("eval_pairs must be at least 1 (the before/after report needs held-out pairs)")


# ---------------------------------------------------------------- data


def parse_dialogue(text: str, where: str = "dialogue") -> list[dict[str, str]]:
    """An HH-RLHF transcript as chat messages."""
    parts = _TURN.split("\n\n" + text.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise LmforgeError(f"{where}: not a '\\n\\nHuman: … \\n\\nAssistant: …' dialogue")
    return [{"role": _ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def _answer(value: Any, where: str, side: str) -> tuple[list[dict[str, str]] | None, str]:
    """(the messages before the answer, or None for plain text; the answer) of a chosen/rejected value."""
    if isinstance(value, str):
        if _TURN.search(value):
            messages = parse_dialogue(value, f"{where} '{side}'")
        else:
            return None, value
    elif isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        messages = [{"role": m["role"], "content": str(m["content"])} for m in value]
    else:
        raise LmforgeError(f"{where}: '{side}' must be text, a dialogue or a list of role/content messages")
    if not messages or messages[-1]["role"] != "assistant":
        raise LmforgeError(f"{where}: '{side}' does not end with an assistant turn")
    return messages[:-1], messages[-1]["content"]


def preference_pair(record: Any, where: str) -> dict[str, Any] | None:
    """{"prompt": messages, "chosen": text, "rejected": text} from one record; a bad one is named by ``where``.

    None for two dialogues that differ before their last turn (5 of HH-RLHF's 2,312 harmless test pairs): they
    answer different conversations, so they are no pair."""
    if not isinstance(record, dict) or "chosen" not in record or "rejected" not in record:
        fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise LmforgeError(f"{where}: a preference record needs 'chosen' and 'rejected' (it has: {fields or 'nothing'})")
    chosen_context, chosen = _answer(record["chosen"], where, "chosen")
    rejected_context, rejected = _answer(record["rejected"], where, "rejected")
    if "prompt" in record:
        prompt = record["prompt"]
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _answer(
            prompt + [{"role": "assistant", "content": ""}], where, "prompt")[0]
        prompt = prompt + (chosen_context or [])
    else:
        if chosen_context is None or rejected_context is None:
            raise LmforgeError(f"{where}: without a 'prompt', 'chosen' and 'rejected' must be whole dialogues")
        if chosen_context != rejected_context:
            return None
        prompt = chosen_context
    if not any(m["role"] == "user" for m in prompt):
        raise LmforgeError(f"{where}: the prompt has no user turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def read_preferences(source: str, data: str | os.PathLike | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every pair of a jsonl (optionally gzipped) file, or of the named set ``hh_rlhf``, and how many records
    were skipped as no pair (see ``preference_pair``)."""
    path = data_dir(data) / "hh_rlhf" / "harmless-base-test.jsonl.gz" if source == "hh_rlhf" else Path(source).expanduser()
    if not path.is_file():
        raise LmforgeError(f"preference data not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs, skipped = [], 0
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmforgeError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None
            pair = preference_pair(record, f"{path}:{line_no}")
            if pair is None:
                skipped += 1
            else:
                pairs.append(pair)
    if not pairs:
        raise LmforgeError(f"{path} has no preference pairs")
    return pairs, skipped


def render(tokenizer, prompt: list[dict[str, str]], answer: str) -> tuple[str, str]:
    """(prompt text ending where the assistant starts, the answer's text with its end-of-turn)."""
    if not tokenizer.chat_template:
        return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: ", answer + (tokenizer.eos_token or "")
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt_text):
        raise LmforgeError("the model's chat template renders a prompt differently inside a conversation")
    return prompt_text, full[len(prompt_text):]


def encode_pair(tokenizer, pair: dict[str, Any], max_length: int, max_prompt_length: int) -> dict[str, list[int]]:
    """Token ids of the prompt (its last ``max_prompt_length``) and of both answers (cut to fit ``max_length``)."""
    prompt_text, chosen = render(tokenizer, pair["prompt"], pair["chosen"])
    _, rejected = render(tokenizer, pair["prompt"], pair["rejected"])
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_ids = encode(prompt_text)[-max_prompt_length:]
    room = max_length - len(prompt_ids)
    return {"prompt_ids": prompt_ids, "chosen_ids": encode(chosen)[:room], "rejected_ids": encode(rejected)[:room]}


def collate_pairs(pairs: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences (prompt + answer) in the first half of the batch, rejected in the second, right-padded;
    ``completion_mask`` marks the answer tokens (TRL's layout)."""
    sequences = [(p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
    width = max(len(a) + len(b) for a, b in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(sequences):
        ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        attention[row, : len(prompt) + len(answer)] = 1
        completion[row, len(prompt) : len(prompt) + len(answer)] = 1
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


# ---------------------------------------------------------------- the loss


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each row's completion tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logprobs.gather(2, batch["input_ids"][:, 1:, None]).squeeze(2)
    return (token * batch["completion_mask"][:, 1:]).sum(1)


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0,
             loss_type: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the chosen and rejected rewards β · (log π − log π_ref)."""
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    margin = chosen_rewards - rejected_rewards
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(margin) - eps * F.logsigmoid(-margin)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(margin) + eps * F.logsigmoid(-margin)) / (1 - 2 * eps)
    else:
        raise LmforgeError(f"loss_type '{loss_type}' is not one of {', '.join(LOSS_TYPES)}")
    return losses, chosen_rewards, rejected_rewards


@torch.no_grad()
def pair_logps(model, pairs: list[dict[str, list[int]]], pad_id: int, micro_batch_size: int,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """[n, 2]: the summed answer log-probs (chosen, rejected) of every pair."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pairs), micro_batch_size):
        chunk = pairs[start : start + micro_batch_size]
        batch = {k: v.to(model.device) for k, v in collate_pairs(chunk, pad_id).items()}
        chosen, rejected = sequence_logps(model, batch).chunk(2)
        out.append(torch.stack([chosen, rejected], 1).cpu())
        if progress:
            progress(len(chunk))
    model.train(was_training)
    return torch.cat(out)


def reference_logps(model, pairs, pad_id: int, micro_batch_size: int, cache_dir: Path | None,
                    progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The frozen reference's log-probs, read from ``cache_dir`` when these exact pairs were scored before."""
    key = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16]
    cache = cache_dir / f"reference-logps-{key}.pt" if cache_dir else None
    if cache and cache.exists():
        return torch.load(cache)
    logps = pair_logps(model, pairs, pad_id, micro_batch_size, progress)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(logps, cache.with_suffix(".tmp"))
        os.replace(cache.with_suffix(".tmp"), cache)
    return logps


def preference_report(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> dict[str, float]:
    """Held-out pairs: reward accuracy and margin (0 before training, by definition), and the log-likelihood
    preference: how often and by how much log π(chosen) exceeds log π(rejected)."""
    rewards = beta * (policy - reference)
    margin = rewards[:, 0] - rewards[:, 1]
    logp_margin = policy[:, 0] - policy[:, 1]
    return {"pairs": len(policy), "reward_accuracy": float((margin > 0).float().mean()),
            "reward_margin": float(margin.mean()), "chosen_reward": float(rewards[:, 0].mean()),
            "rejected_reward": float(rewards[:, 1].mean()),
            "logp_accuracy": float((logp_margin > 0).float().mean()), "logp_margin": float(logp_margin.mean())}


# ---------------------------------------------------------------- training


@dataclass
class DpoResult:
    steps: int
    losses: list[float]
    train_pairs: int
    eval_pairs: int
    trainable_params: int
    total_params: int
    train_tokens: int
    seconds: float
    before: dict[str, float]
    after: dict[str, float]
    resumed_from: int = 0
    out_dir: Path | None = None
    model: object = field(default=None, repr=False)

    def metrics(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in {"model", "out_dir"}}


def split_pairs(pairs: list, config: DpoConfig) -> tuple[list, list]:
    """A seeded shuffle; the first ``eval_pairs`` are held out, up to ``limit`` of the rest train."""
    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)
    held_out, train = order[: config.eval_pairs], order[config.eval_pairs :][: config.limit]
    if not train:
        raise LmforgeError(f"{len(pairs)} pairs are too few to hold {config.eval_pairs} out and train on the rest")
    return [pairs[i] for i in train], [pairs[i] for i in held_out]


def _batches(n: int, config: DpoConfig, steps_per_epoch: int) -> Iterator[list[int]]:
    """The pair indices of every step: a seeded permutation per epoch, so step k's batch is fixed (resumable)."""
    step = 0
    while True:
        order = list(range(n))
        random.Random(config.seed * 1_000_003 + step // steps_per_epoch).shuffle(order)
        for k in range(steps_per_epoch):
            yield order[k * config.batch_size : (k + 1) * config.batch_size]
            step += 1


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_dpo_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list[float], tokens: int,
                        config: DpoConfig) -> None:
    """Everything the next step depends on, in one file written atomically."""
    state = {"step": step, "trainable": _trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(), "losses": losses, "tokens": tokens,
             "config": asdict(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def _resume(path: Path, model, optimizer, scheduler, config: DpoConfig) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    changed = [k for k, v in asdict(config).items() if k not in {"checkpoint_every", "micro_batch_size", "max_steps"}
               and state["config"].get(k) != v]
    if changed:
        raise LmforgeError(f"the checkpoint in {path.parent} was trained with other settings ({', '.join(changed)}); "
                           "use another --out or the same settings")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def _wrap_lora(model, config: DpoConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules or attention_linear_names(model), task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as exc:
        raise LmforgeError(f"LoRA cannot target {config.target_modules} in this model ({exc}); set --target-modules") from None


def dpo(model, tokenizer, config: DpoConfig, out_dir: str | os.PathLike | None = None, *,
        pairs: list[dict[str, Any]] | None = None, data: str | os.PathLike | None = None,
        log: Callable[[str], None] | None = print, progress: Callable[..., None] | None = None) -> DpoResult:
    """DPO-tune ``model`` on ``config.data`` (or ``pairs``); checkpoints, the reference cache and the result
    (adapters, or the whole model without LoRA) go under ``out_dir``; a rerun with the same ``out_dir`` and
    settings resumes from the last checkpoint. ``progress(n)`` advances by steps (``progress.set_total``)."""
    config.validate()
    log = log or (lambda message: None)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    out = Path(out_dir) if out_dir else None
    skipped = 0
    if pairs is None:
        pairs, skipped = read_preferences(config.data, data)
    train_pairs, eval_pairs = split_pairs(pairs, config)
    encode = lambda p: encode_pair(tokenizer, p, config.max_length, config.max_prompt_length)
    train_encoded, eval_encoded = [encode(p) for p in train_pairs], [encode(p) for p in eval_pairs]
    steps_per_epoch = max(1, len(train_encoded) // config.batch_size)
    steps = config.max_steps or steps_per_epoch * config.epochs
    log(f"{len(train_encoded)} training pairs, {len(eval_encoded)} held out"
        + (f" ({skipped} records skipped: their dialogues differ before the last turn)" if skipped else "")
        + f"; {steps} steps of {config.batch_size} pairs")

    cache_dir = out / "cache" if out else None
    reference_train = reference_logps(model, train_encoded, pad_id, config.micro_batch_size, cache_dir)
    reference_eval = reference_logps(model, eval_encoded, pad_id, config.micro_batch_size, cache_dir)
    before = preference_report(reference_eval, reference_eval, config.beta)
    log(f"before: held-out log-likelihood preference {before['logp_accuracy']:.3f}, margin {before['logp_margin']:.3f}")

    torch.manual_seed(config.seed)
    policy = _wrap_lora(model, config) if config.lora else model
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, config.warmup_steps))
    checkpoint = out / "checkpoint" / "state.pt" if out else None
    state = _resume(checkpoint, policy, optimizer, scheduler, config) if checkpoint else None
    first_step, losses, tokens = (state["step"], state["losses"], state["tokens"]) if state else (0, [], 0)
    if state:
        log(f"resumed from step {first_step}")
    if progress and hasattr(progress, "set_total"):
        progress.set_total(steps)
    if progress and first_step:
        progress(first_step)

    policy.train()
    start = time.perf_counter()
    batches = _batches(len(train_encoded), config, steps_per_epoch)
    for _ in range(first_step):
        next(batches)
    for step in range(first_step, steps):
        indices = next(batches)
        step_loss = 0.0
        for k in range(0, len(indices), config.micro_batch_size):
            micro = indices[k : k + config.micro_batch_size]
            batch = {key: v.to(policy.device) for key, v in collate_pairs([train_encoded[i] for i in micro], pad_id).items()}
            chosen, rejected = sequence_logps(policy, batch).chunk(2)
            reference = reference_train[micro].to(chosen.device)
            pair_losses, _, _ = dpo_loss(chosen, rejected, reference[:, 0], reference[:, 1], config.beta,
                                         config.label_smoothing, config.loss_type)
            (pair_losses.sum() / len(indices)).backward()
            step_loss += pair_losses.sum().item() / len(indices)
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        if checkpoint and ((step + 1) % config.checkpoint_every == 0 or step + 1 == steps):
            save_dpo_checkpoint(checkpoint, policy, optimizer, scheduler, step + 1, losses, tokens, config)
        if (step + 1) % 5 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}  loss {step_loss:.4f}")
        if progress:
            progress(1)
    seconds = time.perf_counter() - start

    policy.eval()
    after = preference_report(pair_logps(policy, eval_encoded, pad_id, config.micro_batch_size), reference_eval, config.beta)
    log(f"after: held-out reward accuracy {after['reward_accuracy']:.3f}, margin {after['reward_margin']:.4f}; "
        f"log-likelihood preference {after['logp_accuracy']:.3f}")
    if out:
        from lmforge.train.finetune import save_finetuned

        save_finetuned(policy, tokenizer, out / ("adapters" if config.lora else "model"),
                       {"aligned_by": "lmforge align", "method": "dpo", "config": asdict(config),
                        "held_out": {"before": before, "after": after}})
    total = sum(p.numel() for p in policy.parameters())
    return DpoResult(steps=steps, losses=losses, train_pairs=len(train_encoded), eval_pairs=len(eval_encoded),
                     trainable_params=sum(p.numel() for p in trainable), total_params=total, train_tokens=tokens,
                     seconds=seconds, before=before, after=after, resumed_from=first_step, out_dir=out, model=policy)

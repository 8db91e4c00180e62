"""LoRA fine-tuning of any causal LM with PEFT, and the forgetting report that prices it.

Instruction data (jsonl with prompt/response fields, or the named ``arc_easy``
set) is rendered with the model's chat template; the loss covers the response
tokens only. Multi-turn conversations (a ``messages`` list of system/user/assistant
turns) are rendered the same way and learned on their assistant turns only
(``lmforge.train.chat``); ``pack`` joins examples into full rows without letting
them see each other. Plain text is packed into windows and every token is learned.
Before and after training the model is scored in-domain (held-out examples)
and out-of-domain (a WikiText-2 slice): specialization is bought with
generality, and the report says at what price.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lmforge.data import load_corpus
from lmforge.models.linears import attention_linear_names
from lmforge.errors import LmforgeError
from lmforge.train.chat import IGNORE, collate_packed, encode_conversation, pack, read_conversations
from lmforge.train.data import tokenize_documents
from lmforge.train.pretrain import warmup_cosine


@dataclass
class FinetuneConfig:
    data: str = "arc_easy"  # jsonl of prompt/response, a text corpus (path or name), or the named set arc_easy
    format: str = "auto"  # auto | instruction | messages | text
    prompt_field: str = "prompt"
    response_field: str = "response"
    messages_field: str = "messages"
    pack: bool = False  # several examples per row, each attending only to itself
    cda: bool = False  # add a counterfactual copy of every example that mentions a listed word (data.curate.cda)
    cda_word_pairs: str = ""  # a word-pair file; empty: the shipped gender list
    text_field: str = "text"
    limit: int | None = None  # use the first N examples (documents for text)
    eval_fraction: float = 0.1
    max_eval_examples: int = 100
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # empty: every attention linear of the architecture
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    micro_batch_size: int = 4
    max_length: int = 256
    lr: float = 1e-3
    warmup_steps: int = 5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    merge: bool = False
    ood_corpus: str = "wikitext2"
    ood_windows: int = 8
    ood_seqlen: int = 512
    seed: int = 0

    def validate(self) -> None:
        if self.format not in {"auto", "instruction", "messages", "text"}:
            raise LmforgeError(f"format '{self.format}' is not one of auto, instruction, messages, text")
        if not self.lr > 0:
            raise LmforgeError(f"lr must be above 0 (got {self.lr})")
        if self.rank < 1 or self.alpha < 1:
            raise LmforgeError(f"LoRA rank and alpha must be positive (got rank={self.rank}, alpha={self.alpha})")
        if self.batch_size % self.micro_batch_size:
            raise LmforgeError(f"micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size}")
        if not 0 < self.eval_fraction < 1:
            raise LmforgeError(f"eval_fraction={self.eval_fraction} must be between 0 and 1")


@dataclass
class FinetuneResult:
    steps: int
    losses: list[float]
    trainable_params: int
    total_params: int
    train_examples: int
    eval_examples: int
    train_tokens: int
    train_flops: float  # ≈ 4·N·D: forward 2·N, backward through activations 2·N; frozen weights get no gradient
    seconds: float
    forgetting: dict
    counterfactual_examples: int = 0  # copies added by --cda
    out_dir: Path | None = None
    model: object = field(default=None, repr=False)

    def metrics(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in {"model", "out_dir"}}


def arc_easy_instructions(limit: int | None = None) -> list[dict[str, str]]:
    """ARC-Easy questions as instructions: the question with lettered choices → the answer letter and text."""
    from lmforge.data import load_records

    examples = []
    for record in load_records("arc_easy"):
        choices = "\n".join(f"{label}. {text}" for label, text in zip(record["labels"], record["choices"]))
        answer = record["answer"]
        examples.append({
            "prompt": f"{record['question']}\n{choices}\nAnswer with the letter and the text of the correct choice.",
            "response": f"{record['labels'][answer]}. {record['choices'][answer]}",
        })
        if limit and len(examples) >= limit:
            break
    return examples


def read_instructions(path: Path, prompt_field: str, response_field: str, limit: int | None) -> list[dict[str, str]]:
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                examples.append({"prompt": str(row[prompt_field]), "response": str(row[response_field])})
            except json.JSONDecodeError as exc:
                raise LmforgeError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None
            except (KeyError, TypeError):
                raise LmforgeError(
                    f"{path}:{line_no}: needs fields '{prompt_field}' and '{response_field}'; "
                    "name them with --prompt-field/--response-field, or use --format text"
                ) from None
            if limit and len(examples) >= limit:
                break
    if not examples:
        raise LmforgeError(f"{path} has no instruction examples")
    return examples


def _first_record_has(path: Path, field: str) -> bool:
    if path.suffix.lower() not in {".jsonl", ".ndjson", ".json"} or not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        return field in json.loads(first)
    except (json.JSONDecodeError, TypeError):
        return False


def encode_instruction(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) of one example in the model's chat format."""
    if tokenizer.chat_template:
        prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                    add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        if not full_text.startswith(prompt_text):
            raise LmforgeError("the model's chat template renders the prompt differently inside a conversation; "
                               "use --format text")
        completion_text = full_text[len(prompt_text):]
    else:
        prompt_text, completion_text = prompt + "\n", response + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_length]
    return ids, labels


def _counterfactuals(config: FinetuneConfig, items: list, swap_item: Callable, added: list[int]) -> list:
    """``items`` followed by the counterfactual copy of each one that changes (with ``config.cda``); the number
    of copies goes to ``added``."""
    if not config.cda:
        return items
    from lmforge.data.curate.cda import load_word_pairs, swap

    pairs = load_word_pairs(config.cda_word_pairs or None)
    copies = [copy for item in items if (copy := swap_item(item, lambda text: swap(text, pairs)[0])) != item]
    added.append(len(copies))
    return items + copies


def _word_list_label(path: str) -> str:
    from lmforge.data.curate.cda import load_word_pairs

    return load_word_pairs(path or None).label


def load_examples(config: FinetuneConfig, tokenizer,
                  counterfactuals: list[int] | None = None) -> tuple[list[tuple[list[int], list[int]]], str]:
    """Encoded (ids, labels) examples and the format they were read as; with ``cda`` their counterfactual
    copies follow them (how many is appended to ``counterfactuals``)."""
    added = counterfactuals if counterfactuals is not None else []
    path = Path(config.data).expanduser()
    if config.format == "messages" or (config.format == "auto" and _first_record_has(path, config.messages_field)):
        if not path.is_file():
            raise LmforgeError(f"conversation data not found: {path}")
        conversations = _counterfactuals(config, read_conversations(path, config.messages_field, config.limit),
                                         lambda c, swap: [{**m, "content": swap(m["content"])} for m in c], added)
        encoded = [encode_conversation(tokenizer, c, config.max_length) for c in conversations]
        encoded = [(ids, labels) for ids, labels in encoded if any(label != IGNORE for label in labels[1:])]
        if not encoded:
            raise LmforgeError(f"every assistant turn was cut off by max_length={config.max_length}; raise --max-length")
        return encoded, "messages"
    instruction = config.format == "instruction" or (
        config.format == "auto" and (config.data == "arc_easy" or _first_record_has(path, config.prompt_field)))
    if instruction:
        if config.data == "arc_easy":
            rows = arc_easy_instructions(config.limit)
        elif path.is_file():
            rows = read_instructions(path, config.prompt_field, config.response_field, config.limit)
        else:
            raise LmforgeError(f"instruction data not found: {path}")
        rows = _counterfactuals(config, rows, lambda r, swap: {"prompt": swap(r["prompt"]), "response": swap(r["response"])}, added)
        encoded = [encode_instruction(tokenizer, r["prompt"], r["response"], config.max_length) for r in rows]
        encoded = [(ids, labels) for ids, labels in encoded if any(label != IGNORE for label in labels)]
        if not encoded:
            raise LmforgeError(f"every response was cut off by max_length={config.max_length}; raise --max-length")
        return encoded, "instruction"
    corpus = load_corpus(config.data, text_field=config.text_field)
    if config.limit or config.cda:
        documents = _counterfactuals(config, list(corpus.documents(config.limit)), lambda text, swap: swap(text), added)
        corpus = type(corpus)(corpus.name, lambda: iter(documents))
    stream = tokenize_documents(tokenizer, corpus).tolist()
    windows = [stream[i:i + config.max_length] for i in range(0, len(stream) - 1, config.max_length)]
    windows = [w for w in windows if len(w) > 1]
    return [(w, list(w)) for w in windows], "text"


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 on padding)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (example_ids, example_labels) in enumerate(examples):
        ids[row, : len(example_ids)] = torch.tensor(example_ids)
        labels[row, : len(example_labels)] = torch.tensor(example_labels)
        mask[row, : len(example_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over labelled tokens, and how many there were (packed rows bring their positions)."""
    extra = {"position_ids": batch["position_ids"]} if "position_ids" in batch else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


@torch.no_grad()
def mean_loss(model, examples, pad_id: int, micro_batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), micro_batch_size):
        batch = {k: v.to(model.device) for k, v in collate(examples[start:start + micro_batch_size], pad_id).items()}
        loss, n = token_loss_sum(model, batch)
        total, count = total + loss.item(), count + n
    return total / max(count, 1)


def forgetting_entry(in_domain: float, out_of_domain: float) -> dict[str, float]:
    return {"in_domain_loss": in_domain, "in_domain_ppl": math.exp(in_domain),
            "out_of_domain_loss": out_of_domain, "out_of_domain_ppl": math.exp(out_of_domain)}


def finetune(
    model,
    tokenizer,
    config: FinetuneConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    out_of_domain_loss: Callable[[torch.nn.Module], float] | None = None,
    log: Callable[[str], None] | None = print,
    progress: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """LoRA-tune ``model`` on ``config.data``; save the adapters (or the merged model) under ``out_dir``.

    ``out_of_domain_loss(model)``: the mean token loss on text unlike the tuning data (``config.ood_corpus``),
    measured before and after for the forgetting report, with the held-out in-domain loss; None: no report.
    ``lmforge.workflows.finetune`` passes the reference perplexity protocol on ``config.ood_corpus``.
    """
    from peft import LoraConfig, get_peft_model

    config.validate()
    log = log or (lambda message: None)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    counterfactuals: list[int] = []
    examples, data_format = load_examples(config, tokenizer, counterfactuals)
    if config.cda:
        log(f"counterfactual augmentation added {sum(counterfactuals)} swapped copies "
            f"({_word_list_label(config.cda_word_pairs)})")
    random.Random(config.seed).shuffle(examples)
    n_eval = min(config.max_eval_examples, max(1, int(len(examples) * config.eval_fraction)))
    eval_examples, train_examples = examples[:n_eval], examples[n_eval:]
    if not train_examples:
        raise LmforgeError(f"{config.data} gives {len(examples)} examples: too few to hold {n_eval} out; add data")
    train_rows = pack(train_examples, config.max_length) if config.pack else train_examples
    batchify = (lambda rows: collate_packed(rows, pad_id)) if config.pack else (lambda rows: collate(rows, pad_id))
    steps_per_epoch = max(1, len(train_rows) // config.batch_size)
    steps = config.max_steps or steps_per_epoch * config.epochs
    log(f"{len(train_examples)} {data_format} examples for training"
        + (f" packed into {len(train_rows)} rows" if config.pack else "") + f", {len(eval_examples)} held out; {steps} steps")

    report: dict = {}
    if out_of_domain_loss:
        report["before"] = forgetting_entry(mean_loss(model, eval_examples, pad_id, config.micro_batch_size),
                                            out_of_domain_loss(model))
        log(f"before: in-domain loss {report['before']['in_domain_loss']:.4f}, "
            f"{config.ood_corpus} loss {report['before']['out_of_domain_loss']:.4f}")

    torch.manual_seed(config.seed)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules or attention_linear_names(model), task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise LmforgeError(f"LoRA cannot target {config.target_modules} in this model ({exc}); set --target-modules") from None
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, config.warmup_steps))

    peft_model.train()
    losses, tokens, start = [], 0, time.perf_counter()
    order = list(range(len(train_rows)))
    rng = random.Random(config.seed)
    for step in range(steps):
        first = (step % steps_per_epoch) * config.batch_size
        if first == 0:
            rng.shuffle(order)
        batch_rows = [train_rows[i] for i in order[first:first + config.batch_size]]
        micro_batches = [batchify(batch_rows[i:i + config.micro_batch_size])
                         for i in range(0, len(batch_rows), config.micro_batch_size)]
        labelled = sum(int((micro["labels"][:, 1:] != IGNORE).sum()) for micro in micro_batches)
        tokens += sum(sum(len(ids) for ids, _ in row) if config.pack else len(row[0]) for row in batch_rows)
        step_loss = 0.0
        for micro in micro_batches:
            batch = {k: v.to(peft_model.device) for k, v in micro.items()}
            loss_sum, _ = token_loss_sum(peft_model, batch)
            (loss_sum / labelled).backward()
            step_loss += loss_sum.item() / labelled
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        if progress:
            progress(1)
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}  loss {step_loss:.4f}  {tokens / (time.perf_counter() - start):,.0f} tok/s")
    seconds = time.perf_counter() - start

    final = peft_model.merge_and_unload() if config.merge else peft_model
    final.eval()
    if out_of_domain_loss:
        report["after"] = forgetting_entry(mean_loss(final, eval_examples, pad_id, config.micro_batch_size),
                                           out_of_domain_loss(final))
        report["change"] = {k: report["after"][k] - report["before"][k] for k in report["before"]}
        report["ood_corpus"] = f"{config.ood_corpus}, first {config.ood_windows} windows of {config.ood_seqlen} tokens"
        log(f"after: in-domain loss {report['after']['in_domain_loss']:.4f}, "
            f"{config.ood_corpus} loss {report['after']['out_of_domain_loss']:.4f}")
    if out_dir:
        save_finetuned(final, tokenizer, out_dir, {"finetuned_by": "lmforge finetune", "config": asdict(config),
                                                    "forgetting": report})
    return FinetuneResult(steps=steps, losses=losses, trainable_params=trainable, total_params=total,
                          train_examples=len(train_examples), eval_examples=len(eval_examples), train_tokens=tokens,
                          train_flops=4.0 * (total - trainable) * tokens, seconds=seconds, forgetting=report,
                          counterfactual_examples=sum(counterfactuals),
                          out_dir=Path(out_dir) if out_dir else None, model=final)


def save_finetuned(model, tokenizer, out_dir: str | os.PathLike, metadata: dict, *, overwrite: bool = False) -> Path:
    """A merged model as a full HF folder; a PEFT model as its adapters (safetensors) plus the tokenizer."""
    from peft import PeftModel

    from lmforge.io import atomic_dir, write_json
    from lmforge.models import save_model
    from lmforge.models.loading import METADATA_FILE

    if not isinstance(model, PeftModel):
        return save_model(model, tokenizer, out_dir, metadata, overwrite=overwrite)
    with atomic_dir(out_dir, "model", overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / METADATA_FILE, metadata)
    return Path(out_dir)

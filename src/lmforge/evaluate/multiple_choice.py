"""Multiple-choice tasks from declarative specs (YAML + data), scored like lm-evaluation-harness.

For each question every choice is scored as the log-likelihood of
``target_delimiter + choice`` after the rendered question text.
``acc``: the highest log-likelihood is the right choice. ``acc_norm``: the
highest log-likelihood divided by the choice's length in characters.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2

from lmforge.data.named import RECORDS, load_records
from lmforge.errors import LmforgeError
from lmforge.models.scoring import loglikelihood

_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass
class TaskSpec:
    name: str
    records: str  # named data set or a .jsonl path
    text: str  # jinja2 template for the question
    choices: str  # field with the list of choices
    answer: str  # field with the index of the right choice
    target_delimiter: str = " "
    description: str = ""

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TaskSpec":
        from lmforge.io import read_yaml_mapping

        spec = read_yaml_mapping(path, "task file")
        known = set(cls.__dataclass_fields__)
        if unknown := set(spec) - known:
            raise LmforgeError(f"{path}: unknown task field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return cls(**spec)
        except TypeError as exc:
            raise LmforgeError(f"{path}: {exc}") from None

    def documents(self, data: str | Path | None = None) -> Iterator[dict[str, Any]]:
        if self.records in RECORDS:
            yield from load_records(self.records, data)
            return
        path = Path(self.records)
        if not path.is_file():
            raise LmforgeError(f"task {self.name}: records '{self.records}' is neither a named data set nor a file")
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise LmforgeError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None

    def render(self, document: dict[str, Any]) -> tuple[str, list[str], int]:
        try:
            text = _TEMPLATES.from_string(self.text).render(**document)
            choices, answer = document[self.choices], int(document[self.answer])
        except (jinja2.UndefinedError, KeyError) as exc:
            raise LmforgeError(f"task {self.name}: a document lacks a field the spec uses ({exc})") from None
        return text, list(choices), answer


def builtin_tasks() -> dict[str, Path]:
    folder = resources.files("lmforge.evaluate") / "tasks"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_task(name_or_path: str | Path) -> TaskSpec:
    tasks = builtin_tasks()
    if str(name_or_path) in tasks:
        return TaskSpec.from_yaml(tasks[str(name_or_path)])
    if Path(name_or_path).is_file():
        return TaskSpec.from_yaml(name_or_path)
    raise LmforgeError(f"unknown task '{name_or_path}'; use one of: {', '.join(sorted(tasks))}, or a task .yaml file")


def choice_metrics(loglikelihoods: list[float], choices: list[str], answer: int) -> dict[str, float]:
    """acc and acc_norm for one question (lm-eval: acc_norm divides by the choice's length in characters)."""
    best = max(range(len(choices)), key=lambda i: loglikelihoods[i])
    best_norm = max(range(len(choices)), key=lambda i: loglikelihoods[i] / len(choices[i]))
    return {"acc": float(best == answer), "acc_norm": float(best_norm == answer)}


def _mean_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def multiple_choice(
    model,
    tokenizer,
    task: str | Path | TaskSpec,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    data: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a multiple-choice task; returns acc, acc_norm (with standard errors) and per-question details."""
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    questions = []
    for document in spec.documents(data):
        if limit is not None and len(questions) >= limit:
            break
        questions.append(spec.render(document))
    if not questions:
        raise LmforgeError(f"task {spec.name} has no questions")
    pairs = [(text, spec.target_delimiter + choice) for text, choices, _ in questions for choice in choices]
    if on_total:
        on_total(len(pairs))
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    start = time.perf_counter()
    scores = loglikelihood(model, tokenizer, pairs, max_length=max_length, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    per_question, cursor = [], 0
    for text, choices, answer in questions:
        lls = [s for s, _ in scores[cursor : cursor + len(choices)]]
        cursor += len(choices)
        per_question.append({"loglikelihoods": lls, "answer": answer, **choice_metrics(lls, choices, answer)})
    acc, acc_se = _mean_stderr([q["acc"] for q in per_question])
    acc_norm, acc_norm_se = _mean_stderr([q["acc_norm"] for q in per_question])
    return {
        "task": spec.name, "questions": len(per_question), "acc": acc, "acc_stderr": acc_se,
        "acc_norm": acc_norm, "acc_norm_stderr": acc_norm_se, "seconds": seconds, "details": per_question,
    }

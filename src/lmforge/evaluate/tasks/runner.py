"""Running an lm-eval task config on a loaded model: requests, responses, filters, metrics, aggregation.

The requests are lm-eval's: ``multiple_choice`` scores ``target_delimiter +
choice`` after the prompt (or, for a multiple-input task like winogrande, the
target after each choice's prompt); ``loglikelihood`` scores the target;
``loglikelihood_rolling`` scores the whole target text in rolling windows;
``generate_until`` decodes greedily. Log-likelihoods go through
:mod:`lmforge.models.scoring` (choices of one question share the
prompt's KV cache), generations through :mod:`lmforge.evaluate.generate`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lmforge.errors import LmforgeError
from lmforge.evaluate.generate import generate_until
from lmforge.models.scoring import encode, loglikelihood, prefix_token_id, rolling_windows, score
from lmforge.evaluate.tasks.cache import RequestCache
from lmforge.evaluate.tasks.config import FunctionRef, GroupConfig, TaskConfig
from lmforge.evaluate.tasks.documents import Task
from lmforge.evaluate.tasks.filters import pipelines
from lmforge.evaluate.tasks.metrics import (aggregation_for, choice_scores, exact_match, mean, mean_stderr,
                                            metric_specs)


@dataclass
class EvalSettings:
    """What lm-eval's command line sets for every task (same names, same defaults)."""

    num_fewshot: int | None = None  # None: the task file's num_fewshot
    limit: int | None = None  # first N documents
    apply_chat_template: bool = False
    system_prompt: str | None = None
    fewshot_as_multiturn: bool = False
    batch_size: int = 8
    max_length: int | None = None  # None: the model's max_position_embeddings (lm-eval's rule)
    trust_task_code: bool = False
    data_dir: str | None = None

    def key(self) -> dict[str, Any]:
        """The settings that change answers (the cache key's part; batch size and paths do not)."""
        return {k: v for k, v in asdict(self).items() if k not in ("batch_size", "data_dir", "trust_task_code")}


@dataclass
class TaskResult:
    task: str
    output_type: str
    documents: int
    num_fewshot: int
    metrics: dict[str, float]  # "metric,filter" -> value, as lm-eval names them
    stderr: dict[str, float | None]
    seconds: float
    task_hash: str
    cached: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not samples:
            out.pop("samples")
        return out


@dataclass
class GroupResult:
    group: str
    metrics: dict[str, float]
    tasks: list[TaskResult]

    @property
    def documents(self) -> int:
        return sum(t.documents for t in self.tasks)


def model_max_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or 2048)


def chat_renderer(tokenizer) -> Callable[[list[dict[str, str]]], str]:
    """lm-eval's HFLM.apply_chat_template: generation prompt on; a template that refuses the system role loses it."""
    import jinja2

    if getattr(tokenizer, "chat_template", None) is None:
        raise LmforgeError("--apply-chat-template: this tokenizer has no chat template")

    def render(messages: list[dict[str, str]]) -> str:
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except jinja2.TemplateError:
            return tokenizer.apply_chat_template([m for m in messages if m["role"] != "system"], tokenize=False,
                                                 add_generation_prompt=True)

    return render


def _count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def _rolling_loglikelihoods(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int,
                            progress: Callable[[int], None] | None) -> list[float]:
    prefix = prefix_token_id(tokenizer)
    windows = [rolling_windows(encode(tokenizer, text), prefix, max_length) for text in texts]
    flat = score(model, [w for per_text in windows for w in per_text], max_length=max_length, batch_size=batch_size,
                 progress=progress)
    sums, cursor = [], 0
    for per_text in windows:
        sums.append(sum(ll for ll, _ in flat[cursor : cursor + len(per_text)]))
        cursor += len(per_text)
    return sums


def build_requests(task: Task, docs: Sequence[dict[str, Any]], settings: EvalSettings, tokenizer) -> list[dict[str, Any]]:
    """Per document: its prompt(s) and what is scored or generated after them."""
    chat = chat_renderer(tokenizer) if settings.apply_chat_template else None
    kind = task.config.output_type
    # With a chat template the answer follows the assistant turn directly (lm-eval drops the target delimiter).
    delimiter = "" if chat else task.config.target_delimiter
    requests = []
    for doc in docs:
        contexts = task.contexts(doc, system_prompt=settings.system_prompt, chat_template=chat,
                                 fewshot_as_multiturn=settings.fewshot_as_multiturn)
        if kind == "multiple_choice":
            if task.multiple_input:
                target = task.doc_to_target(doc)
                pairs = [(context, f"{delimiter}{target}") for context in contexts]
            else:
                pairs = [(contexts[0], f"{delimiter}{choice}") for choice in task.doc_to_choice(doc)]
            requests.append({"pairs": pairs})
        elif kind == "loglikelihood":
            requests.append({"pairs": [(contexts[0], str(task.doc_to_target(doc)))]})
        elif kind == "loglikelihood_rolling":
            requests.append({"text": str(task.doc_to_target(doc))})
        else:
            requests.append({"prompt": contexts[0]})
    return requests


def run_requests(model, tokenizer, task: Task, requests: list[dict[str, Any]], settings: EvalSettings,
                 max_length: int, progress: Callable[[int], None] | None = None) -> list[Any]:
    """The model's responses, one entry per document: [(ll, greedy), ...], a rolling ll, or a generation."""
    kind = task.config.output_type
    if kind in ("multiple_choice", "loglikelihood"):
        pairs = [p for r in requests for p in r["pairs"]]
        flat = loglikelihood(model, tokenizer, pairs, max_length=max_length, batch_size=settings.batch_size,
                             progress=progress)
        out, cursor = [], 0
        for r in requests:
            out.append([list(x) for x in flat[cursor : cursor + len(r["pairs"])]])
            cursor += len(r["pairs"])
        return out
    if kind == "loglikelihood_rolling":
        return _rolling_loglikelihoods(model, tokenizer, [r["text"] for r in requests], max_length,
                                       settings.batch_size, progress)
    generation = task.config.generation_kwargs or {}
    until = generation.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return generate_until(model, tokenizer, [r["prompt"] for r in requests], until=until,
                          max_gen_toks=int(generation.get("max_gen_toks", 256)), max_length=max_length,
                          batch_size=settings.batch_size, progress=progress)


def _generation_gold(task: Task, doc: dict[str, Any]) -> str | list[str]:
    gold = task.doc_to_target(doc)
    if task.config.doc_to_choice is not None:
        return task.doc_to_choice(doc)[gold]
    if task.multiple_target:
        return [str(g) for g in gold]
    return str(gold)


def score_document(task: Task, doc: dict[str, Any], response: Any, specs: list[dict[str, Any]],
                   filters: dict[str, Callable], process_results: Callable | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-eval's process_results for one document: ({"metric,filter": item}, the filtered responses)."""
    kind = task.config.output_type
    items: dict[str, Any] = {}
    filtered: dict[str, Any] = {}
    for filter_name, pipeline in filters.items():
        if kind == "generate_until":
            filtered[filter_name] = pipeline(response)
            results = [filtered[filter_name]]
        else:
            results = [tuple(x) for x in response] if kind != "loglikelihood_rolling" else [response]
        if process_results is not None:
            per_metric = process_results(doc, results)
        elif kind == "multiple_choice":
            lls, greedy = zip(*results)
            per_metric = choice_scores(lls, greedy, task.doc_to_choice(doc), task.gold(doc))
        elif kind == "loglikelihood":
            (ll, greedy), = results
            per_metric = {"perplexity": ll, "acc": float(greedy)}
        elif kind == "loglikelihood_rolling":
            target = str(task.doc_to_target(doc))
            n_bytes = len(target.encode("utf-8"))
            per_metric = {"word_perplexity": (response, _count_words(target)), "byte_perplexity": (response, n_bytes),
                          "bits_per_byte": (response, n_bytes)}
        else:
            gold = _generation_gold(task, doc)
            per_metric = {}
            for spec in specs:
                options = {k: v for k, v in spec.items() if k not in ("metric", "aggregation", "higher_is_better")}
                golds = gold if isinstance(gold, list) else [gold]
                per_metric[spec["metric"]] = float(any(exact_match(str(filtered[filter_name]), g, **options) for g in golds))
        for spec in specs:
            if spec["metric"] not in per_metric:
                raise LmforgeError(f"task {task.name}: process_results returned no '{spec['metric']}'")
            items[f"{spec['metric']},{filter_name}"] = per_metric[spec["metric"]]
    return items, filtered


def evaluate_task(model, tokenizer, config: TaskConfig, settings: EvalSettings | None = None, *,
                  cache: RequestCache | None = None, progress: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> TaskResult:
    """Evaluate one lm-eval task on ``model``; metrics are named and computed as lm-eval names and computes them."""
    settings = settings or EvalSettings()
    if settings.fewshot_as_multiturn and not settings.apply_chat_template:
        raise LmforgeError("--fewshot-as-multiturn needs --apply-chat-template (as in lm-eval)")
    if settings.limit is not None and settings.limit < 1:
        raise LmforgeError("--limit must be at least 1")
    task = Task(config, data=settings.data_dir, trust_task_code=settings.trust_task_code,
                num_fewshot=settings.num_fewshot)
    specs = metric_specs(config)
    filters = pipelines(config.filter_list if config.output_type == "generate_until" else None, task.name)
    process_results = config.process_results.load(settings.trust_task_code) \
        if isinstance(config.process_results, FunctionRef) else None
    docs = task.docs[: settings.limit] if settings.limit else task.docs
    max_length = settings.max_length or model_max_length(model)
    requests = build_requests(task, docs, settings, tokenizer)
    task_hash = RequestCache.task_hash(config, task.data_files)
    start = time.perf_counter()
    key = cache.key(model, task_hash, {**settings.key(), "max_length": max_length}) if cache else None
    responses = cache.get(key) if cache else None
    cached = responses is not None
    if responses is None:
        if on_total:
            on_total(sum(len(r.get("pairs", [None])) for r in requests))
        responses = run_requests(model, tokenizer, task, requests, settings, max_length, progress)
        if cache:
            cache.put(key, responses)
    seconds = time.perf_counter() - start
    per_doc, samples = [], []
    for doc_id, (doc, request, response) in enumerate(zip(docs, requests, responses)):
        items, filtered = score_document(task, doc, response, specs, filters, process_results)
        per_doc.append(items)
        samples.append({"doc_id": doc_id, "doc": doc, **request, "response": response,
                        **({"filtered": filtered} if filtered else {}), "target": _target_for_log(task, doc),
                        "metrics": items})
    metrics, stderr = {}, {}
    for spec in specs:
        aggregate = aggregation_for(spec, settings.trust_task_code, task.name)
        for filter_name in filters:
            name = f"{spec['metric']},{filter_name}"
            values = [d[name] for d in per_doc]
            metrics[name] = float(aggregate(values))
            stderr[name] = mean_stderr(values) if aggregate is mean else None
    return TaskResult(task.name, config.output_type, len(docs), task.num_fewshot, metrics, stderr, seconds, task_hash,
                      cached, samples)


def _target_for_log(task: Task, doc: dict[str, Any]) -> Any:
    try:
        return task.gold(doc) if task.config.output_type == "multiple_choice" else task.doc_to_target(doc)
    except (LmforgeError, KeyError, TypeError):
        return None


def aggregate_group(group: GroupConfig, results: Sequence[TaskResult]) -> dict[str, float]:
    """lm-eval's aggregate_metric_list: the (size-weighted) mean of a metric over the group's tasks."""
    metrics = {}
    for spec in group.aggregate_metric_list:
        if spec.get("aggregation", "mean") != "mean":
            raise LmforgeError(f"group {group.group}: aggregate_metric_list supports aggregation: mean only")
        for filter_name in spec.get("filter_list", ["none"]):
            name = f"{spec['metric']},{filter_name}"
            members = [r for r in results if name in r.metrics]
            if not members:
                raise LmforgeError(f"group {group.group}: no member task reports '{name}'")
            weights = [r.documents if spec.get("weight_by_size", False) else 1 for r in members]
            metrics[name] = sum(w * r.metrics[name] for w, r in zip(weights, members)) / sum(weights)
    return metrics


def write_samples(path: str | Path, results: Sequence[TaskResult]) -> Path:
    """--log-samples: one JSON line per document (task, prompt(s), choices or generation, scores, decision)."""
    from lmforge.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for result in results:
            for sample in result.samples:
                handle.write(json.dumps({"task": result.task, **sample}, default=str, ensure_ascii=False) + "\n")
    return Path(path)

"""A task's documents and prompts, built exactly as lm-evaluation-harness 0.4.13 builds them.

``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice`` are a field name (when the
documents have that field), a Jinja template (rendered; a list or a digit string
is read back as a Python literal, as lm-eval does) or a trusted ``!function``.
Few-shot examples come from ``fewshot_split`` (else the training, validation,
then test split) through lm-eval's samplers: ``first_n`` takes the pool in
order; ``default`` draws ``random.Random(1234).sample`` afresh for every
document, in document order, so the draws for document k depend on the k-1
before it — the reason --limit keeps lm-eval's order.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jinja2

from lmforge.errors import LmforgeError
from lmforge.evaluate.tasks.config import FunctionRef, TaskConfig
from lmforge.paths import data_dir

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed

_TEMPLATES = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_TEMPLATES.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)


def render(template: str, doc: dict[str, Any], task: str) -> str:
    try:
        return _TEMPLATES.from_string(template).render(**doc)
    except jinja2.TemplateError as exc:
        raise LmforgeError(f"task {task}: template {template!r} failed on a document ({exc})") from None


def resolve_data_files(config: TaskConfig, data: str | Path | None) -> dict[str, Any]:
    """dataset_kwargs with every relative data file path read from the data folder (and checked to exist)."""
    kwargs = dict(config.dataset_kwargs)
    files = kwargs.get("data_files")
    if files is None:
        raise LmforgeError(f"task {config.task}: dataset_kwargs.data_files is required (local json/csv files)")
    root = None

    def one(path: str) -> str:
        nonlocal root
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            root = root or data_dir(data)
            candidate = root / candidate
        if not candidate.is_file():
            raise LmforgeError(f"task {config.task}: data file {candidate} does not exist "
                               "(relative paths are read from --data-dir / $LMFORGE_DATA_DIR)")
        return str(candidate)

    def each(value: Any) -> Any:
        return [one(v) for v in value] if isinstance(value, list) else one(value)

    kwargs["data_files"] = {k: each(v) for k, v in files.items()} if isinstance(files, dict) else each(files)
    return kwargs


@dataclass
class Turn:
    """lm-eval's Message: text plus the delimiter it gets when rendered as plain text."""

    role: str
    content: str
    delimiter: str = ""

    def text(self) -> str:
        return self.content + self.delimiter


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def single_turn(turns: list[Turn]) -> list[dict[str, str]]:
    """lm-eval's multiturn_to_singleturn: everything but the system turn folds into one user message."""
    system, rest = (turns[0], turns[1:]) if turns[0].role == "system" else (None, turns)
    rest = [Turn(t.role, t.content, t.delimiter) for t in rest]
    rest[-1].delimiter = ""
    folded = [{"role": "user", "content": "".join(t.text() for t in rest)}]
    return ([{"role": "system", "content": system.content}] if system else []) + folded


class Task:
    """A loaded task: its evaluation documents, few-shot pool and lm-eval's doc_to_* functions."""

    def __init__(self, config: TaskConfig, *, data: str | Path | None = None, trust_task_code: bool = False,
                 num_fewshot: int | None = None):
        import datasets

        self.config = config
        self.name = config.task
        self.trust = trust_task_code
        kwargs = resolve_data_files(config, data)
        self.data_files = kwargs["data_files"]
        datasets.disable_progress_bars()
        try:
            self.dataset = datasets.load_dataset(config.dataset_path, name=config.dataset_name, **kwargs)
        except (ValueError, TypeError, datasets.exceptions.DatasetGenerationError) as exc:
            raise LmforgeError(f"task {self.name}: cannot read {config.dataset_path} data ({str(exc).splitlines()[0]})") from None
        self.process_docs = self._callable(config.process_docs)
        self.docs = self._split(config.eval_split)
        if not self.docs:
            raise LmforgeError(f"task {self.name}: split '{config.eval_split}' has no documents")
        self.features = set(self.docs[0])
        self.num_fewshot = config.num_fewshot if num_fewshot is None else num_fewshot
        self.num_fewshot = self.num_fewshot or 0
        fewshot = config.fewshot_config
        self.fewshot_text = fewshot.get("doc_to_text", config.doc_to_text)
        self.fewshot_target = fewshot.get("doc_to_target", config.doc_to_target)
        self.fewshot_choice = fewshot.get("doc_to_choice", config.doc_to_choice)
        self.fewshot_target_delimiter = fewshot.get("target_delimiter", config.target_delimiter)
        self.fewshot_delimiter = fewshot.get("fewshot_delimiter", config.fewshot_delimiter)
        self.fewshot_split = fewshot.get("split", config.fewshot_split)
        self.sampler = fewshot.get("sampler", "default")
        self.pool = self._fewshot_pool() if self.num_fewshot else []
        self.rnd = random.Random(FEWSHOT_SEED)
        if self.num_fewshot:
            available = len(self.pool) - (1 if self._exclude_eval_doc else 0)
            if self.num_fewshot > available:
                raise LmforgeError(f"task {self.name}: num_fewshot {self.num_fewshot} is larger than the {available} "
                                   f"few-shot documents available in '{self.fewshot_split or 'the default split'}'")
        first = self.docs[0]
        self.multiple_input = config.doc_to_choice is not None and isinstance(self.doc_to_text(first), int)
        self.multiple_target = isinstance(self.doc_to_target(first), list)

    # -- documents ---------------------------------------------------------------------------------------------
    def _callable(self, value: Any) -> Callable | None:
        return value.load(self.trust) if isinstance(value, FunctionRef) else value

    def _split(self, split: str, process_docs: Callable | None = None) -> list[dict[str, Any]]:
        if split not in self.dataset:
            raise LmforgeError(f"task {self.name}: no split '{split}' in the data (splits: {', '.join(self.dataset)})")
        rows = self.dataset[split]
        process = process_docs or self.process_docs
        return list(process(rows) if process else rows)

    def _fewshot_pool(self) -> list[dict[str, Any]]:
        config = self.config
        process = self._callable(config.fewshot_config.get("process_docs")) or self.process_docs
        if self.fewshot_split is not None:
            return self._split(self.fewshot_split, process)
        if (samples := config.fewshot_config.get("samples")) is not None:
            return list(self._callable(samples)() if isinstance(samples, FunctionRef) else samples)
        for split in (config.training_split, config.validation_split, config.test_split):
            if split is not None:
                return self._split(split)
        return []

    @property
    def _exclude_eval_doc(self) -> bool:
        # lm-eval drops the evaluated document from its draws exactly when the few-shot split *is* the test split.
        return self.fewshot_split == self.config.test_split

    def fewshot_examples(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """lm-eval's ContextSampler.sample / FirstNSampler.sample for one evaluated document."""
        n = self.num_fewshot
        if n == 0:
            return []
        exclude = doc if self._exclude_eval_doc else None
        if self.sampler == "first_n":
            pool = [x for x in self.pool if x != exclude] if exclude is not None else self.pool
            return pool[:n]
        if exclude is None:
            return self.rnd.sample(self.pool, n)
        drawn = [x for x in self.rnd.sample(self.pool, n + 1) if x != exclude][:n]
        if len(drawn) < n:  # duplicates of the document in the pool: lm-eval redraws without any copy of it
            drawn = self.rnd.sample([x for x in self.pool if x != exclude], n)
        return drawn

    # -- lm-eval's doc_to_* ------------------------------------------------------------------------------------
    def doc_to_text(self, doc: dict[str, Any], how: Any = None) -> str | int:
        how = self.config.doc_to_text if how is None else how
        if isinstance(how, int):
            return how
        if isinstance(how, str):
            if how in self.features:
                return doc[how]
            text = render(how, doc, self.name)
            return ast.literal_eval(text) if text.isdigit() and self.config.doc_to_choice is not None else text
        if isinstance(how, FunctionRef):
            return how.load(self.trust)(doc)
        raise LmforgeError(f"task {self.name}: doc_to_text must be a field, a template or a !function")

    def doc_to_target(self, doc: dict[str, Any], how: Any = None) -> int | str | list:
        how = self.config.doc_to_target if how is None else how
        if isinstance(how, (int, list)):
            return how
        if isinstance(how, str):
            if how in self.features:
                return doc[how]
            text = render(how, doc, self.name)
            if text.isdigit() and self.config.doc_to_choice is not None:
                return ast.literal_eval(text)
            if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
                try:
                    return ast.literal_eval(text)
                except (SyntaxError, ValueError):
                    return text
            return text
        if isinstance(how, FunctionRef):
            return how.load(self.trust)(doc)
        raise LmforgeError(f"task {self.name}: doc_to_target must be a field, a template, a list or a !function")

    def doc_to_choice(self, doc: dict[str, Any], how: Any = None) -> list[str]:
        how = self.config.doc_to_choice if how is None else how
        if isinstance(how, str):
            if how in self.features:
                return list(doc[how])
            text = render(how, doc, self.name)
            try:
                return list(ast.literal_eval(text))
            except (SyntaxError, ValueError):
                raise LmforgeError(f"task {self.name}: doc_to_choice rendered {text[:60]!r}, not a list") from None
        if isinstance(how, list):
            return how
        if isinstance(how, dict):
            return list(how.values())
        if isinstance(how, FunctionRef):
            return how.load(self.trust)(doc)
        raise LmforgeError(f"task {self.name}: doc_to_choice must be a field, a template, a list or a !function")

    def gold(self, doc: dict[str, Any]) -> int | list[int]:
        """The right choice's index (multiple_choice): lm-eval's gold resolution, -100 when it is out of range."""
        choices = self.doc_to_choice(doc)
        gold = self.doc_to_text(doc) if self.multiple_input else self.doc_to_target(doc)
        if isinstance(gold, list):
            return [g if g < len(choices) else -100 for g in gold]
        if isinstance(gold, str):
            return choices.index(gold) if gold in choices else -100
        return gold if gold < len(choices) else -100

    # -- prompts -------------------------------------------------------------------------------------------------
    def _qa_turns(self, question: str, answer: str | None, target_delimiter: str, fewshot_delimiter: str) -> list[Turn]:
        if answer is None:
            return [Turn("user", question, "")]
        return [Turn("user", question, target_delimiter), Turn("assistant", answer, fewshot_delimiter)]

    def _answer_text(self, doc: dict[str, Any]) -> str:
        target = self.doc_to_target(doc, self.fewshot_target)
        if isinstance(target, int) and self.fewshot_choice is not None:
            return self.doc_to_choice(doc, self.fewshot_choice)[target]
        if isinstance(target, list):
            return str(target[0])
        return str(target)

    def turns(self, doc: dict[str, Any], system_prompt: str | None = None) -> tuple[list[Turn], list[str]]:
        """The prompt as lm-eval's Messages (system, few-shot pairs), and the final question(s) of ``doc``."""
        turns: list[Turn] = []
        description = doc[self.config.description] if self.config.description in doc else (
            render(self.config.description, doc, self.name) if self.config.description else "")
        if system := maybe_delimit(system_prompt, description, self.config.fewshot_delimiter):
            turns.append(Turn("system", system))
        for example in self.fewshot_examples(doc):
            question = self.doc_to_text(example, self.fewshot_text)
            if self.multiple_input:
                question = self.doc_to_choice(example, self.fewshot_choice)[question]
            answer = self._answer_text(example)
            turns += self._qa_turns(str(question), answer if answer != "" else None, self.fewshot_target_delimiter,
                                    self.fewshot_delimiter)
        if self.multiple_input:
            questions = self.doc_to_choice(doc)
        else:
            questions = [self.doc_to_text(doc)]
        return turns, [str(q) for q in questions]

    def contexts(self, doc: dict[str, Any], *, system_prompt: str | None = None,
                 chat_template: Callable[[list[dict[str, str]]], str] | None = None,
                 fewshot_as_multiturn: bool = False) -> list[str]:
        """lm-eval's fewshot_context: one string, or one per choice for a multiple-input task (winogrande)."""
        prefix, questions = self.turns(doc, system_prompt)
        contexts = []
        for question in questions:
            turns = prefix + [Turn("user", question, "")]
            if chat_template is None:
                contexts.append("".join(t.text() for t in turns))
            elif fewshot_as_multiturn:
                contexts.append(chat_template([{"role": t.role, "content": t.content} for t in turns]))
            else:
                contexts.append(chat_template(single_turn(turns)))
        return contexts

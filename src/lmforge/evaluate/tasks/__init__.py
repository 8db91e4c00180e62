"""lm-evaluation-harness task files, read and scored the way lm-eval reads and scores them."""

from lmforge.evaluate.tasks.cache import RequestCache, model_hash
from lmforge.evaluate.tasks.config import FunctionRef, GroupConfig, TaskConfig, parse, read_yaml
from lmforge.evaluate.tasks.documents import Task
from lmforge.evaluate.tasks.registry import builtin_folder, expand, is_task_file, resolve, task_index
from lmforge.evaluate.tasks.runner import (EvalSettings, GroupResult, TaskResult, aggregate_group, evaluate_task,
                                           write_samples)

__all__ = ["EvalSettings", "FunctionRef", "GroupConfig", "GroupResult", "RequestCache", "Task", "TaskConfig",
           "TaskResult", "aggregate_group", "builtin_folder", "evaluate_task", "expand", "is_task_file", "model_hash", "parse",
           "read_yaml", "resolve", "task_index", "write_samples"]

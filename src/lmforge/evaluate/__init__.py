"""Evaluation: perplexity (windows, rolling, sliding), multiple-choice tasks, speed and memory."""

from lmforge.models.scoring import Request, encode_pair, loglikelihood, rolling_windows, score
from lmforge.evaluate.multiple_choice import TaskSpec, builtin_tasks, choice_metrics, load_task, multiple_choice
from lmforge.evaluate.perplexity import PROTOCOLS, PerplexityResult, perplexity, wikitext_detokenizer
from lmforge.evaluate.speed import peak_rss_bytes, reset_peak_rss, rss_bytes, speed

__all__ = [
    "PROTOCOLS",
    "PerplexityResult",
    "Request",
    "TaskSpec",
    "builtin_tasks",
    "choice_metrics",
    "encode_pair",
    "load_task",
    "loglikelihood",
    "multiple_choice",
    "peak_rss_bytes",
    "reset_peak_rss",
    "perplexity",
    "rolling_windows",
    "rss_bytes",
    "score",
    "speed",
    "wikitext_detokenizer",
]

"""What the server enforces, checked once before any model is loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmforge.errors import LmforgeError


@dataclass
class ServeConfig:
    """Everything the server enforces; the defaults suit a single-user loopback deployment."""

    model_name: str = "lmforge"
    api_keys: tuple[str, ...] = ()
    rate_per_minute: float = 120.0  # requests per minute per key (per client address without keys)
    rate_burst: int | None = None  # bucket size; default = one minute's worth
    auth_failures_per_minute: float = 10.0  # wrong keys tolerated per client address before 429
    max_request_bytes: int = 64 * 1024
    max_prompt_tokens: int | None = None  # default: the model's context length minus max_tokens_limit
    max_tokens_limit: int = 512
    default_max_tokens: int = 128
    content_filter: bool = True
    filter_path: str | None = None  # YAML rule file; None = the shipped default rules
    redact_pii: bool = True
    usage_log: str | None = None
    log_text: bool = False  # keep prompts and completions in the usage log (off: counts and hits only)
    max_concurrent: int = 8  # sequences decoded together
    max_queued: int = 64  # sequences waiting for a slot; beyond that 503 + Retry-After
    max_batch_tokens: int | None = None  # rows × cache width bound (KV memory); default: no bound beyond the above
    prefill_tokens_per_step: int = 512  # prompt tokens prefilled between two decode steps
    drain_s: float = 10.0  # on shutdown, running requests get this long to finish
    holdback_chars: int = 64

    def check(self) -> None:
        """One-line errors naming the option, before anything is loaded."""
        positive = {"--rate": self.rate_per_minute, "--max-request-bytes": self.max_request_bytes,
                    "--max-tokens-limit": self.max_tokens_limit, "default_max_tokens": self.default_max_tokens,
                    "--max-concurrent": self.max_concurrent, "auth_failures_per_minute": self.auth_failures_per_minute,
                    "prefill_tokens_per_step": self.prefill_tokens_per_step}
        for option, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise LmforgeError(f"{option} must be a positive number (got {value!r})")
        optional = {"--burst": self.rate_burst, "--max-batch-tokens": self.max_batch_tokens,
                    "max_prompt_tokens": self.max_prompt_tokens}
        for option, value in optional.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LmforgeError(f"{option} must be a whole number of at least 1 (got {value!r})")
        if not isinstance(self.max_queued, int) or self.max_queued < 0:
            raise LmforgeError(f"--max-queued must be 0 or more (got {self.max_queued!r})")
        if self.drain_s < 0:
            raise LmforgeError(f"--drain-s must be 0 or more (got {self.drain_s!r})")


def check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LmforgeError(f"--port {port} is not a TCP port; use 1-65535 (8000 by default)")

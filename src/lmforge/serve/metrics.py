"""``/metrics`` in the Prometheus text format (prometheus-client), fed from the same entries as the usage log."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """One registry per app, so several servers in one process (tests, benchmarks) keep their own counts."""

    def __init__(self, scheduler):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("lmforge_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("lmforge_request_latency_seconds", "Time from request to last byte",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.ttft = Histogram("lmforge_time_to_first_token_seconds", "Time from request to the first generated "
                              "token", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.prompt_tokens = Counter("lmforge_prompt_tokens", "Prompt tokens processed", registry=registry)
        self.completion_tokens = Counter("lmforge_completion_tokens", "Tokens generated", registry=registry)
        self.filter_hits = Counter("lmforge_filter_hits", "Content-filter hits by stage and rule",
                                   ["stage", "rule"], registry=registry)
        self.redactions = Counter("lmforge_pii_redactions", "PII items redacted from outputs, by kind",
                                  ["kind"], registry=registry)
        Gauge("lmforge_queue_depth", "Sequences waiting for a slot", registry=registry
              ).set_function(lambda: scheduler.queued)
        Gauge("lmforge_running_sequences", "Sequences in the running batch", registry=registry
              ).set_function(lambda: len(scheduler.running))

    def observe(self, entry: dict[str, Any]) -> None:
        endpoint = entry["endpoint"]
        self.requests.labels(endpoint, str(entry["status"])).inc()
        self.latency.labels(endpoint).observe(entry["latency_ms"] / 1000)
        if entry.get("ttft_ms") is not None:
            self.ttft.labels(endpoint).observe(entry["ttft_ms"] / 1000)
        self.prompt_tokens.inc(entry.get("prompt_tokens", 0))
        self.completion_tokens.inc(entry.get("completion_tokens", 0))
        for hit in entry.get("filter_hits", []):
            stage, _, rule = hit.partition(":")
            self.filter_hits.labels(stage, rule).inc()
        for kind, count in entry.get("pii_redacted", {}).items():
            self.redactions.labels(kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

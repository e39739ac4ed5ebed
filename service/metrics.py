"""Prometheus metrics. Names and labels are the contract with deploy/grafana's dashboard and deploy/prometheus.yml;
labels stay low-cardinality (model, strategy, stage, replica, status), never a request id or a key."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)

REQUESTS = Counter("ponder_requests", "Generation requests by outcome (served, failed, cancelled) and HTTP status", ["model", "strategy", "outcome", "status"])
ERRORS = Counter("ponder_request_errors", "Failed requests by OpenAI error code", ["model", "strategy", "code"])
TOKENS = Counter(
    "ponder_tokens",
    "Tokens by strategy stage; kind is prompt, completion or cached (prompt tokens served from the prefix cache)",
    ["model", "strategy", "stage", "kind"],
)
LATENCY = Histogram("ponder_request_latency_seconds", "End-to-end request latency", ["model", "strategy"], buckets=LATENCY_BUCKETS)
TTFT = Histogram(
    "ponder_time_to_first_token_seconds", "Time to the first token of a streamed response's content", ["model", "strategy"], buckets=LATENCY_BUCKETS
)
ROLLOUT_LATENCY = Histogram("ponder_rollout_latency_seconds", "From a rollout's engine request to its last token", ["model", "stage"], buckets=LATENCY_BUCKETS)
ROLLOUTS_IN_FLIGHT = Gauge("ponder_rollouts_in_flight", "Rollouts (completions) being generated now", ["model"])
ENGINE_RUNNING = Gauge("ponder_engine_requests_running", "Requests the engine is decoding, at its last health check", ["model", "replica"])
ENGINE_WAITING = Gauge("ponder_engine_requests_waiting", "Requests queued in the engine's scheduler, at its last health check", ["model", "replica"])
ENGINE_KV_USAGE = Gauge("ponder_engine_kv_cache_usage_ratio", "Fraction of the engine's KV cache blocks in use", ["model", "replica"])
COMPUTE = Counter("ponder_compute_eflops", "Compute spent in eFLOPs (Kinetics' cost model at the lengths each engine call generated)", ["model", "strategy"])
BUDGET_EXHAUSTED = Counter("ponder_budget_exhausted", "Requests stopped by their token budget or deadline", ["model", "strategy", "reason"])
PREFIX_CACHE_TOKENS = Counter("ponder_prefix_cache_tokens", "Prompt tokens found (hit) or not (miss) in the engine's prefix cache", ["model", "result"])
LEDGER_WRITE_FAILURES = Counter("ponder_ledger_write_failures", "Ledger records that could not be written to Redis")
FEEDBACK = Counter("ponder_feedback", "Answers marked correct or not through POST /v1/feedback", ["model", "strategy", "correct"])
CACHE_LOOKUPS = Counter(
    "ponder_cache_lookups", "Lookups in the strategies' shared cache (summaries, judge votes) by result: hit, miss or error", ["cache", "result"]
)
CACHE_SAVED_TOKENS = Counter("ponder_cache_saved_tokens", "Tokens a cache hit saved (what producing the reused value had cost)", ["cache"])
AUTH_FAILURES = Counter("ponder_auth_failures", "Requests refused for a missing or unknown API key", ["reason"])
QUOTA_REFUSALS = Counter("ponder_quota_refusals", "Requests refused (429) because their key's quota was spent", ["quota"])

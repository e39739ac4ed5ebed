"""The `vllm.general_plugins` entry point of the sparse decode backend (service/engines/sparse_attention.py).

vLLM calls `register` once in every process it starts (engine core, workers) before any model is built. It only
overrides the CPU backend when the engine was started with a KV budget: engines without one keep vLLM's own
classes. The backend module is named by path, not imported, so its vLLM internals load only where a model is built.
"""

from __future__ import annotations

import os

BUDGET_ENV = "PONDER_SPARSE_KV_BUDGET"
BACKEND = "service.engines.sparse_attention.SparseCPUAttentionBackend"


def budget_from_env() -> int | None:
    """Read at every call, not cached: each engine process is started with its own environment."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{BUDGET_ENV}={raw!r} must be a positive whole number of tokens")
    return int(raw)


def register() -> None:
    """Idempotent: registering the same override again changes nothing. A bad budget fails here, in the first
    process that loads plugins, before any engine is built."""
    if budget_from_env() is None:
        return
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    register_backend(AttentionBackendEnum.CPU_ATTN, BACKEND)

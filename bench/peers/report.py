"""One line per (suite, row): accuracy with its standard error, latency against the plain call on the same engine,
and tokens and engine requests per problem, both as the system reported them and as its engine counted them."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bench.peers.run import RowRun

PLAIN = {"vllm": "vLLM direct (plain)", "ponder": "Ponder plain"}


def _mean_reported(outcomes: list[Any], key: str) -> tuple[float | None, int]:
    """The mean over the responses that carry the field, and how many did not."""
    values = [o.usage[key] for o in outcomes if o.error is None and o.usage and isinstance(o.usage.get(key), int | float)]
    answered = sum(o.error is None for o in outcomes)
    return (float(np.mean(values)) if values else None), answered - len(values)


def summarize(runs: list[RowRun]) -> list[dict[str, Any]]:
    rows = [_summary(run) for run in runs]
    for row in rows:
        plain = next((r for r in rows if r["suite"] == row["suite"] and r["row"] == PLAIN[row["engine"]] and r.get("p50_s")), None)
        row["p50_ratio"] = row["p50_s"] / plain["p50_s"] if plain and row.get("p50_s") else None
    return rows


def _summary(run: RowRun) -> dict[str, Any]:
    head = {"suite": run.suite, "row": run.row.label, "engine": run.row.engine, "note": run.row.note, "sampling": asdict(run.sampling)}
    if run.failed is not None:
        return head | {"failed": run.failed}
    outcomes = run.outcomes
    count = len(outcomes)
    accuracy = sum(o.correct for o in outcomes) / count
    latencies = [o.latency_s for o in outcomes if o.error is None]
    completion, completion_missing = _mean_reported(outcomes, "completion_tokens")
    total, total_missing = _mean_reported(outcomes, "total_tokens")
    engine = {k: v / count for k, v in run.engine.items()}
    engine_completion = engine.get("completion", 0.0)
    ponder = [o.ponder for o in outcomes if o.ponder and o.ponder.get("engine_requests") is not None]  # strategies only
    return head | {
        "problems": count,
        "errors": sum(o.error is not None for o in outcomes),
        "accuracy": accuracy,
        "stderr": math.sqrt(accuracy * (1 - accuracy) / count),
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        "wall_s": run.wall_s,
        "reported_completion_per_problem": completion,
        "reported_completion_missing": completion_missing,
        "reported_total_per_problem": total,
        "reported_total_missing": total_missing,
        "engine_completion_per_problem": engine_completion,
        "engine_prompt_per_problem": engine.get("prompt", 0.0),
        "engine_total_per_problem": engine_completion + engine.get("prompt", 0.0),
        "engine_requests_per_problem": engine.get("requests", 0.0),
        "http_calls_per_problem": engine.get("http_calls"),
        "reported_over_engine_completion": completion / engine_completion if completion is not None and engine_completion else None,
        "ponder_engine_requests_per_problem": float(np.mean([p["engine_requests"] for p in ponder])) if ponder else None,
        "ponder_rollouts_per_problem": float(np.mean([p["rollouts"] for p in ponder])) if ponder else None,
    }


def raw(run: RowRun) -> dict[str, Any]:
    """Everything measured, per problem, so the table can be recomputed from the result file."""
    return {
        "suite": run.suite,
        "row": run.row.label,
        "server": run.row.server,
        "engine": run.row.engine,
        "request_fields": run.row.extra_body,
        "wall_s": run.wall_s,
        "engine_counters": run.engine,
        "failed": run.failed,
        "outcomes": [asdict(o) for o in run.outcomes],
    }


def _tokens(value: float | None, missing: int) -> str:
    if value is None:
        return "not reported"
    return f"{value:.0f}" + (f" ({missing} missing)" if missing else "")


def _line(r: dict[str, Any]) -> list[str]:
    if "failed" in r:
        return [r["row"], f"failed: {r['failed'][:120]}", *[""] * 6]
    errors = f" ({r['errors']} errors)" if r["errors"] else ""
    http = f" ({r['http_calls_per_problem']:.1f} HTTP)" if r["http_calls_per_problem"] is not None else ""
    ratio = f"{r['reported_over_engine_completion']:.2f}" if r["reported_over_engine_completion"] is not None else "—"
    return [
        r["row"],
        f"{r['accuracy']:.3f} ± {r['stderr']:.3f}{errors}",
        f"{r['p50_s']:.2f} / {r['p95_s']:.2f}" if r["p50_s"] is not None else "—",
        f"{r['p50_ratio']:.2f}" if r["p50_ratio"] is not None else "—",
        f"{_tokens(r['reported_completion_per_problem'], r['reported_completion_missing'])} / {r['engine_completion_per_problem']:.0f}",
        ratio,
        f"{_tokens(r['reported_total_per_problem'], r['reported_total_missing'])} / {r['engine_total_per_problem']:.0f}{'†' if r['engine'] == 'ponder' else ''}",
        f"{r['engine_requests_per_problem']:.1f}{http}",
    ]


HEAD = [
    "row",
    "accuracy ± s.e.",
    "p50 / p95 s",
    "p50 ÷ plain",
    "completion tokens reported / engine",
    "reported ÷ engine",
    "total tokens reported / engine",
    "engine requests (HTTP calls)",
]


def table(
    rows: list[dict[str, Any]], sizes: dict[str, dict[str, Any]], host: dict[str, Any], versions: dict[str, str], peers: dict[str, dict[str, str]]
) -> str:
    """Markdown, one table per suite, each row's note below it: what the system did with the N, temperature and cap
    it was asked for."""
    peer_versions = ", ".join(f"{name} {v.get(name, 'not built')}" for name, v in peers.items())
    lines = [
        (
            f"host: {host['cpu']}, {host['cores']} cores, flags {' '.join(host['flags'])}, engine dtype {host['engine_dtype']}; "
            f"vllm {versions['vllm']}, ponder {versions['ponder']}, {peer_versions}"
        )
    ]
    for suite, size in sizes.items():
        lines += [
            "",
            (
                f"{suite}: {size['problems']} problems, N={size['n']}, T={size['temperature']}, max_tokens {size['max_tokens']}; "
                "tokens and engine requests per problem; p50 ÷ the plain call on the same engine"
            ),
            "",
            "| " + " | ".join(HEAD) + " |",
            "|" + "---|" * len(HEAD),
        ]
        mine = [r for r in rows if r["suite"] == suite]
        lines += ["| " + " | ".join(_line(r)) + " |" for r in mine]
        lines += [""] + [f"- {r['row']}: {r['note']}" for r in mine if r["note"]]
    lines += [
        "",
        (
            "± is the standard error sqrt(p(1-p)/n). Engine counts: vLLM's Prometheus counters (a request with n samples is n "
            "engine requests, each counting the prompt; HTTP: calls to its chat route); Ponder: its engine's generated tokens "
            "(/health) and the completions the gateway ran (/metrics). † Ponder's engine exports no prompt count: its total "
            "adds the gateway's prompt tokens, counted once per prompt where vLLM's engine counts a prompt once per sample."
        ),
    ]
    return "\n".join(lines)

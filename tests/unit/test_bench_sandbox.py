"""The sandbox benchmark's arithmetic: statistics with their spread over repeats, the verification's time read from a
best_of_n trace, and which verdicts count as differing between the two implementations."""

from __future__ import annotations

from typing import Any

import pytest

from bench.sandbox import verification_s
from bench.sandbox_report import ratios, spread, summarize_part_a, summarize_side, verdicts_differ


def test_spread_pools_every_sample_and_keeps_the_single_repeats_extremes() -> None:
    stats = spread([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    assert stats["n"] == 6
    assert stats["p50_s"] == pytest.approx(3.0)
    assert stats["mean_s"] == pytest.approx(3.0)
    assert stats["repeat_p50_s"] == [2.0, 4.0]
    assert stats["repeat_p95_s"] == [pytest.approx(2.9), pytest.approx(4.9)]


def test_ratios_are_after_over_before_of_each_statistic() -> None:
    before = {"p50_s": 0.05, "p95_s": 0.1, "mean_s": 0.06}
    after = {"p50_s": 0.06, "p95_s": 0.1, "mean_s": 0.03}
    assert ratios(after, before) == {"p50": pytest.approx(1.2), "p95": pytest.approx(1.0), "mean": pytest.approx(0.5)}


def test_verification_runs_from_the_last_rollout_to_the_last_test_report() -> None:
    trace = [
        {"t": 1.0, "type": "rollout", "index": 0},
        {"t": 2.5, "type": "rollout", "index": 1},
        {"t": 2.7, "type": "tested", "index": 1},
        {"t": 3.0, "type": "tested", "index": 0},
    ]
    assert verification_s(trace) == pytest.approx(0.5)
    assert verification_s(trace[:2]) is None  # nothing was tested (another selector)


def part_a_run(side: str, repeat: int, problem: str, passed: int, wall_s: float = 0.05) -> dict[str, Any]:
    return {
        "repeat": repeat,
        "problem": problem,
        "side": side,
        "first": True,
        "wall_s": wall_s,
        "passed": passed,
        "total": 1,
        "status": "ok",
        "startup_wall_s": wall_s / 2,
        "startup_ok": True,
    }


def test_part_a_counts_passes_per_repeat_and_names_the_problems_whose_verdict_differs() -> None:
    runs = [part_a_run(side, repeat, problem, 1) for side in ("before", "after") for repeat in (0, 1) for problem in ("p0", "p1")]
    runs[-1] = part_a_run("after", 1, "p1", 0, wall_s=0.1)  # fails once, in the second repeat only
    summary = summarize_part_a(runs, 2)
    assert summary["before"]["passed"] == [2, 2] and summary["after"]["passed"] == [2, 1]
    assert summary["after"]["failed"] == ["p1"] and summary["before"]["failed"] == []
    assert summary["verdicts_differ"] == ["p1"]
    assert summary["after"]["problems"] == 2
    assert summary["ratio"]["run_tests"]["mean"] == pytest.approx(0.0625 / 0.05)


def bon_row(repeat: int, wall_s: float, tests: list[int], verify_s: float | None = 1.0, texts: str = "ab") -> dict[str, Any]:
    candidates = [
        {"index": i, "sha256": text, "tests": {"passed": p, "total": 2, "status": "ok"}} for i, (text, p) in enumerate(zip(texts, tests, strict=True))
    ]
    outcome = {
        "problem": "p0",
        "latency_s": wall_s,
        "completion_tokens": 80,
        "server_latency_s": 4.0,
        "verify_s": verify_s,
        "sandbox": "bwrap",
        "chosen": 0,
        "candidates": candidates,
    }
    return {"kind": "best_of_n", "repeat": repeat, "wall_s": wall_s, "outcomes": [outcome]}


def plain_row(repeat: int, wall_s: float) -> dict[str, Any]:
    return {"kind": "plain", "repeat": repeat, "wall_s": wall_s, "outcomes": [{"problem": "p0", "latency_s": wall_s, "completion_tokens": 10}]}


def test_a_side_is_best_of_n_over_plain_per_problem_with_the_verifications_share() -> None:
    summary = summarize_side([plain_row(0, 1.0), bon_row(0, 4.0, [2, 1]), plain_row(1, 2.0), bon_row(1, 4.0, [2, 1])])
    assert summary["plain"]["wall_s_per_problem"] == pytest.approx(1.5) and summary["plain"]["spread_s"] == [1.0, 2.0]
    assert summary["ratio"] == pytest.approx(4.0 / 1.5)
    assert summary["ratio_spread"] == [pytest.approx(2.0), pytest.approx(4.0)]
    assert summary["verify_s_per_request"] == pytest.approx(1.0) and summary["verify_share"] == pytest.approx(0.25)
    assert summary["sandbox"] == ["bwrap"]


def test_only_candidates_drawn_alike_on_both_servers_can_differ_in_verdict() -> None:
    before = [bon_row(0, 4.0, [2, 1], texts="ab")]
    after = [bon_row(0, 4.0, [2, 2], texts="ab")]
    found = verdicts_differ(before, after)
    assert found["candidates"] == 2 and found["same_text"] == 2
    assert [(d["index"], d["before"]["passed"], d["after"]["passed"]) for d in found["verdicts_differ"]] == [(1, 1, 2)]
    redrawn = verdicts_differ(before, [bon_row(0, 4.0, [2, 2], texts="ac")])  # candidate 1 is another text: not comparable
    assert redrawn["same_text"] == 1 and redrawn["verdicts_differ"] == []

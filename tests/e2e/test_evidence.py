"""Planning evidence through the real server: out of the box `GET /v1/cost-model` plans from the runs shipped with
the package; `ponder import-results`, run as a user runs it against the server's Redis, adds a run that the next
plans use, a Kinetics request included, and the dashboard shows, without a restart; a bad file changes nothing;
and a graded request becomes ledger evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import ROOT, Server
from tests.e2e.test_strategies import ponder_of

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
# A family of this session's own: the server's Redis (and its ledger, whose graded records stay) outlives a test run.
FAMILY = f"evidence{uuid.uuid4().hex[:8]}"
RUN = f"accuracy-{FAMILY}-20261205T000000Z"
SHIPPED = ROOT / "service" / "planning" / "reference" / "accuracy-arithmetic-20261123T132821Z.json"


def cost_model(server: Server, family: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.api}/cost-model", params={"model": MODEL, "budget": 1e12, "prompt_tokens": 40, "max_tokens": 64, "family": family}, timeout=30
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def eventually(check: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def ponder_cli(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "import-results", *args],
        cwd=ROOT,
        env={**os.environ, "PONDER_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def run_file(tmp_path: Path, redis_url: str) -> Iterator[Path]:
    """A shipped arithmetic run under a family of its own, so that only this test's plans learn from it; removed
    from the server's Redis afterwards."""
    path = tmp_path / f"{RUN}.json"
    path.write_text(SHIPPED.read_text())
    yield path
    ponder_cli("--remove", RUN, redis_url=redis_url)


def test_out_of_the_box_the_plans_learn_from_the_shipped_runs(server: Server) -> None:
    evidence = cost_model(server, "arithmetic")["evidence"]
    assert {s["run"] for s in evidence["shipped"]} == {
        "accuracy-arithmetic-20261123T124623Z",
        "accuracy-arithmetic-20261123T132821Z",
        "early_stop-arithmetic-20261201T233116Z",
        "kinetics-arithmetic-20261202T160301Z",
        "accuracy-arithmetic-20261205T054220Z",
    }
    assert evidence["imported"] == [] and evidence["results_dir"] == [] and not evidence["prior_only"]
    assert evidence["observations"] >= sum(s["records"] for s in evidence["shipped"]) > 3000


def test_an_imported_run_is_planned_from_and_shown_without_a_restart(server: Server, client: OpenAI, redis_url: str, run_file: Path, tmp_path: Path) -> None:
    before = cost_model(server, FAMILY)
    assert before["evidence"]["prior_only"] and before["evidence"]["shipped"] == []

    bad = tmp_path / f"accuracy-{FAMILY}-20261206T000000Z.json"
    bad.write_text(json.dumps({"benchmark": "accuracy", "runs": "none"}))
    refused = ponder_cli(str(run_file), str(bad), redis_url=redis_url)
    assert refused.returncode == 1 and f"{bad.stem}: not a benchmark result" in refused.stderr and "nothing imported" in refused.stderr

    done = ponder_cli(str(run_file), redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert [r["run"] for r in json.loads(done.stdout)["imported"]] == [RUN]
    after = eventually(lambda: cost_model(server, FAMILY), lambda body: bool(body["evidence"]["imported"]), timeout_s=30)
    evidence = after["evidence"]
    assert evidence["imported"] == [{"run": RUN, "records": 240}] and evidence["observations"] == 240 and not evidence["prior_only"]
    assert after["plan"]["predicted_accuracy"] != before["plan"]["predicted_accuracy"]  # the table, not the prior, decided
    assert bad.stem not in json.dumps(after)

    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Compute 12 + 30. Reply with just the number."}],
        max_tokens=24,
        extra_body={"strategy": {"name": "kinetics", "budget": {"eflops": 4e11}, "family": FAMILY}, "verifier": {"reference": "42"}},
    )
    ponder = ponder_of(response)
    assert ponder["selection"]["evidence"]["observations"] >= 240 and ponder["correct"] in (True, False)

    dashboard = httpx.get(f"{server.base_url}/dashboard/data", timeout=60).json()
    assert RUN in dashboard["sources"]["imported"] and FAMILY in dashboard["families"]
    assert {p["label"] for p in dashboard["points"] if p["family"] == FAMILY} >= {"plain T=0", "majority n=16 T=0.4"}

    # The graded request joins the evidence once the ledger is read again (every 30 s at most).
    learnt = eventually(lambda: cost_model(server, FAMILY), lambda body: body["evidence"]["ledger"]["records"] >= 1, timeout_s=60)
    assert learnt["evidence"]["ledger"]["graded"] >= 1 and learnt["evidence"]["observations"] >= 241

    removed = ponder_cli("--remove", RUN, redis_url=redis_url)
    assert json.loads(removed.stdout) == {"removed": [RUN]}
    gone = eventually(lambda: cost_model(server, FAMILY), lambda body: not body["evidence"]["imported"], timeout_s=30)
    assert gone["evidence"]["imported"] == [] and gone["evidence"]["observations"] >= 1  # the ledger's record stays

"""The dashboard page in headless Chromium (Debian's `chromium`, driven by Playwright; scripts/install_browser.sh
installs it): first over a light app — the dashboard and ledger routes over the real Redis, seeded with known
traffic, and two benchmark result files — then over the real server after real requests and feedback. Each test
saves a screenshot under its pytest tmp dir and prints the path."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from openai import AsyncOpenAI
from playwright.async_api import Browser, Page, async_playwright

from service.state import store

from ..conftest import ROOT, Server, database_url, free_port
from ..unit.test_dashboard_data import BENCH_RUN, light_app, rid, seed, write_bench

CHROMIUM = Path("/usr/bin/chromium")
REAL_RUN = "accuracy-arithmetic-20261123T132821Z"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run scripts/install_browser.sh")


@dataclass
class LightServer:
    url: str
    ids: dict[str, list[str]]


@pytest.fixture(scope="module")
def light_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LightServer]:
    """uvicorn in a thread of this process, so the page has a real HTTP server and no engine is started."""
    db_url = database_url(redis_url, "dashboard_page")
    results = tmp_path_factory.mktemp("results")
    shutil.copy(ROOT / "bench" / "results" / f"{REAL_RUN}.json", results)
    write_bench(results)

    async def reset(seeded: bool) -> dict[str, list[str]]:
        redis = store.connect(db_url)
        await redis.flushdb()
        ids = await seed(redis, time.time()) if seeded else {}
        await redis.aclose()
        return ids

    ids = asyncio.run(reset(seeded=True))
    server = uvicorn.Server(uvicorn.Config(light_app(db_url, results), host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the light dashboard server did not start"
        time.sleep(0.05)
    yield LightServer(f"http://127.0.0.1:{server.config.port}", ids)
    server.should_exit = True
    thread.join(10)
    asyncio.run(reset(seeded=False))


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        await chromium.close()


@dataclass
class Dashboard:
    """The page, with every console error and uncaught exception it produced."""

    page: Page
    errors: list[str] = field(default_factory=list)

    async def renders(self) -> int:
        return int(await self.page.evaluate("Number(document.body.dataset.renders || 0)"))

    async def choose(self, name: str, value: str) -> None:
        """Picks a filter and waits for the refetch it causes to be drawn."""
        before = await self.renders()
        await self.page.select_option(f"#filters select[name={name}]", value)
        await self.page.wait_for_function(f"Number(document.body.dataset.renders) > {before}")

    async def traces(self, chart: str) -> list[dict[str, Any]]:
        return await self.page.evaluate(
            "(id) => document.getElementById(id).data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y), ids: t.customdata ? Array.from(t.customdata) : []}))",
            chart,
        )

    async def rows(self) -> list[dict[str, str]]:
        return await self.page.evaluate(
            "() => Array.from(document.querySelectorAll('#recent tbody tr')).map(tr => ({id: tr.dataset.id, correct: tr.querySelector('[data-correct]').dataset.correct}))"
        )

    async def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        await self.page.screenshot(path=str(path), full_page=full_page)
        print(f"dashboard screenshot: {path}")


async def open_dashboard(browser: Browser, url: str) -> Dashboard:
    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    dashboard = Dashboard(page)
    page.on("console", lambda message: dashboard.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: dashboard.errors.append(str(error)))
    await page.goto(f"{url}/dashboard")
    await page.wait_for_function("Number(document.body.dataset.renders) >= 1")
    await page.uncheck("#filters input[name=auto]")  # only the test's own actions refetch, so each wait is for them
    return dashboard


def named(traces: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in traces if t["name"] == name)


async def test_the_page_draws_the_seeded_ledger_and_benchmarks(browser: Browser, light_server: LightServer, tmp_path: Path) -> None:
    dashboard = await open_dashboard(browser, light_server.url)
    page = dashboard.page
    accuracy = await dashboard.traces("accuracy-chart")
    assert [t["name"] for t in accuracy] == [
        "served traffic",
        "served traffic · Pareto front",
        f"benchmark {REAL_RUN}",
        f"benchmark {REAL_RUN} · Pareto front",
        f"benchmark {BENCH_RUN}",
        f"benchmark {BENCH_RUN} · Pareto front",
    ]
    served = named(accuracy, "served traffic")
    assert sorted(zip(served["x"], served["y"], strict=True)) == [(10, 0.5), (66, 0.75)]  # best_of_n has no known answers
    assert named(accuracy, f"benchmark {BENCH_RUN} · Pareto front")["x"] == [10, 40]
    assert len(named(accuracy, f"benchmark {REAL_RUN}")["x"]) == 6
    assert await page.locator("#accuracy-chart .scatterlayer .point").count() >= 2 + 6 + 3
    assert "best_of_n(n=2, select=logprob) on other (2 requests)" in (await page.locator("#unrated").text_content() or "")
    assert [t["name"] for t in await dashboard.traces("latency-chart")] == ["latency p50", "latency p95", "latency p99", "time to first token p50"]
    assert [t["name"] for t in await dashboard.traces("volume-chart")] == ["served", "failed", "cancelled"]

    rows = await dashboard.rows()
    assert [r["id"] for r in rows] == light_server.ids["all"]
    correct = {r["id"]: r["correct"] for r in rows}
    assert (correct[rid(0)], correct[rid(1)], correct[rid(2)], correct[rid(3)]) == ("true", "true", "false", "null")
    await dashboard.screenshot(tmp_path / "dashboard.png")

    await dashboard.choose("strategy", "none")
    assert {r["id"] for r in await dashboard.rows()} == {rid(10), rid(11), rid(12), rid(31)}
    accuracy = await dashboard.traces("accuracy-chart")
    assert named(accuracy, "served traffic")["x"] == [10]
    assert len(named(accuracy, f"benchmark {REAL_RUN}")["x"]) == 2  # greedy and sampled plain calls
    await dashboard.choose("strategy", "")
    await dashboard.choose("model", "other")
    assert {r["id"] for r in await dashboard.rows()} == {rid(20), rid(21)}
    assert [t["name"] for t in await dashboard.traces("accuracy-chart")] == []
    await dashboard.choose("model", "")
    await dashboard.choose("window", "900")
    rows = await dashboard.rows()
    assert len(rows) == 11 and light_server.ids["old"][0] not in {r["id"] for r in rows}

    await page.locator(f"#recent tr[data-id='{rid(1)}']").click()
    await page.wait_for_selector(f"#detail[data-loaded='{rid(1)}']")
    assert page.url.endswith(f"#request={rid(1)}")
    detail = page.locator("#detail")
    assert await detail.is_visible() and await page.locator("#detail-title").text_content() == rid(1)
    candidates, tally = detail.locator("table.candidates"), detail.locator("table.tally")
    assert await candidates.locator("tbody tr").count() == 4 and await candidates.locator("tr.chosen").count() == 1
    assert await tally.locator("tbody tr").count() == 2 and "42" in await tally.locator("tr.chosen").inner_text()
    assert await detail.locator("table.trace tbody tr").count() == 5 and await detail.locator("table.stages tbody tr").count() == 1
    assert "from feedback" in await detail.inner_text()
    await dashboard.screenshot(tmp_path / "dashboard-detail.png", full_page=False)
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#detail", state="hidden")

    assert dashboard.errors == []
    await page.close()


async def test_an_unknown_request_in_the_url_says_so(browser: Browser, light_server: LightServer) -> None:
    dashboard = await open_dashboard(browser, light_server.url)
    await dashboard.page.goto(f"{light_server.url}/dashboard#request={'e' * 32}")
    await dashboard.page.wait_for_selector(f"#detail[data-loaded='{'e' * 32}']")
    assert "No request" in await dashboard.page.locator("#detail-body").inner_text()
    assert all("404" in e for e in dashboard.errors)  # the browser's own note of the failed fetch, nothing else
    await dashboard.page.close()


@pytest.mark.slow
async def test_the_real_server_shows_requests_with_their_correctness(server: Server, aclient: AsyncOpenAI, browser: Browser, tmp_path: Path) -> None:
    async def ask(a: int, b: int, strategy: dict[str, Any] | None) -> tuple[str, bool | None]:
        extra: dict[str, Any] = {"strategy": strategy, "verifier": {"reference": str(a + b)}} if strategy else {}
        response = await aclient.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": f"What is {a} + {b}? Reply with just the number."}],
            max_tokens=12,
            extra_body=extra,
        )
        return response.id.rsplit("-", 1)[-1], (response.model_extra or {}).get("ponder", {}).get("correct")

    voted = [await ask(a, b, {"name": "majority", "n": 4}) for a, b in ((12, 30), (7, 5))]
    plain = [await ask(a, b, None) for a, b in ((2, 2), (40, 2))]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        for (request_id, _), verdict in zip(plain, (True, False), strict=True):
            response = await http.post("/v1/feedback", json={"request_id": request_id, "correct": verdict})
            assert response.status_code == 200, response.text
    expected = {request_id: str(correct).lower() for request_id, correct in voted} | {plain[0][0]: "true", plain[1][0]: "false"}
    assert all(v in ("true", "false") for v in expected.values())  # graded against the reference, or marked

    dashboard = await open_dashboard(browser, server.base_url)
    rows = {r["id"]: r["correct"] for r in await dashboard.rows()}
    assert {i: rows.get(i) for i in expected} == expected
    served = named(await dashboard.traces("accuracy-chart"), "served traffic")
    for setting in ("none", "majority(n=4"):  # a plain call's setting carries its n, temperature and max_tokens
        assert any(i.startswith(f"request|smollm2-135m|{setting}") for i in served["ids"]), (setting, served["ids"])
    await dashboard.screenshot(tmp_path / "dashboard-real.png")
    voted_id = voted[0][0]
    await dashboard.page.locator(f"#recent tr[data-id='{voted_id}']").click()
    await dashboard.page.wait_for_selector(f"#detail[data-loaded='{voted_id}']")
    candidates = dashboard.page.locator("#detail table.candidates")
    assert await candidates.locator("tbody tr").count() == 4 and await candidates.locator("tr.chosen").count() == 1
    await dashboard.screenshot(tmp_path / "dashboard-real-detail.png", full_page=False)
    assert dashboard.errors == []
    await dashboard.page.close()

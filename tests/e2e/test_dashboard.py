"""The dashboard page in headless Chromium (Debian's `chromium`, driven by Playwright; scripts/install_browser.sh
installs it): first over a light app — the dashboard and ledger routes over the real Redis, seeded with known
traffic, the runs shipped with the package, two benchmark result files in a results directory and one run imported
into Redis — then over the real server after real requests and feedback. Each test saves a screenshot under its
pytest tmp dir and prints the path; the first also reads the screenshot's pixels, to see that every family's panel
has its chart drawn."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from openai import AsyncOpenAI
from PIL import Image
from playwright.async_api import Browser, Page, async_playwright

from service.state import store
from service.state.imports import ImportedResults, ResultRun
from service.state.results import read_result_file

from ..conftest import ROOT, Server, database_url, free_port
from ..unit.test_dashboard_data import BENCH_RUN, light_app, rid, seed, write_bench

CHROMIUM = Path("/usr/bin/chromium")
REAL_RUN = "accuracy-arithmetic-20261123T132821Z"
IMPORTED_RUN = "accuracy-tiny-20261201T000000Z"


@dataclass
class LightServer:
    url: str
    ids: dict[str, list[str]]


@pytest.fixture(scope="module")
def light_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LightServer]:
    """uvicorn in a thread of this process, so the page has a real HTTP server and no engine is started."""
    db_url = database_url(redis_url, "dashboard_page")
    results, staging = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("imported")
    shutil.copy(ROOT / "bench" / "results" / f"{REAL_RUN}.json", results)  # also shipped: the results directory's copy wins
    write_bench(results)
    imported = staging / f"{IMPORTED_RUN}.json"
    imported.write_text((results / f"{BENCH_RUN}.json").read_text())  # the same settings measured again

    async def reset(seeded: bool) -> dict[str, list[str]]:
        redis = store.connect(db_url)
        await redis.flushdb()
        ids = await seed(redis, time.time()) if seeded else {}
        if seeded:
            await ImportedResults(redis).put([ResultRun(*read_result_file(imported))])
        await redis.aclose()
        return ids

    ids = asyncio.run(reset(seeded=True))
    app = light_app(db_url, results, shipped=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
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
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run scripts/install_browser.sh (scripts/install_test_tools.sh does)")
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
        """The traces plotly drew in a chart: `#id`, or a family's panel by its name."""
        selector = chart if chart.startswith("#") else f"#accuracy-panels .family[data-family='{chart}'] .chart"
        return await self.page.evaluate(
            "(selector) => document.querySelector(selector).data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y), ids: t.customdata ? Array.from(t.customdata) : []}))",
            selector,
        )

    async def families(self) -> list[str]:
        return await self.page.evaluate("() => Array.from(document.querySelectorAll('#accuracy-panels .family')).map(p => p.dataset.family)")

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


def drawn_pixels(png: bytes) -> int:
    """Pixels of a saturated colour: markers, error bars and the front's labels, not the white, grey and black of an
    empty chart's paper, grid, axes and text."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


async def test_the_page_draws_the_seeded_ledger_and_benchmarks(browser: Browser, light_server: LightServer, tmp_path: Path) -> None:
    dashboard = await open_dashboard(browser, light_server.url)
    page = dashboard.page
    # One panel per task family: the shipped suites, the tiny run's family, and served traffic that named none.
    assert await dashboard.families() == ["arithmetic", "humaneval", "tiny", "tools_json", "default"]
    tiny = await dashboard.traces("tiny")
    assert [t["name"] for t in tiny] == ["majority n=4 T=0.4", "majority n=8 T=0.4", "plain T=0", "Pareto front"]
    assert named(tiny, "majority n=4 T=0.4")["x"] == [40, 40]  # one series, a point from each run: results directory and imported
    assert {i.split("|")[0] for i in named(tiny, "majority n=4 T=0.4")["ids"]} == {f"benchmark:{BENCH_RUN}", f"benchmark:{IMPORTED_RUN}"}
    assert named(tiny, "Pareto front")["x"] == [10, 10, 40, 40]
    served = await dashboard.traces("default")
    assert [t["name"] for t in served] == ["majority n=4", "plain", "Pareto front"]  # best_of_n has no known answers
    assert sorted(
        zip(named(served, "plain")["x"] + named(served, "majority n=4")["x"], named(served, "plain")["y"] + named(served, "majority n=4")["y"], strict=True)
    ) == [
        (10, 0.5),
        (66, 0.75),
    ]
    arithmetic = await dashboard.traces("arithmetic")
    series = [t["name"] for t in arithmetic]
    assert {"plain T=0", "majority n=8 T=0.4", "majority n=16 T=0.8", "Pareto front"} <= set(series)
    assert not any("accuracy-" in name or ".json" in name for name in series)  # named by setting, never by file
    assert len(named(arithmetic, "majority n=8 T=0.4")["x"]) == 2  # the two arithmetic accuracy runs
    humaneval = [t["name"] for t in await dashboard.traces("humaneval")]
    assert "best_of_n n=8 T=0.8 score=self_certainty select=code_tests" in humaneval and "majority n=8 T=0.4" not in humaneval
    assert "best_of_n(n=2, select=logprob) on other (2 requests)" in (await page.locator("#unrated").text_content() or "")
    assert "1 imported" in (await page.locator("#status").text_content() or "")
    assert [t["name"] for t in await dashboard.traces("#latency-chart")] == ["latency p50", "latency p95", "latency p99", "time to first token p50"]
    assert [t["name"] for t in await dashboard.traces("#volume-chart")] == ["served", "failed", "cancelled"]

    rows = await dashboard.rows()
    assert [r["id"] for r in rows] == light_server.ids["all"]
    correct = {r["id"]: r["correct"] for r in rows}
    assert (correct[rid(0)], correct[rid(1)], correct[rid(2)], correct[rid(3)]) == ("true", "true", "false", "null")
    await dashboard.screenshot(tmp_path / "dashboard.png")
    # As a user sees it: every panel has its chart drawn, and the page around them is not blank.
    for family in await dashboard.families():
        panel = page.locator(f"#accuracy-panels .family[data-family='{family}']")
        png = await panel.screenshot(path=str(tmp_path / f"dashboard-{family}.png"))
        assert drawn_pixels(png) > 300, family
        assert await panel.locator(".scatterlayer .point").count() >= 2
    assert drawn_pixels(await page.screenshot(full_page=True)) > 5000

    await dashboard.choose("strategy", "none")
    assert {r["id"] for r in await dashboard.rows()} == {rid(10), rid(11), rid(12), rid(31)}
    assert [t["name"] for t in await dashboard.traces("default")] == ["plain", "Pareto front"]
    assert {t["name"] for t in await dashboard.traces("arithmetic")} == {"plain T=0", "plain T=0.4", "plain T=0.8", "Pareto front"}
    await dashboard.choose("strategy", "")
    await dashboard.choose("model", "other")
    assert {r["id"] for r in await dashboard.rows()} == {rid(20), rid(21)}
    assert await dashboard.families() == [] and await page.locator("#accuracy-empty").is_visible()
    await dashboard.choose("model", "")
    assert await dashboard.families() == ["arithmetic", "humaneval", "tiny", "tools_json", "default"]
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
    assert "default" in await dashboard.families()
    served = [i for t in await dashboard.traces("default") for i in t["ids"]]
    for setting in ("none", "majority(n=4"):  # a plain call's setting carries its n, temperature and max_tokens
        assert any(i.startswith(f"request|default|smollm2-135m|{setting}") for i in served), (setting, served)
    await dashboard.screenshot(tmp_path / "dashboard-real.png")
    voted_id = voted[0][0]
    await dashboard.page.locator(f"#recent tr[data-id='{voted_id}']").click()
    await dashboard.page.wait_for_selector(f"#detail[data-loaded='{voted_id}']")
    candidates = dashboard.page.locator("#detail table.candidates")
    assert await candidates.locator("tbody tr").count() == 4 and await candidates.locator("tr.chosen").count() == 1
    await dashboard.screenshot(tmp_path / "dashboard-real-detail.png", full_page=False)
    assert dashboard.errors == []
    await dashboard.page.close()

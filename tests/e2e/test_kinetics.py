"""Kinetics budgeting through the real server and model with the official client: a budget in eFLOPs or tokens
becomes a plan that the request cannot overspend, every response reports its eFLOPs by the same cost model, and
`GET /v1/cost-model` explains what a budget buys."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from compute.cost_model import HardwareProfile, ModelShape, realised_cost
from tests.conftest import Server
from tests.e2e.test_strategies import ARITHMETIC, ponder_of

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"


def explained(server: Server, **query: object) -> httpx.Response:
    return httpx.get(f"{server.api}/cost-model", params={"model": MODEL, **query}, timeout=30)


def pricing(server: Server) -> tuple[ModelShape, HardwareProfile]:
    body = explained(server, budget=1e12).json()
    return ModelShape(**body["shape"]), HardwareProfile(**body["hardware"])


def test_a_kinetics_plan_fits_its_budget_and_the_request_cannot_overspend_it(server: Server, client: OpenAI) -> None:
    budget = 2.0e12
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=64, extra_body={"strategy": {"name": "kinetics", "budget": {"eflops": budget}, "temperature": 0.7}}
    )
    ponder = ponder_of(response)
    selection, plan = ponder["selection"], ponder["selection"]["plan"]
    assert selection["method"] == "kinetics" and plan["worst_eflops"] <= budget and plan["attention"] == "dense"
    assert plan["max_tokens"] <= 64
    assert len(ponder["candidates"]) == plan["n"] and all(c["tokens"] <= plan["max_tokens"] for c in ponder["candidates"])
    assert response.usage.completion_tokens <= plan["n"] * plan["max_tokens"] and ponder["budget"]["max_total_tokens"] <= plan["n"] * plan["max_tokens"]
    assert selection["within_budget"] and ponder["cost"]["eflops"] <= budget
    assert ponder["cost"]["eflops"] == pytest.approx(selection["realised_eflops"], rel=1e-9)  # one engine call: the same pricing
    assert selection["considered"][0]["feasible"] and selection["inner"]["method"] == "majority"


def test_kinetics_streams_its_plan_first_and_takes_a_budget_in_tokens(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ARITHMETIC,
        max_tokens=64,
        stream=True,
        extra_body={"strategy": {"name": "kinetics", "budget": {"tokens": 48}, "inner": "best_of_n"}},
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if c.model_extra.get("ponder", {}).get("event")]
    final = next(c.model_extra["ponder"] for c in chunks if "selection" in c.model_extra.get("ponder", {}))
    assert events[0]["type"] == "plan" and events[0]["n"] == final["selection"]["plan"]["n"]
    assert final["selection"]["budget"]["tokens"] == 48 and final["selection"]["inner"]["method"] == "best_of_n"
    assert final["cost"]["eflops"] <= final["selection"]["budget"]["eflops"]


def test_a_budget_that_buys_nothing_is_a_clear_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ARITHMETIC, max_tokens=8, extra_body={"strategy": {"name": "kinetics", "budget": {"eflops": 10}}})
    assert caught.value.body["param"] == "strategy.budget" and "one token" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as both:
        client.chat.completions.create(
            model=MODEL, messages=ARITHMETIC, max_tokens=8, extra_body={"strategy": {"name": "kinetics", "budget": {"eflops": 1e12, "tokens": 9}}}
        )
    assert both.value.body["param"].startswith("strategy.budget")


def test_every_response_reports_its_eflops_by_the_same_cost_model(server: Server, client: OpenAI) -> None:
    shape, hardware = pricing(server)
    plain = client.chat.completions.create(model=MODEL, messages=ARITHMETIC, max_tokens=12)
    cost = ponder_of(plain)["cost"]
    expected = realised_cost(shape, hardware, plain.usage.prompt_tokens, [plain.usage.completion_tokens]).total
    assert cost["eflops"] == pytest.approx(expected, rel=1e-9) and cost["attention"] == {MODEL: {"mode": "dense"}}
    assert cost["seconds"] == pytest.approx(expected / hardware.flops) and cost["hardware"]["name"] == hardware.name
    stream = client.chat.completions.create(model=MODEL, messages=ARITHMETIC, max_tokens=12, stream=True, stream_options={"include_usage": True})
    last = list(stream)[-1]
    assert last.model_extra["ponder"]["cost"]["eflops"] == pytest.approx(
        realised_cost(shape, hardware, last.usage.prompt_tokens, [last.usage.completion_tokens]).total, rel=1e-9
    )
    voted = client.chat.completions.create(model=MODEL, messages=ARITHMETIC, max_tokens=12, extra_body={"strategy": {"name": "majority", "n": 3}})
    lengths = [c["tokens"] for c in ponder_of(voted)["candidates"]]
    assert ponder_of(voted)["engine_requests"] == 1  # so the prompt was counted once
    assert ponder_of(voted)["cost"]["eflops"] == pytest.approx(realised_cost(shape, hardware, voted.usage.prompt_tokens, lengths).total, rel=1e-9)


def test_the_cost_model_endpoint_explains_a_plan(server: Server) -> None:
    budget = 1e11  # on this host's profile: a few short samples, not 32 samples of 256 tokens
    body = explained(server, budget=budget, prompt_tokens=40, max_tokens=256).json()
    assert body["object"] == "ponder.cost_model" and body["shape"]["layers"] == 30 and body["shape"]["kv_heads"] == 3
    plan, considered = body["plan"], body["considered"]
    assert plan["worst_eflops"] <= budget and plan["max_tokens"] <= 256 and plan["reason"]
    assert considered[0]["feasible"] and {c["feasible"] for c in considered} == {True, False}
    chosen = (plan["n"], plan["max_tokens"], plan["kv_budget"])
    assert chosen in {(c["n"], c["max_tokens"], c["kv_budget"]) for c in considered}
    assert all(c["worst_eflops"] > budget for c in considered if not c["feasible"])
    assert all(c["predicted_accuracy"] <= plan["predicted_accuracy"] for c in considered if c["feasible"])
    more = explained(server, budget=10 * budget, prompt_tokens=40, max_tokens=256).json()["plan"]
    assert more["predicted_accuracy"] >= plan["predicted_accuracy"]
    tokens = explained(server, budget=100, unit="tokens", prompt_tokens=40).json()
    assert tokens["budget"]["unit"] == "tokens" and tokens["plan"]["worst_eflops"] <= tokens["budget"]["eflops"]


@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        ({"budget": 1e12, "model": "no-such-model"}, 404, "model"),
        ({"budget": -1}, 400, "budget"),
        ({"budget": 10}, 400, "budget"),
        ({"budget": 1e12, "unit": "joules"}, 400, "unit"),
        ({"budget": 1e12, "prompt_tokens": 9000}, 400, "prompt_tokens"),
        ({"budget": 1e12, "unit": "dollars"}, 400, "budget"),
    ],
)
def test_bad_cost_model_queries_are_clear_errors(server: Server, query: dict, status: int, param: str) -> None:
    response = explained(server, **query)
    assert response.status_code == status and response.json()["error"]["param"] == param


def test_auto_estimates_difficulty_and_reports_its_choice(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=24, extra_body={"strategy": {"name": "auto", "budget": {"tokens": 400}, "probes": 4}}
    )
    ponder = ponder_of(response)
    selection = ponder["selection"]
    assert selection["method"] == "auto" and selection["choice"] in ("probe_vote", "majority")
    difficulty = selection["difficulty"]
    assert difficulty["probes"] == 4 and 0 <= difficulty["agreement"] <= 1 and difficulty["bin"] in (1, 2, 3)
    assert ponder["tokens"]["probe"]["completion_tokens"] > 0
    assert ponder["cost"]["eflops"] <= selection["budget"]["eflops"]
    if selection["choice"] != "probe_vote":
        assert selection["plan"]["worst_eflops"] <= selection["budget"]["eflops"] - selection["budget"]["probe_eflops"]


def test_auto_streams_its_difficulty_before_the_answer(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ARITHMETIC, max_tokens=24, stream=True, extra_body={"strategy": {"name": "auto", "budget": {"tokens": 400}}}
    )
    chunks = list(stream)
    events = [c.model_extra["ponder"]["event"] for c in chunks if c.model_extra.get("ponder", {}).get("event")]
    kinds = [e["type"] for e in events]
    assert "difficulty" in kinds and kinds.index("difficulty") > 0  # after the probes' own rollout events
    final = next(c.model_extra["ponder"] for c in chunks if "selection" in c.model_extra.get("ponder", {}))
    assert next(e for e in events if e["type"] == "difficulty")["choice"] == final["selection"]["choice"]

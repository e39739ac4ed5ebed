"""Which of vLLM's exceptions are the caller's fault (a 400) and which the engine's (its replica replaced): a
validation error that is neither ValueError nor TypeError once reached the client as a 503, so the actor's
translation is checked on the exceptions vLLM itself raises."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vllm.exceptions import VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

from compute.protocol import EngineDead, EngineRequestError
from service.engines.actor import EngineActor

translate = EngineActor.__ray_actor_class__._translate


def actor(errored: bool = False) -> SimpleNamespace:
    return SimpleNamespace(engine=SimpleNamespace(errored=errored))


@pytest.mark.parametrize(
    "exc",
    [VLLMValidationError("The decoder prompt cannot be empty", parameter="prompt"), ValueError("bad value"), TypeError("bad type")],
    ids=["vllm validation", "value", "type"],
)
def test_a_refused_request_is_a_request_error(exc: Exception) -> None:
    translated = translate(actor(), exc)
    assert isinstance(translated, EngineRequestError)
    assert str(exc) in str(translated)


def test_a_dead_engine_is_dead_whatever_the_request_did() -> None:
    assert isinstance(translate(actor(), EngineDeadError()), EngineDead)
    assert isinstance(translate(actor(errored=True), VLLMValidationError("late")), EngineDead)


def test_a_failed_generate_stays_the_engines_failure() -> None:
    exc = EngineGenerateError("scheduler failed")
    assert translate(actor(), exc) is exc

"""The pool's start-up supervision without Ray: `EngineActor` is replaced by a scripted stand-in whose `ready` fails
the way Ray reports it. The real actor dying under a start (its node killed) is tests/e2e/test_multinode.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from ray.exceptions import RayActorError

from compute.protocol import EngineInfo
from service.engines import pool as pool_module
from service.engines.pool import EnginePool
from service.settings import ModelSpec

INFO = EngineInfo(model="scripted", max_model_len=128, dtype="float32")


class ScriptedActor:
    """Each `.options(...).remote(...)` is one start; `outcomes` says how each start's `ready` ends, in turn."""

    def __init__(self, outcomes: list[BaseException | EngineInfo]) -> None:
        self.outcomes = outcomes
        self.started: list[str] = []

    def options(self, **options: Any) -> ScriptedActor:
        self.started.append(options["name"])
        return self

    def remote(self, *args: Any) -> Any:
        outcome = self.outcomes.pop(0)

        async def ready() -> EngineInfo:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        handle = type("Handle", (), {})()
        handle.ready = type("Method", (), {"remote": staticmethod(ready)})()
        return handle


@pytest.fixture
def actor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedActor]:
    scripted = ScriptedActor([])
    monkeypatch.setattr(pool_module, "EngineActor", scripted)
    monkeypatch.setattr(pool_module.ray, "kill", lambda *a, **k: None)
    yield scripted


def pool() -> EnginePool:
    return EnginePool(
        spec=ModelSpec(),
        model_path="/nonexistent",
        engine_args={},
        env={},
        namespace="test",
        start_timeout_s=5,
        health_interval_s=0.01,
        retries=1,
    )


async def test_a_replica_whose_actor_died_while_starting_is_started_again(actor: ScriptedActor) -> None:
    """Its node died under it (a replacement placed on a node that was going): the engine is not at fault, so the
    replica is not given up on, as it would be if the engine itself had failed to start."""
    actor.outcomes = [RayActorError(error_msg="The actor died unexpectedly before finishing this task."), INFO]
    engines = pool()
    engines.start()
    try:
        await engines.wait_ready(5)
        (replica,) = engines.replicas
        assert replica.state == "ready" and replica.info == INFO
        assert len(actor.started) == 2 and actor.started[0] != actor.started[1]
    finally:
        await engines.stop()


async def test_an_engine_that_fails_its_own_start_is_not_retried(actor: ScriptedActor) -> None:
    actor.outcomes = [RayActorError(error_msg="engine init raised", actor_init_failed=True), INFO]
    engines = pool()
    engines.start()
    try:
        await engines.wait_ready(5)
        await asyncio.sleep(0.1)  # a retry, if one were wrongly scheduled, would have started by now
        (replica,) = engines.replicas
        assert replica.state == "failed" and replica.error is not None and replica.error.startswith("start failed")
        assert len(actor.started) == 1
    finally:
        await engines.stop()

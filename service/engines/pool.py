"""The replicas of one served model, supervised.

A replica is replaced (actor killed, a fresh one started) when its actor dies or its engine reports itself dead:
after an engine-process crash the actor stays up and answers every call with an error, so the supervisor checks
the engine's health, not just the actor's. A request whose replica dies before it produced output is retried on
a ready replica; one that had already produced output fails with `EngineUnavailable` (a clean 503), never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from compute.protocol import EngineChunk, EngineDead, EngineInfo, EngineRequestError, EngineStats, SamplingSpec
from service import metrics
from service.engines.actor import EngineActor
from service.settings import ModelSpec

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 30.0


class EngineUnavailable(RuntimeError):
    """No replica can serve the request now (all starting, or the one serving it died mid-request)."""


@dataclass
class Replica:
    index: int
    name: str
    handle: Any = None
    state: str = "starting"  # starting | ready | failed (could not start; not retried)
    inflight: int = 0
    restarts: int = 0
    info: EngineInfo | None = None
    error: str | None = None


@dataclass
class EnginePool:
    spec: ModelSpec
    model_path: str
    engine_args: dict[str, Any]
    env: dict[str, str]
    namespace: str
    start_timeout_s: float
    health_interval_s: float
    retries: int
    replicas: list[Replica] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _generation: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def info(self) -> EngineInfo | None:
        return next((r.info for r in self.replicas if r.info is not None), None)

    @property
    def ready(self) -> bool:
        return any(r.state == "ready" for r in self.replicas)

    def start(self) -> None:
        """Starts every replica in the background; `ready` turns true as soon as one is up."""
        self.replicas = [Replica(index=i, name="") for i in range(self.spec.replicas)]
        for replica in self.replicas:
            self._spawn(self._launch(replica))
        self._spawn(self._supervise())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for replica in self.replicas:
            if replica.handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(replica.handle, no_restart=True)

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: self.ready or self._all_failed())

    def _all_failed(self) -> bool:
        return all(r.state == "failed" for r in self.replicas)

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], sampling: SamplingSpec, flush_interval_s: float = 0.0
    ) -> AsyncGenerator[EngineChunk, None]:
        """Streams the engine's chunks; aborts the engine request if the consumer stops early or is cancelled."""
        for attempt in itertools.count():
            replica = await self._pick()
            replica.inflight += 1
            produced = finished = False
            try:
                stream = replica.handle.generate.options(num_returns="streaming").remote(request_id, prompt_token_ids, sampling, flush_interval_s)
                async for ref in stream:
                    chunk: EngineChunk = await ref
                    produced = True
                    finished = chunk.finished
                    yield chunk
                finished = True
                return
            except (RayActorError, EngineDead) as exc:
                finished = True
                self._replace(replica, f"{type(exc).__name__}: {exc}")
                if produced or attempt >= self.retries:
                    raise EngineUnavailable(f"engine replica {replica.name} died during the request") from exc
                log.warning("replica %s died before producing output; retrying", replica.name)
            except EngineRequestError:
                finished = True
                raise
            except RayTaskError as exc:
                finished = True
                log.error("engine error on %s: %s", replica.name, exc)
                raise EngineUnavailable(f"engine error: {type(exc.cause).__name__}: {exc.cause}") from exc
            finally:
                replica.inflight -= 1
                if not finished and replica.handle is not None:
                    replica.handle.abort.remote(request_id)

    async def stats(self) -> list[dict[str, Any]]:
        async def one(replica: Replica) -> dict[str, Any]:
            row: dict[str, Any] = {
                "name": replica.name,
                "state": replica.state,
                "inflight": replica.inflight,
                "restarts": replica.restarts,
            }
            if replica.error:
                row["error"] = replica.error
            if replica.state == "ready":
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        stats: EngineStats = await replica.handle.health.remote()
                    row.update(vars(stats))
            return row

        return list(await asyncio.gather(*(one(r) for r in self.replicas)))

    async def _pick(self) -> Replica:
        async with self._changed:
            await self._changed.wait_for(lambda: self.ready or self._all_failed())
            candidates = [r for r in self.replicas if r.state == "ready"]
            if not candidates:
                raise EngineUnavailable(f"no replica of {self.spec.name} could be started")
            return min(candidates, key=lambda r: r.inflight)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self, replica: Replica) -> None:
        replica.name = f"engine-{self.spec.name}-{replica.index}-{next(self._generation)}"
        replica.state = "starting"
        options: dict[str, Any] = {
            "name": replica.name,
            "namespace": self.namespace,
            "num_cpus": self.spec.num_cpus,
            "num_gpus": self.spec.num_gpus,
            "runtime_env": {"env_vars": self.env},
        }
        if self.spec.resources:
            options["resources"] = self.spec.resources
        # Ray types the class that @ray.remote wraps as the class itself, not as the actor class it returns.
        replica.handle = EngineActor.options(**options).remote(  # type: ignore[attr-defined]
            self.model_path, self.spec.name, self.engine_args
        )
        try:
            async with asyncio.timeout(self.start_timeout_s):
                replica.info = await replica.handle.ready.remote()
        except Exception as exc:
            with contextlib.suppress(Exception):
                ray.kill(replica.handle, no_restart=True)
            replica.handle = None
            if isinstance(exc, RayActorError) and not exc.actor_init_failed:
                # Its process or its node died under it (a replacement placed on a node that was dying): nothing is
                # wrong with the engine, and a start once the cluster has room again may succeed, so it is retried.
                # Only the engine failing to start (its own error, a timeout) is final.
                log.warning("replica %s died while starting (%s); starting it again", replica.name, exc)
                replica.error = f"start interrupted: {exc}"
                await asyncio.sleep(self.health_interval_s)
                self._spawn(self._launch(replica))
                return
            log.error("replica %s failed to start: %s", replica.name, exc)
            replica.error = f"start failed: {exc}"
            await self._set_state(replica, "failed")
            return
        log.info("replica %s ready (max_model_len %d, %s)", replica.name, replica.info.max_model_len, replica.info.dtype)
        await self._set_state(replica, "ready")

    def _replace(self, replica: Replica, reason: str) -> None:
        if replica.state != "ready":
            return
        log.error("replica %s is dead (%s); replacing it", replica.name, reason)
        replica.state, replica.error = "starting", reason
        replica.restarts += 1
        with contextlib.suppress(Exception):
            ray.kill(replica.handle, no_restart=True)
        replica.handle = None
        self._spawn(self._launch(replica))

    async def _set_state(self, replica: Replica, state: str) -> None:
        async with self._changed:
            replica.state = state
            self._changed.notify_all()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            for replica in [r for r in self.replicas if r.state == "ready"]:
                try:
                    async with asyncio.timeout(HEALTH_TIMEOUT_S):
                        stats: EngineStats = await replica.handle.health.remote()
                    labels = (self.spec.name, str(replica.index))
                    metrics.ENGINE_RUNNING.labels(*labels).set(stats.running)
                    metrics.ENGINE_WAITING.labels(*labels).set(stats.waiting)
                    metrics.ENGINE_KV_USAGE.labels(*labels).set(stats.kv_cache_usage)
                except (RayActorError, EngineDead, GetTimeoutError, TimeoutError) as exc:
                    self._replace(replica, f"health check failed: {type(exc).__name__}: {exc}")

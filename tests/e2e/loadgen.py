"""A bounded load for the fault tests: a few client threads, each sending its requests in turn until told to stop
(or a cap on requests), every outcome kept with the phase of the test it started in and when it ended, so a test
can say what happened to each request around the moment it broke something."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Outcome:
    kind: str
    phase: str
    base_url: str
    deadline_s: float
    started: float
    ended: float = 0.0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None
    """A transport failure (connection refused, read timeout): no HTTP response at all."""

    @property
    def latency_s(self) -> float:
        return self.ended - self.started

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def completion_tokens(self) -> int:
        return int(self.body["usage"]["completion_tokens"]) if self.status == 200 and isinstance(self.body, dict) else 0


Request = tuple[str, dict[str, Any]]
"""A kind (a label for the report) and a chat completion body."""


def deadline_of(body: dict[str, Any]) -> float:
    return float(body["budget"]["deadline_s"])


@dataclass
class Load:
    """`clients` threads, client i sending `requests[(i + k) % len]` to `base_urls[i % len]` for its k-th request."""

    base_urls: list[str]
    requests: list[Request]
    clients: int
    max_requests: int
    phase: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: itertools.count = field(default_factory=itertools.count)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Lets every request in flight end (each is bounded by its deadline and the client timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a client thread is still waiting on its request"

    def done(self, phase: str | None = None, where: Callable[[Outcome], bool] = lambda o: True) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.ended and (phase is None or o.phase == phase) and where(o)]

    def wait_for(self, count: int, phase: str, timeout: float, where: Callable[[Outcome], bool] = lambda o: True) -> None:
        limit = time.monotonic() + timeout
        while len(self.done(phase, where)) < count:
            assert time.monotonic() < limit, f"fewer than {count} requests of phase {phase!r} ended within {timeout} s"
            time.sleep(0.2)

    def _client(self, index: int) -> None:
        base_url = self.base_urls[index % len(self.base_urls)]
        with httpx.Client(timeout=None) as client:
            for k in itertools.count():
                if self._stop.is_set() or next(self._sent) >= self.max_requests:
                    return
                kind, body = self.requests[(index + k) % len(self.requests)]
                self._send(client, base_url, kind, body)

    def _send(self, client: httpx.Client, base_url: str, kind: str, body: dict[str, Any]) -> None:
        deadline = deadline_of(body)
        outcome = Outcome(kind=kind, phase=self.phase, base_url=base_url, deadline_s=deadline, started=time.monotonic())
        with self._lock:
            self.outcomes.append(outcome)
        try:
            # The client waits well past the deadline, so a request the gateway let hang shows as one, not as a timeout.
            response = client.post(f"{base_url}/v1/chat/completions", json=body, timeout=deadline + 60)
            outcome.status, outcome.headers = response.status_code, dict(response.headers)
            outcome.body = response.json() if response.headers.get("content-type", "").startswith("application/json") else response.text
        except httpx.HTTPError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.ended = time.monotonic()

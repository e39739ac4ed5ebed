"""The drain sequence's order, without a server: readiness first, stopping after the delay, a second signal at once."""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import uvicorn

from service.shutdown import DrainingServer


def server(delay: float) -> DrainingServer:
    return DrainingServer(uvicorn.Config(app=lambda *a: None), SimpleNamespace(draining=False), delay)


def test_readiness_goes_false_before_the_server_stops() -> None:
    s = server(0.3)
    s.handle_exit(signal.SIGTERM, None)
    assert s.state.draining and not s.should_exit
    time.sleep(0.6)
    assert s.should_exit


def test_a_second_signal_stops_at_once() -> None:
    s = server(30)
    s.handle_exit(signal.SIGTERM, None)
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit


def test_no_delay_stops_at_once() -> None:
    s = server(0)
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit

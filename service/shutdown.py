"""Graceful shutdown. On SIGTERM (or SIGINT) readiness goes false at once — `GET /health` answers 503 "draining" —
while the gateway keeps serving for `readiness_delay_s`, long enough for a load balancer or Kubernetes to take it
out of rotation; then uvicorn's own shutdown runs: stop accepting, let requests in flight finish for up to
`timeout_s`, cancel the rest (which aborts their engine requests), and run the app's shutdown, which drains the
ledger's pending writes. A second signal skips the delay."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: Any, readiness_delay_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.readiness_delay_s = readiness_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Ray's C++ failure-signal handler (absl's) sees SIGTERM first and arms a 3 s SIGALRM meant to abort a handler
        # that hangs; left armed, it kills the gateway three seconds into its drain.
        signal.alarm(0)
        if self.state.draining or self.readiness_delay_s <= 0:
            super().handle_exit(sig, frame)
            return
        self.state.draining = True
        log.info("signal %d: draining; readiness is false, stopping in %.1f s", sig, self.readiness_delay_s)
        timer = threading.Timer(self.readiness_delay_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()

"""Starting and stopping a server for a benchmark: Ponder as `ponder serve` runs it (or another side to compare),
healthy before it is measured and stopped with its whole process tree afterwards, so nothing of one side still takes
CPU while the next is measured."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from service.engines.prepare import prepare_model
from service.execution.models import engine_args, engine_env
from service.planning.hardware import host_info
from service.settings import ModelSpec, get_settings

log = logging.getLogger("bench.server")
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Side:
    """One way of serving the model, with everything about it that the result file must record."""

    name: str
    command: list[str]
    port: int
    start_timeout_s: float
    stop_grace_s: float
    engine_args: dict[str, Any]
    engine_env: dict[str, str]
    env_set: dict[str, str] = field(default_factory=dict)
    env_unset: list[str] = field(default_factory=list)
    health_path: str = "/health"
    """What answers 200 once the side serves (a peer may have no /health)."""

    def environ(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in self.env_unset} | self.env_set


def ponder_side(spec: ModelSpec, state_dir: Path, port: int) -> Side:
    """Ponder as `ponder serve` runs by default: its own local Ray (RAY_ADDRESS=local, so it never joins a cluster
    someone else started on this host) and in-process fakeredis. PONDER_MODELS pins the one spec measured."""
    env_set = {
        "PONDER_HOST": "127.0.0.1",
        "PONDER_PORT": str(port),
        "PONDER_STATE_DIR": str(state_dir),
        "PONDER_MODELS": json.dumps([spec.model_dump(mode="json")]),
        "RAY_ADDRESS": "local",
    }
    return Side(
        "ponder",
        [sys.executable, "-m", "service.cli", "serve"],
        port,
        start_timeout_s=900,
        stop_grace_s=60,
        engine_args=engine_args(spec),
        engine_env=engine_env(spec),
        env_set=env_set,
        env_unset=["PONDER_RAY_ADDRESS", "PONDER_REDIS_URL"],
    )


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log_path: Path, health_path: str = "/health") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was healthy; log: {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}{health_path}", timeout=10).status_code == 200:
                return time.monotonic() - started
        time.sleep(1)
    raise TimeoutError(f"server not healthy after {timeout_s} s; log: {log_path}")


def stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGINT lets the server shut its engine down itself; whatever of its process tree outlives that is killed,
    so no engine of one side still takes CPU while the other is measured, or after the benchmark."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(family, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=10)


def versions() -> dict[str, str]:
    """Without importing vLLM (seconds of CPU): the installed distributions that provide `vllm` and `ray`."""
    providers = importlib.metadata.packages_distributions()
    found = {name: importlib.metadata.version(providers[name][0]) for name in ("vllm", "ray")}
    return found | {"ponder": importlib.metadata.version("ponder")}


def save_result(
    benchmark: str, started: datetime, model: dict[str, Any], args: argparse.Namespace, parameters: dict[str, Any], stem: str | None = None, **sections: Any
) -> tuple[dict[str, Any], Path]:
    """Writes a benchmark's result file (what the dashboard reads) with the host's CPU flags and the versions measured;
    `args.out` overrides the default path under bench/results/."""
    result = {
        "benchmark": benchmark,
        "timestamp": started.isoformat(),
        "host": host_info(),
        "versions": versions(),
        "model": model,
        "parameters": {k: v for k, v in vars(args).items() if k != "out"} | {"runs": 1} | parameters,
        **sections,
    }
    out = args.out or RESULTS_DIR / f"{stem or benchmark}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(side: Side, log_path: Path) -> Iterator[tuple[str, float]]:
    """The side's server, healthy: yields its base URL and how long it took to become healthy."""
    base_url = f"http://127.0.0.1:{side.port}"
    log.info("starting %s (log: %s)", side.name, log_path)
    with log_path.open("w") as out:
        proc = subprocess.Popen(side.command, env=side.environ(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        startup_s = wait_healthy(proc, base_url, side.start_timeout_s, log_path, side.health_path)
        log.info("%s healthy after %.1f s", side.name, startup_s)
        yield base_url, startup_s
    finally:
        stop(proc, side.stop_grace_s)


def prepared_model(name: str, bench_log: logging.Logger) -> tuple[ModelSpec, Path, Path]:
    """The settings' spec of `name` on one replica (a benchmark measures one engine), prepared: (spec, state
    directory, model directory). Logging is set up so the benchmark's progress lines show and libraries stay quiet."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    bench_log.setLevel(logging.INFO)
    log.setLevel(logging.INFO)
    settings = get_settings()
    spec = settings.model(name)
    if spec is None:
        raise SystemExit(f"no model {name!r} in the settings (PONDER_MODELS)")
    spec = spec.model_copy(update={"replicas": 1})
    return spec, settings.state_path, prepare_model(spec, settings.state_path)


@dataclass
class PonderBench:
    """What a benchmark measuring Ponder alone needs of its server, and what its result file records about it."""

    spec: ModelSpec
    model_dir: Path
    side: Side
    started: datetime
    log_path: Path
    base_url: str
    startup_s: float


@contextlib.contextmanager
def ponder_bench(name: str, bench_log: logging.Logger, env_set: dict[str, str] | None = None) -> Iterator[PonderBench]:
    """`ponder serve` on the prepared model `name`, healthy, on a free port with its log in a fresh temporary
    directory; `env_set` adds to its environment (e.g. PONDER_MODELS to serve a second model beside it)."""
    spec, state_path, model_dir = prepared_model(name, bench_log)
    side = ponder_side(spec, state_path, free_port())
    side.env_set |= env_set or {}
    started = datetime.now(UTC)
    log_path = Path(tempfile.mkdtemp(prefix="ponder-bench-")) / "ponder.log"
    with running(side, log_path) as (base_url, startup_s):
        yield PonderBench(spec, model_dir, side, started, log_path, base_url, startup_s)

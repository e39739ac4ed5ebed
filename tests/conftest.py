"""Session fixtures for the real parts: a Redis server, a Ray cluster, and the Ponder server joined to both.

Redis: the one at 127.0.0.1:6379 when it answers, else a `redis-server` started here on a free port. Ray: a head
node started with `ray start`, so the server exercises the join-a-cluster path and tests can reach its actors
(to kill one). The server is `ponder serve` in a subprocess, called over HTTP like any client would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from openai import AsyncOpenAI, OpenAI
from redis.asyncio import Redis as AsyncRedis

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Test files that write to the real Redis server each get a database of their own, emptied before and after.
DATABASES = {
    "schema": 6,
    "auth_e2e": 7,
    "multinode": 8,
    "faults": 9,
    "auth": 10,
    "dashboard_page": 11,
    "dashboard_data": 12,
    "ledger": 13,
    "atts": 14,
    "evidence": 5,
}


def database_url(redis_url: str, name: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{DATABASES[name]}"


@asynccontextmanager
async def empty_database(redis_url: str, name: str) -> AsyncIterator[AsyncRedis]:
    from service.state import store

    client = store.connect(database_url(redis_url, name))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@contextmanager
def emptied_database(redis_url: str, name: str) -> Iterator[redis.Redis]:
    """The synchronous twin of `empty_database`, for fixtures that run a gateway of their own on that database."""
    client = redis.Redis.from_url(database_url(redis_url, name), decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    default = "redis://127.0.0.1:6379/0"
    if redis_answers(default):
        yield default
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("no Redis at 127.0.0.1:6379 and no redis-server binary to start one (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ponder-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    # Ray 2.60 turns token authentication on for `ray start` clusters; this one listens on loopback only and
    # the server and the tests join it as separate processes, so it runs without.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = free_port()
    subprocess.run(
        [
            ray_bin(),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={os.cpu_count()}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    yield address
    subprocess.run([ray_bin(), "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def eager_models(**spec: object) -> str:
    """PONDER_MODELS for a test's own gateway: the default model on an eager engine (no torch.compile), which is
    ready about a minute sooner; the tests that use it exercise the gateway, not the engine's speed."""
    return json.dumps([{"name": "smollm2-135m", **spec, "engine_args": {"enforce_eager": True}}])


@dataclass
class Server:
    base_url: str
    ray_address: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/health", timeout=10)

    def wait_healthy(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}; log: {self.log_path}")
            try:
                response = self.health()
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not healthy after {timeout} s; log: {self.log_path}")


def state_dir() -> Path:
    """Shared across test sessions so the model is converted once per machine, as `ponder serve` would."""
    return Path(os.environ.get("PONDER_TEST_STATE_DIR", Path.home() / ".local/share/ponder"))


@contextmanager
def running_server(
    redis_url: str, ray_address: str, log_path: Path, launcher: tuple[str, ...] = (), args: tuple[str, ...] = (), **env_overrides: str
) -> Iterator[Server]:
    """`ponder serve` joined to the Ray cluster and Redis, stopped (SIGINT, then kill) on the way out; `launcher`
    wraps the command (a container's confinement, say), `args` are the command's own."""
    port = free_port()
    env = {
        **os.environ,
        "PONDER_HOST": "127.0.0.1",
        "PONDER_PORT": str(port),
        "PONDER_STATE_DIR": str(state_dir()),
        "PONDER_REDIS_URL": redis_url,
        "PONDER_RAY_ADDRESS": ray_address,
        "PONDER_ENGINE_HEALTH_INTERVAL_S": "1",
        "PONDER_MAX_BODY_BYTES": str(256 * 1024),
        "PONDER_DRAIN__READINESS_DELAY_S": "0",
        **env_overrides,
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen([*launcher, sys.executable, "-m", "service.cli", "serve", *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    server = Server(base_url=f"http://127.0.0.1:{port}", ray_address=ray_address, state_dir=state_dir(), log_path=log_path, process=proc)
    try:
        server.wait_healthy(SERVER_START_TIMEOUT_S)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


PRESETS = """
quick-vote:
  description: majority of 3, at most 200 tokens
  strategy: {name: majority, n: 3, temperature: 0.7}
  budget: {max_total_tokens: 200}
"""


@pytest.fixture(scope="session")
def server(redis_url: str, ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server")
    (home / "presets.yaml").write_text(PRESETS)
    with running_server(redis_url, ray_address, home / "ponder.log", PONDER_PRESETS=str(home / "presets.yaml")) as server:
        yield server


@pytest.fixture(scope="session")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def aclient(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=120)

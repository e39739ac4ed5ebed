"""Two hosts as far as Ray can tell: a head node on this host and a worker node inside a network namespace this test
creates (a veth pair on a private subnet of its own), both started with `ray start`. The engines are placed on the
worker by the custom resource their ModelSpec asks for, as in a deployment; two gateways share the real Redis server
and serve a bounded load; the worker node is killed (every process in its namespace, SIGKILL) mid-load and later
started again.

What must hold: every request is answered, or refused with a clean 503 that says when to retry; none outlives its
deadline; the ledger has one record per request; and once the node is back both gateways serve again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from tests.conftest import (
    SERVER_START_TIMEOUT_S,
    Server,
    database_url,
    eager_models,
    free_port,
    ray_bin,
    running_server,
)
from tests.e2e.loadgen import Load, Outcome
from tests.e2e.test_resilience import wait_until

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
HOST_IP, NODE_IP = "10.77.0.1", "10.77.0.2"
DEADLINE_S = 25.0
SLACK_S = 15.0
"""What a response may take past its deadline: the gateway's own work before the budget opens and after the engine
stops (the chat template, the vote's answer grouping, bounded by PONDER_ANSWER_TIMEOUT_S), on two cores that two
engines are using. A request left hanging would take the client's whole timeout, a minute more."""
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # as the suite's own cluster: loopback and a private veth only
    # The GCS declares a node dead after this many missed health checks this far apart: a lost host is noticed
    # within seconds, as a deployment tunes it, instead of Ray's default of half a minute.
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True)


@dataclass
class Namespace:
    """A network namespace joined to this host by a veth pair: HOST_IP here, NODE_IP inside."""

    name: str
    veth: str

    def create(self) -> None:
        try:
            run("ip", "netns", "add", self.name)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            # A fail, not a skip: the issue asks for this test to run in CI, and a skip would pass unseen.
            pytest.fail(f"network namespaces are refused here (`ip netns add` needs root and CAP_SYS_ADMIN): {detail}")
        run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}p")
        run("ip", "link", "set", f"{self.veth}p", "netns", self.name)
        run("ip", "addr", "add", f"{HOST_IP}/24", "dev", self.veth)
        run("ip", "link", "set", self.veth, "up")
        self.exec("ip", "addr", "add", f"{NODE_IP}/24", "dev", f"{self.veth}p")
        self.exec("ip", "link", "set", f"{self.veth}p", "up")
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *command)

    def pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False)
        return [int(p) for p in listed.stdout.split()]

    def kill_all(self) -> int:
        """SIGKILL to every process in the namespace, as when its host loses power; returns how many there were."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self.pids(), timeout=10)
        return len(pids)

    def delete(self) -> None:
        self.kill_all()
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@dataclass
class Cluster:
    """The Ray head on this host (bound to the veth's address) and the worker node in the namespace."""

    netns: Namespace
    port: int
    temp_dir: Path
    log_dir: Path
    head: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST_IP}:{self.port}"

    def start_head(self) -> None:
        # --block keeps `ray start` in the foreground as the parent of the node's processes, so they are this test's
        # to stop (a daemonized node would need `ray stop`, which stops every Ray node on the machine).
        command = [
            ray_bin(),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={HOST_IP}",
            f"--port={self.port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            "--object-store-memory=100000000",
        ]
        self.head = self._spawn(command, "head")
        assert wait_until(lambda: self._listening(), timeout=60), f"the Ray head did not come up; log: {self.log_dir / 'head.log'}"

    def start_worker(self) -> None:
        """The worker node inside the namespace: the only one with the engines' resource (two slots, one engine
        replica per gateway) and the CPUs."""
        command = [
            "ip",
            "netns",
            "exec",
            self.netns.name,
            ray_bin(),
            "start",
            "--block",
            f"--address={self.address}",
            f"--node-ip-address={NODE_IP}",
            "--num-cpus=2",
            f"--resources={json.dumps({MODEL: 2})}",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
        ]
        self.workers.append(self._spawn(command, f"worker-{len(self.workers)}"))

    def kill_worker(self) -> None:
        assert self.netns.kill_all() > 0, "no process was running in the worker's namespace"

    def stop(self) -> None:
        """The worker's namespace first, then the head and every process under it: killed, since a head told to
        stop waits half a minute to drain a worker that is already gone, and nothing in this cluster is kept."""
        self.netns.delete()
        if self.head is not None:
            family = [psutil.Process(self.head.pid), *_family(self.head.pid)] if self.head.poll() is None else _family(self.head.pid)
            for proc in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(family, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("w") as log:
            return subprocess.Popen(command, env={**os.environ, **RAY_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex((HOST_IP, self.port)) == 0


def _family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:6]
    netns = Namespace(name=f"ponder-node-{suffix}", veth=f"pn{suffix}")
    # Ray's socket paths must stay under 108 bytes: a short temp root of its own, apart from the suite's cluster.
    cluster = Cluster(netns, free_port(), Path(tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp")), tmp_path_factory.mktemp("multinode"))
    try:
        netns.create()
        cluster.start_head()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def gateways(cluster: Cluster, redis_url: str) -> Iterator[list[Server]]:
    """Two gateways joined to the cluster, each with its own engine replica (its own Ray namespace), on the worker."""
    url = database_url(redis_url, "multinode")
    env = {
        **RAY_ENV,
        "PONDER_REDIS_URL": url,
        # Two engines share the worker's two cores: one OpenMP thread each, as a node running two replicas is sized.
        "PONDER_MODELS": eager_models(resources={MODEL: 1}, env={"OMP_NUM_THREADS": "1"}),
        "PONDER_ENGINE_START_TIMEOUT_S": str(SERVER_START_TIMEOUT_S),
    }
    store = redis.Redis.from_url(url)
    store.flushdb()
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(store.flushdb)
        servers = [
            stack.enter_context(running_server(url, cluster.address, cluster.log_dir / f"gateway-{name}.log", PONDER_RAY_NAMESPACE=f"ponder-mn-{name}", **env))
            for name in ("a", "b")
        ]
        yield servers


def chat(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "budget": {"deadline_s": DEADLINE_S}, **extra}


REQUESTS = [
    ("plain", chat("Write a short story about a lighthouse.", 48, ignore_eos=True)),
    ("majority", chat("What is 17 + 25? Reply with just the number.", 12, strategy={"name": "majority", "n": 3})),
    ("plain", chat("List three colours.", 24)),
]


ENGINE_ADDRESSES = """
import json, sys, ray
from ray._private.state import actors
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps(sorted(a["Address"]["IPAddress"] for a in actors(actor_state_name="ALIVE").values() if a["Name"].startswith("engine-"))))
"""


def engine_addresses(cluster: Cluster) -> list[str]:
    """The node address of every live engine actor, from the cluster's own actor table (a driver of its own, so the
    test process never joins the cluster)."""
    found = subprocess.run(
        [sys.executable, "-c", ENGINE_ADDRESSES, cluster.address], env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(found.stdout.strip().splitlines()[-1])


def clean_503(outcome: Outcome) -> bool:
    if outcome.status != 503 or not isinstance(outcome.body, dict):
        return False
    error = outcome.body.get("error", {})
    return error.get("code") == "engine_unavailable" and error.get("type") == "service_unavailable_error" and int(outcome.headers.get("retry-after", "0")) > 0


def answered(outcome: Outcome) -> bool:
    return outcome.status == 200 and outcome.completion_tokens > 0 and bool(outcome.body["choices"][0]["message"]["content"])


def test_worker_node_killed_mid_load_then_back(cluster: Cluster, gateways: list[Server], redis_url: str) -> None:
    for gateway in gateways:
        (replica,) = gateway.health().json()["models"][MODEL]
        assert replica["state"] == "ready"
    assert engine_addresses(cluster) == [NODE_IP, NODE_IP]
    load = Load([g.base_url for g in gateways], REQUESTS, clients=4, max_requests=150)
    load.start()
    load.wait_for(4, "before", timeout=120)
    load.phase = "outage"
    killed = time.monotonic()
    cluster.kill_worker()
    load.wait_for(4, "outage", timeout=DEADLINE_S + 60, where=lambda o: o.started > killed + 1)
    load.phase = "back"
    cluster.start_worker()
    for gateway in gateways:
        gateway.wait_healthy(SERVER_START_TIMEOUT_S)
    back = time.monotonic()
    load.wait_for(4, "back", timeout=120, where=lambda o: o.started > back)
    load.stop(timeout=DEADLINE_S + 60)

    outcomes = load.done()
    assert len(outcomes) == len(load.outcomes), "a request never ended"
    assert [o for o in outcomes if o.error] == []
    assert [o for o in outcomes if not (answered(o) or clean_503(o))] == []
    assert [o for o in outcomes if o.latency_s > o.deadline_s + SLACK_S] == []
    assert all(answered(o) for o in outcomes if o.phase == "before" and o.ended < killed)
    assert any(clean_503(o) for o in outcomes if o.phase == "outage")
    after = [o for o in outcomes if o.started > back]
    assert {o.base_url for o in after} == {g.base_url for g in gateways} and all(answered(o) for o in after)
    for gateway in gateways:
        (replica,) = gateway.health().json()["models"][MODEL]
        assert replica["restarts"] >= 1
    assert engine_addresses(cluster) == [NODE_IP, NODE_IP]

    def record(o: Outcome) -> dict[str, Any] | None:
        response = httpx.get(f"{gateways[0].api}/requests/{o.request_id}", timeout=10)  # either gateway reads any record
        return response.json() if response.status_code == 200 else None

    records = {o.request_id: record(o) for o in outcomes}
    assert len(records) == len(outcomes) and all(records.values()), [o for o in outcomes if not records[o.request_id]]
    for o in outcomes:
        entry = records[o.request_id]
        assert entry is not None and entry["status"] == o.status
        assert entry["outcome"] == ("served" if o.status == 200 else "failed")
        assert entry["completion_tokens"] == o.completion_tokens or o.status != 200

"""The code sandbox through the HTTP API: hostile `verifier.tests`, sent by a caller as any client could, must be
contained in the namespaced mode (a root server on a host) and in the container mode (a gateway started the way
deploy/ starts it: the deployment's seccomp profile, Docker's default capabilities, a read-only cgroup tree).

Each probe is a test that passes only if its escape worked, and that leaves a mark the test can see if it did: a
file in the test's directory, a connection to the test's listener, a `sleep` of the test's that is killed. So a
contained probe is a failing test and no mark. Where the program the model wrote does not load, the caller's
tests still run, so the probes run whatever the model says.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import APIStatusError, OpenAI

from tests.conftest import ROOT, Server, eager_models, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
SECRET = secrets.token_hex(16)
ADD = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b, in a python code block."}]
ALIASED_POSIXSUBPROCESS = """
import importlib.machinery, importlib.util, os, glob
path = glob.glob(os.path.dirname(os.__file__) + "/lib-dynload/_posixsubprocess*.so")[0]
loader = importlib.machinery.ExtensionFileLoader("x._posixsubprocess", path)
module = importlib.util.module_from_spec(importlib.util.spec_from_loader("x._posixsubprocess", loader))
loader.exec_module(module)
args = [b"/bin/sh", b"-c", b"touch {marker}"]
pid = module.fork_exec(args, [b"/bin/sh"], True, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)
os.waitpid(pid, 0)
assert os.path.exists("{marker}")
"""
ENVIRON = """
import os
found = False
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        found = found or "PONDER_REDIS_URL" in open(f"/proc/{{pid}}/environ").read()
    except OSError:
        pass
assert found
"""
PROBES = {
    "aliased _posixsubprocess runs a shell": ALIASED_POSIXSUBPROCESS,
    "ctypes system()": "import ctypes, os\nctypes.CDLL(None).system(b'touch {marker}')\nassert os.path.exists('{marker}')",
    "os.fork": "import os\npid = os.fork()\nif pid == 0:\n    open('{marker}', 'w').close()\n    os._exit(0)\nos.waitpid(pid, 0)\nassert os.path.exists('{marker}')",
    "subprocess": "import subprocess\nsubprocess.run(['touch', '{marker}'], check=True)",
    "tcp to the test's listener": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()",
    "unix socket to the test's listener": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('{unix}')",
    "/etc/shadow": "assert 'root:' in open('/etc/shadow').read()",
    "the gateway's environment": ENVIRON,
    "the project's source": "assert 'def run_tests' in open('{source}').read()",
    "the test's file": "assert open('{secret_file}').read() == '{secret}'",
    "write outside /tmp": "open('{marker}', 'w').write('x')",
    "remount / read-write": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.mount(b'none', b'/', None, 32 | 4096, None) == 0\nopen('/usr/escaped', 'w').write('x')",
    "signal the test's sleep": "import os, signal\nos.kill({sleep}, signal.SIGKILL)",
    "thread bomb": "import threading, time\nthreads = [threading.Thread(target=time.sleep, args=(2,), daemon=True) for _ in range(200)]\n[t.start() for t in threads]",
}


@dataclass
class Marks:
    """What a probe would leave behind on the host if it escaped."""

    directory: Path
    listener: socket.socket
    unix: socket.socket
    sleep: subprocess.Popen

    def fields(self, probe: str) -> dict[str, object]:
        return {
            "marker": self.directory / re.sub(r"\W+", "-", probe),
            "port": self.listener.getsockname()[1],
            "unix": self.unix.getsockname(),
            "secret": SECRET,
            "source": ROOT / "verifiers" / "code.py",
            "secret_file": self.directory / "secret.txt",
            "sleep": self.sleep.pid,
        }

    def assert_untouched(self) -> None:
        assert sorted(p.name for p in self.directory.iterdir()) == ["secret.txt", "test.sock"]
        for listener in (self.listener, self.unix):
            with pytest.raises(BlockingIOError):
                listener.accept()
        assert self.sleep.poll() is None, "the test's sleep was killed"


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marks]:
    directory = tmp_path_factory.mktemp("marks")
    directory.chmod(0o777)  # an escaped probe could write here as any uid: the mark must not fail for permissions
    (directory / "secret.txt").write_text(SECRET)
    with socket.socket() as listener, socket.socket(socket.AF_UNIX) as unix:
        listener.bind(("127.0.0.1", 0))
        unix.bind(str(directory / "test.sock"))
        for s in (listener, unix):
            s.listen()
            s.setblocking(False)
        sleep = subprocess.Popen(["sleep", "3600"])
        try:
            yield Marks(directory, listener, unix, sleep)
        finally:
            sleep.kill()
            sleep.wait()


@pytest.fixture(scope="module")
def unisolable(ray_address: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway on a machine that cannot isolate code: here, one whose sandbox interpreter does not exist."""
    log = tmp_path_factory.mktemp("unisolable-gateway") / "ponder.log"
    env = {"PONDER_RAY_NAMESPACE": "ponder-unisolable", "PONDER_MODELS": eager_models(), "PONDER_SANDBOX__PYTHON": "/nonexistent/python3"}
    with running_server(redis_url, ray_address, log, **env) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=["namespaced", "container"])
def gateway(request: pytest.FixtureRequest, server: Server, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    """The session's server for the namespaced mode; for the container mode a gateway of its own, confined by
    tests/contained.py, whose sandbox binds in Debian's interpreter (the venv's lives under root's home, which
    the sandbox's uid cannot read; the images' lives in /usr/local)."""
    if request.param == "namespaced":
        yield request.param, server
        return
    launcher = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "tests.contained",
        str(ROOT / "deploy" / "seccomp" / "ponder-gateway.json"),
        "--",
    )
    log = tmp_path_factory.mktemp("container-gateway") / "ponder.log"
    env = {"PONDER_RAY_NAMESPACE": "ponder-container", "PONDER_MODELS": eager_models(), "PONDER_SANDBOX__PYTHON": "/usr/bin/python3"}
    with running_server(redis_url, server.ray_address, log, launcher, **env) as confined:
        yield request.param, confined


def test_health_reports_the_sandboxs_layers(gateway: tuple[str, Server]) -> None:
    mode, served = gateway
    sandbox = served.health().json()["sandbox"]
    assert sandbox["available"] is True
    expected = {"namespaced": ("bwrap:", "cgroup pids.max"), "container": ("bwrap-userns:", "RLIMIT_NPROC")}[mode]
    assert sandbox["isolation"].startswith(expected[0])
    assert {"seccomp", "non-root uid", "no capabilities", expected[1]} <= set(sandbox["layers"])


@pytest.mark.parametrize("probe", list(PROBES))
def test_hostile_caller_tests_are_contained(gateway: tuple[str, Server], marks: Marks, probe: str) -> None:
    _, served = gateway
    client = OpenAI(base_url=served.api, api_key="none", max_retries=0, timeout=120)
    test = PROBES[probe].format(**marks.fields(probe))
    response = client.chat.completions.create(
        model=MODEL,
        messages=ADD,
        max_tokens=48,
        extra_body={"strategy": {"name": "best_of_n", "n": 1, "select": "code_tests"}, "verifier": {"tests": [test], "entry_point": "add", "timeout_s": 10}},
    )
    ponder = response.model_extra["ponder"]
    assert ponder["selection"]["sandbox"] == served.health().json()["sandbox"]["isolation"]
    assert [c["tests"]["passed"] for c in ponder["candidates"]] == [0], f"{probe}: the escape worked"
    marks.assert_untouched()


def test_a_machine_that_cannot_isolate_refuses_to_run_code(unisolable: Server) -> None:
    """No silent fallback: /health says why, code_tests is a 503 naming the setting, and plain calls still work."""
    sandbox = unisolable.health().json()["sandbox"]
    assert (sandbox["available"], sandbox["isolation"], sandbox["layers"]) == (False, "unavailable", [])
    assert "PONDER_SANDBOX__ALLOW_UNISOLATED" in sandbox["problem"]
    client = OpenAI(base_url=unisolable.api, api_key="none", max_retries=0, timeout=120)
    with pytest.raises(APIStatusError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=ADD,
            max_tokens=16,
            extra_body={"strategy": {"name": "best_of_n", "n": 2, "select": "code_tests"}, "verifier": {"tests": ["assert add(1, 2) == 3"]}},
        )
    assert refused.value.status_code == 503
    error = refused.value.response.json()["error"]
    assert (error["code"], error["param"]) == ("sandbox_unavailable", "strategy")
    assert "PONDER_SANDBOX__ALLOW_UNISOLATED" in error["message"]
    assert client.chat.completions.create(model=MODEL, messages=ADD, max_tokens=4).choices[0].message.content is not None

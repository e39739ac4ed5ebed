"""Hostile programs against the code sandbox, in both launches a root server can use (`bwrap`, and the
`bwrap-userns` launch a container without CAP_SYS_ADMIN gets).

Every probe is benign if it gets out: it leaves a marker file in the test's tmp_path, connects to a listener the
test opened, or signals a `sleep` the test started. So each test asserts both sides: the host saw nothing (no
marker, no connection, every sleep alive, no process of the sandbox's uids left), and the sandbox reported what
its layers should make of the attempt (the exact errno, the signal, the status). A probe whose outcome line
changes has found a layer missing, even where a later layer still held.

The second half plays the model that games its score: a wrong program plus a trick, judged by `run_tests`
against tests it must fail; and the API caller whose tests are hostile (the harness side).
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyseccomp
import pytest

import verifiers
from verifiers.code import caller_tests, run_tests, visible_tests
from verifiers.sandbox import ExecutionResult, Sandbox, SandboxLimits, isolation
from verifiers.sandbox.process import FLOOD_NOTE

# uid_base away from the default: the leftover check below counts every process of these uids on the host, and
# another sandbox on the machine (a server, the e2e tests) runs as the default ones
LIMITS = SandboxLimits(cpu_s=2, wall_s=5, memory_mb=256, output_kb=16, concurrency=2, uid_base=64000)
SANDBOX_UIDS = range(LIMITS.uid_base, LIMITS.uid_base + 2 * LIMITS.concurrency)
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the userns launch of a root server needs one the sandbox uid can read
LAUNCHES = ["bwrap", "bwrap-userns"]
LEFTOVER_S = 2.0  # a killed sandbox's inner processes are reaped a moment after its run returns
X86_64 = platform.machine() == "x86_64"


@pytest.fixture(scope="module", params=LAUNCHES)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """A sandbox forced onto one launch: detection is patched to try only it, so a launch that fails here
    leaves the sandbox unavailable (and the test failing) instead of falling back to another."""
    launch = request.param
    limits = LIMITS
    if launch == "bwrap-userns":
        if not SYSTEM_PYTHON.exists():
            pytest.fail(f"the userns launch of a root server needs an interpreter its uid can read; {SYSTEM_PYTHON} is missing (apt-get install python3)")
        limits = LIMITS.model_copy(update={"python": SYSTEM_PYTHON})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(isolation, "_launches", lambda allow_unisolated: [launch])
        isolation.detect.cache_clear()
        try:
            built = Sandbox(limits)
        finally:
            isolation.detect.cache_clear()
    assert built.isolation.startswith(f"{launch}:"), built.isolation
    return built


@dataclass
class Host:
    """What a probe would reach if it got out, and the checks that it did not."""

    marker: Path
    secret_file: Path
    secret: str
    tcp: socket.socket
    unix: socket.socket
    unix_path: Path
    abstract: socket.socket
    abstract_name: str
    victims: list[subprocess.Popen[bytes]]

    @property
    def prelude(self) -> str:
        """Source that gives a probe the host's coordinates and two helpers: `outcome` says what became of an
        attempt (the errno name when the kernel refused it), `attempt` prints it."""
        return PRELUDE.format(
            marker=str(self.marker),
            secret_file=str(self.secret_file),
            secret_env=SECRET_ENV,
            tcp_port=self.tcp.getsockname()[1],
            unix_path=str(self.unix_path),
            abstract_name=self.abstract_name,
            victims=[victim.pid for victim in self.victims],
            test_pid=os.getpid(),
            project_file=verifiers.__file__,
        )

    def assert_untouched(self) -> None:
        assert not self.marker.exists()
        for listener in (self.tcp, self.unix, self.abstract):
            with pytest.raises(BlockingIOError):
                listener.accept()
        assert [victim.poll() for victim in self.victims] == [None] * len(self.victims)


SECRET_ENV = "PONDER_HOSTILE_SECRET"
PRELUDE = """\
import ctypes, errno, os, signal, sys
MARKER = {marker!r}
SECRET_FILE = {secret_file!r}
SECRET_ENV = {secret_env!r}
TCP_PORT = {tcp_port!r}
UNIX_PATH = {unix_path!r}
ABSTRACT_NAME = {abstract_name!r}
VICTIMS = {victims!r}
TEST_PID = {test_pid!r}
PROJECT_FILE = {project_file!r}
SHELL = ["/bin/sh", "-c", "touch " + MARKER]
libc = ctypes.CDLL(None, use_errno=True)


def outcome(action):
    try:
        value = action()
    except OSError as error:
        return "refused " + errno.errorcode.get(error.errno, str(error.errno))
    except BaseException as error:
        return "raised " + type(error).__name__
    return "returned " + repr(value)


def attempt(action):
    print(outcome(action), flush=True)


def checked(name, *args):
    # a libc call that raises as os's wrappers do
    result = getattr(libc, name)(*args)
    if result == -1:
        raise OSError(ctypes.get_errno(), name)
    return result


def child(pid):
    # after a fork that got through, the child leaves the marker and ends; the parent says so
    if pid == 0:
        try:
            open(MARKER, "w").close()
        finally:
            os._exit(0)
    return "a child" if pid > 0 else pid

"""


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """Listeners, a secret, and one `sleep` per sandbox uid (and one of the test's own): a victim of the very uid
    a probe runs as, so that only the PID namespace stands between them."""
    secret = secrets.token_hex(16)
    monkeypatch.setenv(SECRET_ENV, secret)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(secret)
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = tmp_path / "listener.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    abstract_name = f"ponder-hostile-{secret[:8]}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + abstract_name)
    for listener in (tcp, unix, abstract):
        listener.listen()
        listener.setblocking(False)
    victims = [subprocess.Popen(["sleep", "60"])]
    victims += [subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[]) for uid in SANDBOX_UIDS]
    try:
        yield Host(tmp_path / "MARKER", secret_file, secret, tcp, unix, unix_path, abstract, abstract_name, victims)
    finally:
        for victim in victims:
            victim.kill()
            victim.wait()
        for listener in (tcp, unix, abstract):
            listener.close()


def _sandbox_processes(spared: set[int]) -> list[str]:
    """Live processes of the sandbox uids. Not zombies: an inner process of a killed sandbox is reparented to the
    host's init, which reaps it when it gets round to it; dead, it holds nothing but its pid."""
    found = []
    for process in psutil.process_iter(["uids", "name", "status"]):
        uids = process.info["uids"]
        if process.pid in spared or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if uids is not None and set(uids) & set(SANDBOX_UIDS):
            found.append(f"{process.pid} {process.info['name']} ({process.info['status']})")
    return found


async def assert_nothing_left(host: Host) -> None:
    """No process of a sandbox uid outlives its run (the test's own victims aside)."""
    spared = {victim.pid for victim in host.victims}
    deadline = time.monotonic() + LEFTOVER_S
    while (left := _sandbox_processes(spared)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert left == []


async def run_probe(sandbox: Sandbox, host: Host, body: str, wall_s: float | None = None) -> ExecutionResult:
    """Run a probe as a program, then check the host: no effect, nothing left."""
    result = await sandbox.run(host.prelude + textwrap.dedent(body), wall_s=wall_s)
    await assert_nothing_left(host)
    host.assert_untouched()
    return result


@dataclass(frozen=True)
class Probe:
    """One hostile program: `body` runs after the prelude, `expected` is its whole stdout where the sandbox holds."""

    name: str
    body: str
    expected: str
    userns: str | None = None  # where the userns launch refuses differently (its root is unmapped, say)

    def expected_in(self, sandbox: Sandbox) -> str:
        return self.userns if self.userns is not None and launch_of(sandbox) == "bwrap-userns" else self.expected


def launch_of(sandbox: Sandbox) -> str:
    return sandbox.isolation.partition(":")[0]


def probes(*items: Probe) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("probe", items, ids=[item.name for item in items])


def _nr(name: str) -> int:
    """This machine's number for a syscall, for probes that call it raw (libc has no wrapper, or one that would
    refuse before the kernel does)."""
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


# --- new processes and programs: seccomp refuses every route (clone without CLONE_THREAD, vfork, execve) ---

ALIASED = """\
import importlib.machinery, importlib.util


def aliased(name):
    # a second copy of an extension module, loaded under another name: no import hook sees "_posixsubprocess"
    spec = importlib.util.find_spec(name)
    if spec.origin == "built-in":
        import _imp
        module = _imp.create_builtin(spec)
    else:
        loader = importlib.machinery.ExtensionFileLoader("innocent." + name, spec.origin)
        module = loader.create_module(importlib.util.spec_from_loader("innocent." + name, loader))
        loader.exec_module(module)
    sys.modules["innocent_" + name.strip("_")] = module
    return module
"""

FORK_EXEC = (
    ALIASED
    + """\
def fork_exec():
    spawner = aliased("_posixsubprocess")
    errpipe_read, errpipe_write = os.pipe()
    args = [[arg.encode() for arg in SHELL], [SHELL[0].encode()], False, (errpipe_write,), None, None,
            -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write, False, False, -1, None, None, None, -1, None]
    import subprocess  # only to pass what this version's fork_exec takes, as subprocess does
    return child(spawner.fork_exec(*args, *([False] if hasattr(subprocess, "_USE_VFORK") else [])) or 1)


attempt(fork_exec)
"""
)

CTYPES_ALIASED = (
    ALIASED
    + """\
raw = aliased("_ctypes")
handle = raw.dlopen(None)
attempt(lambda: raw.call_function(raw.dlsym(handle, "system"), (SHELL[2].encode(),)))
attempt(lambda: child(raw.call_function(raw.dlsym(handle, "fork"), ())))
"""
)

CTYPES_EXECVE = """\
argv = (ctypes.c_char_p * 4)(*[arg.encode() for arg in SHELL], None)
attempt(lambda: checked("execve", SHELL[0].encode(), argv, None))
"""

CLONE3 = """\
arguments = (ctypes.c_uint64 * 11)(0, 0, 0, 0, int(signal.SIGCHLD))  # flags 0, exit_signal SIGCHLD: a fork
attempt(lambda: child(checked("syscall", {nr}, ctypes.byref(arguments), ctypes.sizeof(arguments))))
"""

# mov eax, 2 (i386 fork); int 0x80; ret. A filter that checked only the x86_64 numbers would let this through.
I386_FORK = """\
import mmap
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 0x02, 0x00, 0x00, 0x00, 0xCD, 0x80, 0xC3]))
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
attempt(lambda: child(ctypes.CFUNCTYPE(ctypes.c_int)(address)()))
"""

PROCESS_PROBES = [
    Probe("os.fork", "attempt(lambda: child(os.fork()))", "refused EPERM\n"),
    Probe("os.forkpty", "attempt(lambda: child(os.forkpty()[0]))", "refused EPERM\n"),
    Probe("os.posix_spawn", "attempt(lambda: os.posix_spawn(SHELL[0], SHELL, {}))", "refused EPERM\n"),
    Probe("os.posix_spawnp", "attempt(lambda: os.posix_spawnp('sh', SHELL, {}))", "refused EPERM\n"),
    Probe("os.spawnv", "attempt(lambda: os.spawnv(os.P_WAIT, SHELL[0], SHELL))", "refused EPERM\n"),
    Probe("os.system", "attempt(lambda: os.system(SHELL[2]))", "returned 32512\n"),  # 127: the shell never ran
    Probe("os.popen", "attempt(lambda: os.popen(SHELL[2]).close())", "refused EPERM\n"),
    Probe("subprocess.Popen", "import subprocess\nattempt(lambda: subprocess.Popen(SHELL).wait())", "refused EPERM\n"),
    Probe("subprocess shell", "import subprocess\nattempt(lambda: subprocess.run(SHELL[2], shell=True))", "refused EPERM\n"),
    Probe("multiprocessing fork", "import multiprocessing as mp\nattempt(lambda: mp.get_context('fork').Process(target=print).start())", "refused EPERM\n"),
    Probe("multiprocessing spawn", "import multiprocessing as mp\nattempt(lambda: mp.get_context('spawn').Process(target=print).start())", "refused EPERM\n"),
    Probe(
        "multiprocessing forkserver",
        "import multiprocessing as mp\nattempt(lambda: mp.get_context('forkserver').Process(target=print).start())",
        "refused EPERM\n",
    ),
    Probe("multiprocessing Pool", "import multiprocessing as mp\nattempt(lambda: mp.get_context('fork').Pool(2))", "refused EROFS\n"),
    Probe("pty.spawn", "import pty\nattempt(lambda: pty.spawn(SHELL))", "refused EPERM\n"),
    Probe("os.execv", "attempt(lambda: os.execv(SHELL[0], SHELL))", "refused EPERM\n"),
    Probe("os.execve", "attempt(lambda: os.execve(SHELL[0], SHELL, {}))", "refused EPERM\n"),
    Probe("ctypes system", "attempt(lambda: libc.system(SHELL[2].encode()))", "returned 32512\n"),
    Probe("ctypes fork", "attempt(lambda: child(checked('fork')))", "refused EPERM\n"),
    Probe("ctypes vfork", "attempt(lambda: child(checked('vfork')))", "refused EPERM\n"),
    Probe("ctypes execve", CTYPES_EXECVE, "refused EPERM\n"),
    Probe("syscall fork", f"attempt(lambda: child(checked('syscall', {_nr('fork')})))", "refused EPERM\n"),
    Probe("syscall clone", f"attempt(lambda: child(checked('syscall', {_nr('clone')}, int(signal.SIGCHLD), 0, 0, 0, 0)))", "refused EPERM\n"),
    Probe("syscall clone3", CLONE3.format(nr=_nr("clone3")), "refused ENOSYS\n"),
    Probe("aliased _posixsubprocess", FORK_EXEC, "refused EPERM\n"),
    Probe("aliased _ctypes", CTYPES_ALIASED, "returned 32512\nreturned -1\n"),
]


@probes(*PROCESS_PROBES)
async def test_no_new_process_or_program(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.stdout) == ("ok", probe.expected_in(sandbox)), result.stderr


FOREIGN_ABI = (
    [
        Probe("x32 fork", "attempt(lambda: child(checked('syscall', 0x40000000 | 57)))", ""),
        Probe("i386 int 0x80 fork", I386_FORK, ""),
    ]
    if X86_64
    else []
)


@probes(*FOREIGN_ABI)
async def test_a_foreign_syscall_abi_kills_the_process(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    """libseccomp's filter kills a process that calls through another ABI (SIGSYS), whatever the number."""
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.returncode, result.stdout) == ("killed", -signal.SIGSYS, probe.expected)


CRAFTED_CODE = {
    "constant out of range": "import types\nf = lambda: None\nbogus = f.__code__.replace(co_code=bytes([151, 0, 100, 250, 83, 0]))\n",
    "unknown opcode": "import types\nf = lambda: None\nbogus = f.__code__.replace(co_code=bytes([151, 0, 250, 0, 250, 0, 83, 0]))\n",
}


@pytest.mark.parametrize("body", CRAFTED_CODE.values(), ids=CRAFTED_CODE.keys())
async def test_crafted_bytecode_crashes_only_itself(sandbox: Sandbox, host: Host, body: str) -> None:
    """Bogus bytecode may crash the interpreter: the crash is the program's own, reported as such."""
    result = await run_probe(sandbox, host, body + "types.FunctionType(bogus, {})()\n")
    assert result.status in ("killed", "error") and result.returncode != 0
    assert (await sandbox.run("print('next')")).stdout == "next\n"


async def test_a_thread_bomb_stops_at_the_thread_limit(sandbox: Sandbox, host: Host) -> None:
    body = """\
    import threading
    stop = threading.Event()
    started = 0
    try:
        while started < 1000:
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError as error:
        print(started, error)
    stop.set()
    """
    result = await run_probe(sandbox, host, body)
    count, _, error = result.stdout.partition(" ")
    assert (result.status, error) == ("ok", "can't start new thread\n")
    assert 0 < int(count) < LIMITS.processes


# --- mounts, namespaces, privileges ---

MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
NAMESPACE_PROBES = [
    Probe("remount / read-write", f"attempt(lambda: checked('mount', b'none', b'/', None, {MS_REMOUNT}, None))", "refused EPERM\n"),
    Probe("bind /usr read-write", f"attempt(lambda: checked('mount', b'/usr', b'/tmp', None, {MS_BIND}, None))", "refused EPERM\n"),
    Probe("mount proc", "os.mkdir('/tmp/p')\nattempt(lambda: checked('mount', b'proc', b'/tmp/p', b'proc', 0, None))", "refused EPERM\n"),
    Probe("umount /tmp", f"attempt(lambda: checked('umount2', b'/tmp', {MNT_DETACH}))", "refused EPERM\n"),
    Probe("fsopen tmpfs", f"attempt(lambda: checked('syscall', {_nr('fsopen')}, b'tmpfs', 0))", "refused EPERM\n"),
    Probe("open_tree /", f"attempt(lambda: checked('syscall', {_nr('open_tree')}, -100, b'/', 1))", "refused EPERM\n"),
    Probe("pivot_root", f"attempt(lambda: checked('syscall', {_nr('pivot_root')}, b'/tmp', b'/tmp'))", "refused EPERM\n"),
    Probe("unshare user+mount", f"attempt(lambda: checked('unshare', {CLONE_NEWUSER | CLONE_NEWNS}))", "refused EPERM\n"),
    Probe(
        "clone into a new userns",
        f"attempt(lambda: child(checked('syscall', {_nr('clone')}, {CLONE_NEWUSER} | int(signal.SIGCHLD), 0, 0, 0, 0)))",
        "refused EPERM\n",
    ),
    Probe("chroot", "attempt(lambda: os.chroot('/tmp'))", "refused EPERM\n"),
    Probe("setuid 0", "attempt(lambda: os.setuid(0))", "refused EPERM\n", userns="refused EINVAL\n"),  # 0 is unmapped there
    Probe("ptrace a victim", "attempt(lambda: checked('ptrace', 16, VICTIMS[1], None, None))", "refused EPERM\n"),
    Probe("io_uring_setup", f"attempt(lambda: checked('syscall', {_nr('io_uring_setup')}, 8, ctypes.create_string_buffer(120)))", "refused EPERM\n"),
    Probe("bpf", f"attempt(lambda: checked('syscall', {_nr('bpf')}, 0, None, 0))", "refused EPERM\n"),
    Probe("userfaultfd", f"attempt(lambda: checked('syscall', {_nr('userfaultfd')}, 0))", "refused EPERM\n"),
    Probe("keyctl", f"attempt(lambda: checked('syscall', {_nr('keyctl')}, 0, -3, 0))", "refused EPERM\n"),
    Probe(
        "no capabilities, no_new_privs",
        "print(os.getuid() != 0, os.geteuid() != 0, libc.prctl(39, 0, 0, 0, 0), [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1])",
        "True True 1 []\n",
    ),
]


@probes(*NAMESPACE_PROBES)
async def test_no_mount_namespace_or_privilege(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.stdout) == ("ok", probe.expected_in(sandbox)), result.stderr


# --- what the program can read: a root of its own, nothing of the host's ---

READ_PROBES = [
    Probe("/etc/shadow", "attempt(lambda: open('/etc/shadow').read())", "refused ENOENT\n"),
    Probe("/etc/passwd", "attempt(lambda: open('/etc/passwd').read())", "refused ENOENT\n"),
    Probe("the server's environ", "attempt(lambda: open(f'/proc/{TEST_PID}/environ').read())", "refused ENOENT\n"),
    Probe("/proc/self/environ", "attempt(lambda: open('/proc/self/environ').read())", "refused ENOENT\n"),
    Probe("/proc/1/root", "attempt(lambda: os.listdir('/proc/1/root'))", "refused ENOENT\n"),
    Probe("/sys", "attempt(lambda: os.listdir('/sys/fs/cgroup'))", "refused ENOENT\n"),
    Probe("the project's source", "attempt(lambda: open(PROJECT_FILE).read())", "refused ENOENT\n"),
    Probe("a secret in the test's tmp_path", "attempt(lambda: open(SECRET_FILE).read())", "refused ENOENT\n"),
    Probe("the host's /tmp", "print(os.listdir('/tmp'))", "[]\n"),
    Probe("its environment", "print(sorted(os.environ), SECRET_ENV in os.environ)", "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR'] False\n"),
    Probe("inherited descriptors", "print([fd for fd in range(256) if outcome(lambda: os.fstat(fd)) != 'refused EBADF'])", "[0, 1, 2]\n"),
    Probe(
        "/dev",
        "print(sorted(os.listdir('/dev')))",
        "['core', 'fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']\n",
    ),
    Probe("/dev/mem", "attempt(lambda: open('/dev/mem', 'rb').read(1))", "refused ENOENT\n"),
]


@probes(*READ_PROBES)
async def test_nothing_of_the_host_is_readable(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.stdout) == ("ok", probe.expected_in(sandbox)), result.stderr
    assert host.secret not in result.stdout + result.stderr


# --- sockets: seccomp refuses socket() itself; the namespaces would hide the listeners anyway ---

SOCKET_PROBES = [
    Probe("TCP to 127.0.0.1", "import socket\nattempt(lambda: socket.create_connection(('127.0.0.1', TCP_PORT), timeout=1))", "refused EPERM\n"),
    Probe(
        "UDP to 127.0.0.1",
        "import socket\nattempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', TCP_PORT)))",
        "refused EPERM\n",
    ),
    Probe("unix socket in tmp_path", "import socket\nattempt(lambda: socket.socket(socket.AF_UNIX).connect(UNIX_PATH))", "refused EPERM\n"),
    Probe("abstract unix socket", "import socket\nattempt(lambda: socket.socket(socket.AF_UNIX).connect('\\0' + ABSTRACT_NAME))", "refused EPERM\n"),
    Probe("socketpair", "import socket\nattempt(socket.socketpair)", "refused EPERM\n"),
    Probe("netlink", "import socket\nattempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))", "refused EPERM\n"),
]


@probes(*SOCKET_PROBES)
async def test_no_socket_reaches_the_host(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.stdout) == ("ok", probe.expected_in(sandbox)), result.stderr


# --- signals: the victims run as the sandbox's own uids, so only the PID namespace hides them ---

SIGNAL_PROBES = [
    Probe("os.kill", "print({outcome(lambda: os.kill(pid, signal.SIGKILL)) for pid in VICTIMS})", "{'refused ESRCH'}\n"),
    Probe("os.killpg", "print({outcome(lambda: os.killpg(pid, signal.SIGKILL)) for pid in VICTIMS})", "{'refused ESRCH'}\n"),
    Probe("kill(-1)", "attempt(lambda: os.kill(-1, signal.SIGKILL))", "refused ESRCH\n"),
    Probe("tgkill", f"print({{outcome(lambda: checked('syscall', {_nr('tgkill')}, pid, pid, 9)) for pid in VICTIMS}})", "{'refused ESRCH'}\n"),
    Probe("pidfd_open", "print({outcome(lambda: os.pidfd_open(pid)) for pid in VICTIMS})", "{'refused EPERM'}\n"),
    Probe("pidfd_send_signal", f"attempt(lambda: checked('syscall', {_nr('pidfd_send_signal')}, 0, 9, None, 0))", "refused EPERM\n"),
]


@probes(*SIGNAL_PROBES)
async def test_no_signal_reaches_the_host(sandbox: Sandbox, host: Host, probe: Probe) -> None:
    result = await run_probe(sandbox, host, probe.body)
    assert (result.status, result.stdout) == ("ok", probe.expected_in(sandbox)), result.stderr


# --- writes: /tmp (a tmpfs of the sandbox's own) is the only writable place ---

READ_ONLY = ["/", "/usr", "/usr/lib", "/bin", "/dev", "/dev/shm", "/run", "/var", "/var/run"]


@pytest.mark.parametrize("directory", READ_ONLY)
async def test_writes_outside_tmp_fail(sandbox: Sandbox, host: Host, directory: str) -> None:
    name = f"ponder-hostile-{secrets.token_hex(6)}"
    target = Path(directory, name)
    body = f"attempt(lambda: open({str(target)!r}, 'x').close())\nattempt(lambda: os.mkdir({str(target)!r}))\n"
    try:
        result = await run_probe(sandbox, host, body)
        assert not target.exists()
    finally:
        if target.is_file():
            target.unlink()
    assert (result.status, result.stdout) == ("ok", "refused EROFS\nrefused EROFS\n")


async def test_tmp_is_writable_and_private(sandbox: Sandbox, host: Host) -> None:
    name = f"ponder-hostile-{secrets.token_hex(6)}"
    result = await run_probe(sandbox, host, f"attempt(lambda: open('/tmp/{name}', 'x').write('x'))\n")
    assert (result.status, result.stdout) == ("ok", "returned 1\n")
    assert not Path("/tmp", name).exists()


# --- exhaustion: each limit ends the attempt and is reported ---


async def test_descriptors_stop_at_the_limit(sandbox: Sandbox, host: Host) -> None:
    body = """\
    opened = []
    try:
        while len(opened) < 100000:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as error:
        print(len(opened), errno.errorcode[error.errno])
    """
    result = await run_probe(sandbox, host, body)
    count, error = result.stdout.split()
    assert (result.status, error) == ("ok", "EMFILE")
    assert int(count) < LIMITS.open_files


async def test_memory_stops_at_the_limit(sandbox: Sandbox, host: Host) -> None:
    body = f"""\
    import mmap
    attempt(lambda: len(bytearray({LIMITS.memory_mb + 64} << 20)))
    attempt(lambda: len(mmap.mmap(-1, 1 << 32)))
    hoard = []
    attempt(lambda: [hoard.append(bytes(1 << 20)) for _ in range(100000)])
    hoard.clear()
    print("alive")
    """
    result = await run_probe(sandbox, host, body)
    assert (result.status, result.stdout) == ("ok", "raised MemoryError\nrefused ENOMEM\nraised MemoryError\nalive\n")


async def test_disk_stops_at_the_tmpfs_size_and_a_file_at_its_own(sandbox: Sandbox, host: Host) -> None:
    body = """\
    written = 0
    try:
        while written < 1000:
            with open(f"/tmp/fill{written}", "wb") as handle:
                handle.write(bytes(1 << 20))
            written += 1
    except OSError as error:
        print(written, errno.errorcode[error.errno])
    for name in os.listdir("/tmp"):
        os.unlink("/tmp/" + name)
    attempt(lambda: open("/tmp/big", "wb").write(bytes(2 << 20)))
    """
    result = await run_probe(sandbox, host, body)
    filled, full, too_big = result.stdout.split(maxsplit=2)
    assert (result.status, full, too_big) == ("ok", "ENOSPC", "refused EFBIG\n")
    assert 0 < int(filled) <= LIMITS.disk_mb


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_an_output_flood_is_cut_and_killed(sandbox: Sandbox, host: Host, stream: str) -> None:
    result = await run_probe(sandbox, host, f"while True:\n    sys.{stream}.write('x' * 65536)\n")
    assert (result.status, result.returncode) == ("killed", -signal.SIGKILL)
    assert len(getattr(result, stream).encode()) <= LIMITS.output_kb * 1024 + len(FLOOD_NOTE)
    assert result.stderr.endswith(FLOOD_NOTE.decode())


async def test_cpu_stops_at_its_limit(sandbox: Sandbox, host: Host) -> None:
    """RLIMIT_CPU's SIGXCPU, not the wall limit (made roomy here: on a busy machine a CPU second takes longer)."""
    roomy = 5 * LIMITS.cpu_s
    result = await run_probe(sandbox, host, "while True:\n    pass\n", wall_s=roomy)
    assert (result.status, result.returncode) == ("killed", -signal.SIGXCPU)
    assert LIMITS.cpu_s <= result.duration_s < roomy


async def test_a_sleeper_that_ignores_signals_times_out(sandbox: Sandbox, host: Host) -> None:
    """The wall limit, and no way to stay behind it: a new session is allowed but leaves neither the PID
    namespace nor the cgroup, a child is refused, and the sleeper itself is killed (SIGKILL cannot be ignored)."""
    body = """\
    import time
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)
    attempt(os.setsid)
    attempt(lambda: child(os.fork()))
    time.sleep(60)
    """
    result = await run_probe(sandbox, host, body, wall_s=3)
    assert (result.status, result.returncode, result.stdout) == ("timeout", None, "returned None\nrefused EPERM\n")


async def _until_a_sandbox_process_runs(host: Host, name: str = "python", count: int = 1) -> None:
    spared = {victim.pid for victim in host.victims}
    async with asyncio.timeout(LIMITS.wall_s):
        while sum(f" {name}" in found for found in _sandbox_processes(spared)) < count:
            await asyncio.sleep(0.02)


async def test_cancelling_a_run_kills_it(sandbox: Sandbox, host: Host) -> None:
    run = asyncio.ensure_future(sandbox.run("import time\ntime.sleep(60)"))
    await _until_a_sandbox_process_runs(host)
    run.cancel()
    async with asyncio.timeout(LIMITS.wall_s):
        with pytest.raises(asyncio.CancelledError):
            await run
    await assert_nothing_left(host)
    host.assert_untouched()


async def test_cancelling_a_judgement_kills_both_sides(sandbox: Sandbox, host: Host) -> None:
    """Cancelled once both sides run."""
    judging = asyncio.ensure_future(run_tests(sandbox, "import time\ntime.sleep(60)", caller_tests(["import time\ntime.sleep(60)"])))
    await _until_a_sandbox_process_runs(host, "python", 2)
    await asyncio.sleep(0.2)
    judging.cancel()
    async with asyncio.timeout(LIMITS.wall_s):
        with pytest.raises(asyncio.CancelledError):
            await judging
    await assert_nothing_left(host)


@pytest.mark.parametrize("after_s", [0.0, 0.005, 0.02, 0.05])
async def test_cancelling_a_judgement_while_it_starts_ends_at_once(sandbox: Sandbox, host: Host, after_s: float) -> None:
    """Cancelled while bubblewrap is still making the sandboxes, a launcher may die before its sandbox does, and
    the sandbox still holds the candidate's pipes: the judgement must not wait for them, and nothing may stay."""
    for _ in range(3):
        judging = asyncio.ensure_future(run_tests(sandbox, "import time\ntime.sleep(60)", caller_tests(["import time\ntime.sleep(60)"])))
        await asyncio.sleep(after_s)
        judging.cancel()
        async with asyncio.timeout(LIMITS.wall_s):
            with pytest.raises(asyncio.CancelledError):
                await judging
        await assert_nothing_left(host)


# --- faking a pass: a wrong program plus a trick scores nothing ---

WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
CHECK = "def check(candidate):\n    assert abs(candidate(1, 2) - 3) < 1e-6\n    assert abs(candidate(2.5, 0.5) - 3.0) < 1e-6\n"
TESTS = [
    *caller_tests(["assert add(1, 2) == 3", "assert add(2, 3) == 5", "assert add(-4, 4) == 0", "assert add(10, 5) == 15"]),
    *caller_tests(["import math\nassert math.isclose(add(1, 2), 3)", "assert isinstance(add(1, 2), int) and add(1, 2) == 3"]),
    *caller_tests([CHECK]),
    *caller_tests(["for a in range(5):\n    assert add(a, 1) == a + 1", "assert all([add(a, 1) == a + 1 for a in [1, 2]])"]),
    *caller_tests(["for got, want in zip(map(add, [1, 2], [2, 3]), [3, 5]):\n    assert got == want"]),
    *visible_tests('def add(a, b):\n    """\n    >>> add(1, 2)\n    3\n    """\n', "add"),
]
VERDICTS = "".join(f"{index} pass\n" for index in range(len(TESTS)))

FRAMES = """\
import inspect, sys


def rewrite_every_frame():
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            for key, value in list(scope.items()):
                if isinstance(value, dict) and "tests" in value:
                    value["tests"] = ["pass"] * len(value["tests"])
                if key in ("outcome", "verdict"):
                    scope[key] = "pass"
                if isinstance(value, dict) and "verdicts_fd" in value:
                    os.write(value["verdicts_fd"], VERDICTS)
        frame = frame.f_back
    for info in inspect.stack():
        info.frame.f_locals.get("config", {}).pop("tests", None)


rewrite_every_frame()


def add(a, b):
    rewrite_every_frame()
    return a - b
"""

EVERY_FD = """\
def flood():
    for fd in range(256):
        try:
            os.write(fd, b"\\n" + VERDICTS + b'{"id": 1, "value": 3}\\n')
        except OSError:
            pass


flood()


def add(a, b):
    flood()
    return a - b
"""

ATEXIT = """\
import atexit
real = os.dup(1)
read, write = os.pipe()
os.dup2(write, 1)
atexit.register(lambda: os.write(real, VERDICTS))
print("ignored")


def add(a, b):
    return a - b
"""

TRACE = """\
import threading


def tracer(frame, event, arg):
    if "outcome" in frame.f_locals:
        frame.f_locals["outcome"] = "pass"
    return tracer


sys.settrace(tracer)
sys.setprofile(tracer)
threading.settrace(tracer)
threading.setprofile(tracer)


def add(a, b):
    return a - b
"""

ALWAYS_EQUAL = """\
class Anything:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __lt__(self, other):
        return True

    def __sub__(self, other):
        return self

    __rsub__ = __sub__
    __abs__ = __sub__


def add(a, b):
    return Anything()
"""

SUBCLASS = """\
class {base}Liar({base}):
    def __eq__(self, other):
        return True

    __hash__ = {base}.__hash__


def add(a, b):
    return {base}Liar({value})
"""

BUILTINS = """\
import builtins, math


class Swallow(Exception):
    pass


builtins.abs = lambda value: 0
builtins.isinstance = lambda *args: True
builtins.AssertionError = Swallow
math.isclose = lambda *args, **kwargs: True


def add(a, b):
    return a - b
"""

IMPORT_HOOK = """\
import builtins, types
real_import = builtins.__import__


def fake_import(name, *args, **kwargs):
    module = real_import(name, *args, **kwargs)
    if name == "math":
        fake = types.ModuleType("math")
        fake.isclose = lambda *args, **kwargs: True
        return fake
    return module


builtins.__import__ = fake_import


def add(a, b):
    return a - b
"""

MODULES = """\
import doctest, json
doctest.OutputChecker.check_output = lambda *args: True
doctest.DocTestRunner.run = lambda *args, **kwargs: doctest.TestResults(0, 1)
real_dumps = json.dumps
json.dumps = lambda value, **kwargs: real_dumps(value, **kwargs) + "\\n" + VERDICTS.decode()
json.loads = lambda *args, **kwargs: {"id": 1, "value": 3}


def add(a, b):
    return a - b
"""

FORGED = """\
import stat


def forge():
    for fd in range(3, 64):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b'{"loaded": true, "functions": ["__builtins__", "check", "add"], "values": {"AssertionError": 1}}\\n')
        except OSError:
            pass


forge()


def add(a, b):
    return a - b
"""

SHADOWING = """\
def add(a, b):
    return a - b


def isinstance(*args):
    return True


def all(*args):
    return True


def zip(*args):
    return []


def map(*args):
    return []
"""

FAKE_PASSES = {
    "frames walked for tests and verdicts": FRAMES,
    "verdict lines on stdout": "print(VERDICTS.decode())\ndef add(a, b):\n    print(VERDICTS.decode())\n    return a - b\n",
    "verdict lines on stderr": "print(VERDICTS.decode(), file=sys.stderr)\ndef add(a, b):\n    print(VERDICTS.decode(), file=sys.stderr)\n    return a - b\n",
    "verdict lines on every fd": EVERY_FD,
    "fd-1 pipe and atexit": ATEXIT,
    "settrace and setprofile": TRACE,
    "__eq__ always true": ALWAYS_EQUAL,
    "int subclass __eq__": SUBCLASS.format(base="int", value="a - b"),
    "str subclass __eq__": SUBCLASS.format(base="str", value="a - b"),
    "list subclass __eq__": SUBCLASS.format(base="list", value="[a - b]"),
    "builtins abs isinstance AssertionError, math.isclose": BUILTINS,
    "__import__ hook": IMPORT_HOOK,
    "doctest and json patched": MODULES,
    "SystemExit(0) in the function": "def add(a, b):\n    raise SystemExit(0)\n",
    "SystemExit(0) at import": "def add(a, b):\n    return a + b\nraise SystemExit(0)\n",
    "os._exit(0) in the function": "def add(a, b):\n    os._exit(0)\n",
    "os._exit(0) at import": "def add(a, b):\n    return a + b\nos._exit(0)\n",
    "KeyboardInterrupt in the function": "def add(a, b):\n    raise KeyboardInterrupt\n",
    "KeyboardInterrupt at import": "def add(a, b):\n    return a + b\nraise KeyboardInterrupt\n",
    "forged channel messages": FORGED,
    # a name the program defines reaches the tests as a proxy: one named like a builtin must not replace it
    "module-level def abs": "def add(a, b):\n    return a - b\ndef abs(value):\n    return 0\n",
    "module-level def range": "def add(a, b):\n    return a - b\ndef range(*args):\n    return []\n",
    "module-level builtins": SHADOWING,
    "StopIteration ends the tests' loop": "def add(a, b):\n    raise StopIteration\n",
}
TRICK_PRELUDE = f"import os, sys\nVERDICTS = {VERDICTS.encode()!r}\n"


@pytest.mark.parametrize("trick", FAKE_PASSES.values(), ids=FAKE_PASSES.keys())
async def test_a_wrong_program_cannot_fake_a_pass(sandbox: Sandbox, host: Host, trick: str) -> None:
    report = await run_tests(sandbox, TRICK_PRELUDE + trick, TESTS, "add")
    await assert_nothing_left(host)
    assert (report.passed, report.total) == (0, len(TESTS))


async def test_the_right_program_passes_every_test(sandbox: Sandbox, host: Host) -> None:
    report = await run_tests(sandbox, RIGHT, TESTS, "add")
    await assert_nothing_left(host)
    assert (report.passed, report.total, report.status, report.failures) == (len(TESTS), len(TESTS), "ok", [])


# --- hostile caller tests: the harness is sandboxed just like the candidate ---

CALLER_PROBES = {
    "aliased _posixsubprocess": FORK_EXEC.replace("attempt(fork_exec)", "assert outcome(fork_exec) == 'refused EPERM'"),
    "ctypes system": "assert libc.system(SHELL[2].encode()) == 32512",
    "TCP to the listener": "import socket\nassert outcome(lambda: socket.create_connection(('127.0.0.1', TCP_PORT))) == 'refused EPERM'",
    "unix socket to the listener": "import socket\nassert outcome(lambda: socket.socket(socket.AF_UNIX).connect(UNIX_PATH)) == 'refused EPERM'",
    "reading the secret file": "assert outcome(lambda: open(SECRET_FILE).read()) == 'refused ENOENT'",
    "killing the victims": "assert {outcome(lambda: os.kill(pid, signal.SIGKILL)) for pid in VICTIMS} == {'refused ESRCH'}",
}


async def test_hostile_caller_tests_are_contained(sandbox: Sandbox, host: Host) -> None:
    """Each caller test passes only if its escape was refused the expected way; the host checks say it had no
    effect either way."""
    tests = caller_tests([host.prelude + probe for probe in CALLER_PROBES.values()] + ["assert add(1, 2) == 3"])
    report = await run_tests(sandbox, RIGHT, tests, "add")
    await assert_nothing_left(host)
    host.assert_untouched()
    assert (report.passed, report.total, report.status) == (len(tests), len(tests), "ok"), report.failures

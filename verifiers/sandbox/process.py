"""Sandboxed processes, started and watched from the event loop.

Each process is the runner (`runner.py`) in a sandbox of its own (`isolation.py`). What it is handed (its
configuration, the program, the seccomp filter) travels in sealed memory files: read-only to it, nothing on the
host's disk. A run ends at its wall limit, or when its output passes the cap, and then everything it started
is killed: the sandbox's PID namespace dies with it, and its cgroup is emptied.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from verifiers.sandbox.isolation import Isolation
from verifiers.sandbox.limits import SandboxLimits
from verifiers.sandbox.seccomp import filter_program

RUNNER = (Path(__file__).parent / "runner.py").read_text()
FLOOD_NOTE = b"\n[sandbox: output limit exceeded, program killed]\n"
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
PROBE_S = 30
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}

Status = Literal["ok", "error", "timeout", "killed"]


@dataclass(frozen=True)
class ExecutionResult:
    status: Status  # ok: exit 0; error: nonzero exit; timeout: wall limit; killed: signal or output flood
    returncode: int | None  # negative: the signal that ended the program
    stdout: str
    stderr: str
    duration_s: float


def sealed(data: bytes) -> int:
    """A memory file holding `data`, sealed so that no process can change it (the sandbox gets it read-only)."""
    fd = os.memfd_create("ponder-sandbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    readonly = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return readonly


@dataclass
class Launch:
    """How to start one runner: its argv and Popen options, the cgroup made for it (remove it once the process
    has ended), and the server's copies of what it was handed (close them once it has started)."""

    argv: list[str]
    options: dict[str, Any]
    cgroup: Path | None
    handed: contextlib.ExitStack


def launch(isolation: Isolation, limits: SandboxLimits, uid: int, config: dict[str, Any], keep_fds: tuple[int, ...]) -> Launch:
    with contextlib.ExitStack() as handed:
        filter_fd = sealed(filter_program())
        handed.callback(os.close, filter_fd)
        limited = limits.model_dump(include={"cpu_s", "memory_mb", "file_mb", "processes", "open_files"})
        config_fd = sealed(json.dumps({**config, "seccomp_fd": filter_fd, **limited}).encode())
        handed.callback(os.close, config_fd)
        command = [isolation.python, "-I", "-S", "-B", "-c", RUNNER, str(config_fd)]
        argv = isolation.argv(command, uid, limits.disk_mb)
        cgroup = None
        if isolation.cgroup is not None:
            cgroup = isolation.cgroup.create(limits.processes + 2)  # + bubblewrap's own two processes
            argv = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]
        options = {"env": ENV, "start_new_session": True, "pass_fds": (filter_fd, config_fd, *keep_fds), "cwd": "/"}
        return Launch(argv, options, cgroup, handed.pop_all())


def probe(isolation: Isolation, uid: int) -> str | None:
    """Run a trivial program the given way; None when it worked, else what went wrong."""
    program = sealed(b"import os, sys\nprint('ok', os.getuid() != 0, os.path.realpath(sys.prefix))")
    started = launch(isolation, SandboxLimits(), uid, {"role": "program", "program_fd": program}, (program,))
    try:
        with started.handed:
            done = subprocess.run(started.argv, **started.options, capture_output=True, timeout=PROBE_S, check=False)
    finally:
        os.close(program)
        if started.cgroup is not None and isolation.cgroup is not None:
            isolation.cgroup.remove_now(started.cgroup)
    # the interpreter asked for, whole: a dynamic loader that cannot read its library falls back to another Python
    expected = f"ok True {isolation.prefix}\n".encode()
    if done.returncode == 0 and (done.stdout == expected or (isolation.launch == "unisolated" and done.stdout.startswith(b"ok"))):
        return None  # (a root server's unisolated program runs as root: that is what the mode means)
    if done.returncode == 0:
        return f"the sandbox ran {done.stdout.decode(errors='replace').strip()!r}, not a non-root {isolation.python}"
    lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"]
    return str(lines[-1])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class _Capture:
    """The first `limit` bytes of a stream. Past that the program is killed rather than drained: draining a
    flood would spend the server's event loop for the whole wall time."""

    def __init__(self, limit: int, on_flood: Callable[[], None]) -> None:
        self.data = bytearray()
        self.flooded = False
        self._limit = limit
        self._on_flood = on_flood

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while chunk := await stream.read(1 << 16):
            room = self._limit - len(self.data)
            self.data += chunk[:room]
            if len(chunk) > room and not self.flooded:
                self.flooded = True
                self._on_flood()


class SandboxedProcess:
    """One runner process: start it, feed its stdin, keep its output, end it."""

    def __init__(self, isolation: Isolation, limits: SandboxLimits) -> None:
        self._isolation = isolation
        self._limits = limits
        self._proc: asyncio.subprocess.Process | None = None
        limit = limits.output_kb * 1024
        self._stdout = _Capture(limit, self.kill)
        self._stderr = _Capture(limit, self.kill)
        self._started = 0.0

    @contextlib.asynccontextmanager
    async def running(self, uid: int, config: dict[str, Any], keep_fds: tuple[int, ...], piped_stdin: bool = False) -> AsyncIterator[SandboxedProcess]:
        started = launch(self._isolation, self._limits, uid, config, keep_fds)
        try:
            with started.handed:
                self._started = time.monotonic()
                self._proc = await asyncio.create_subprocess_exec(
                    *started.argv,
                    stdin=asyncio.subprocess.PIPE if piped_stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    **started.options,
                )
            try:
                yield self
            finally:  # also on cancellation: nothing of the run may outlive it
                self.kill()
                await self._proc.wait()
        finally:
            if started.cgroup is not None and self._isolation.cgroup is not None:
                await asyncio.shield(self._isolation.cgroup.remove(started.cgroup))

    def kill(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc.pid)

    async def finish(self, stdin: bytes | None = None) -> int:
        """Feed stdin, keep the output until the process ends, and return its status."""
        assert self._proc is not None
        await asyncio.gather(self._feed(stdin), self._stdout.drain(self._proc.stdout), self._stderr.drain(self._proc.stderr))
        return await self._proc.wait()

    async def _feed(self, stdin: bytes | None) -> None:
        if stdin is None or self._proc is None or self._proc.stdin is None:
            return
        pipe = self._proc.stdin
        # A program may end, or close its stdin, before reading it: then its pipe is gone. asyncio says so with
        # BrokenPipeError or ConnectionResetError, uvloop with a RuntimeError on the closed transport.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            if stdin and not pipe.is_closing():
                pipe.write(stdin)
                await pipe.drain()
        pipe.close()

    def result(self, returncode: int | None) -> ExecutionResult:
        """The run's outcome; `returncode` None means the wall limit ended it."""
        flooded = self._stdout.flooded or self._stderr.flooded
        status: Status
        if returncode is None:
            status = "timeout"
        elif flooded or returncode < 0 or returncode > 128:
            status = "killed"
        else:
            status = "ok" if returncode == 0 else "error"
        if returncode is not None and returncode > 128:
            returncode = 128 - returncode  # bubblewrap's init reports a program killed by signal N as 128+N
        return ExecutionResult(
            status=status,
            returncode=returncode,
            stdout=self._stdout.data.decode("utf-8", "replace"),
            stderr=(self._stderr.data + (FLOOD_NOTE if flooded else b"")).decode("utf-8", "replace"),
            duration_s=time.monotonic() - self._started,
        )

"""The sandbox a server holds: runs programs, and judges programs against tests, at most `concurrency` at once.

Judging takes two sandboxes. The candidate loads the model's program and answers calls; the harness runs the
tests against proxies of its functions. Between them is a pair of pipes that carry plain data only, and the
server reads verdicts from a third pipe that only the harness holds. So a program can game nothing: not the
harness's frames or its globals, builtins, modules or tracing, not the verdict stream, not the comparison (an
object whose `__eq__` is always true never leaves the candidate). The API caller's tests are untrusted too,
which is why the harness is sandboxed just like the candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from verifiers.sandbox.isolation import Isolation, SandboxUnavailable, detect
from verifiers.sandbox.limits import SandboxLimits
from verifiers.sandbox.process import ExecutionResult, SandboxedProcess, Status, probe, sealed

log = logging.getLogger("ponder.sandbox")
VERDICT = re.compile(rb"^(\d+) (pass|fail)$", re.MULTILINE)
MAX_VERDICTS = 1 << 20
CANDIDATE_GRACE_S = 0.5  # a candidate ends on its own once the harness closes the calls pipe


@dataclass(frozen=True)
class Verdicts:
    passed: frozenset[int]  # indices of the tests the harness saw pass
    status: Status  # the candidate's run: "error" when its program failed to load or it died


class _Fds:
    """File descriptors this run opened, each closed once: a number closed twice may by then be another task's."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def add(self, fd: int) -> int:
        self._open.add(fd)
        return fd

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe2(os.O_CLOEXEC)
        return self.add(read), self.add(write)

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.remove(fd)
                os.close(fd)

    def close_all(self) -> None:
        self.close(*list(self._open))


class Sandbox:
    """Construct once per server: the first construction probes the machine (synchronously, once per process)."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._isolation: Isolation | None = None
        self.unavailable: str | None = None
        try:
            self._isolation = detect(self.limits.python, self.limits.uid_base, self.limits.allow_unisolated, probe)
            log.info("sandbox: %s", self._isolation.describe())
        except SandboxUnavailable as error:
            self.unavailable = str(error)
            log.error("%s", error)
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(self.limits.concurrency):
            self._slots.put_nowait(slot)

    @property
    def isolation(self) -> str:
        """Which layers confine a run here, or why none can (then every run raises `SandboxUnavailable`)."""
        return self._isolation.describe() if self._isolation else "unavailable"

    @property
    def layers(self) -> list[str]:
        return self._isolation.layers if self._isolation else []

    def report(self) -> dict[str, object]:
        return {
            "isolation": self.isolation,
            "layers": self.layers,
            "available": self._isolation is not None,
            **({"problem": self.unavailable} if self.unavailable else {}),
        }

    def _require(self) -> Isolation:
        if self._isolation is None:
            raise SandboxUnavailable(self.unavailable or "sandbox unavailable")
        return self._isolation

    def _limits(self, wall_s: float | None) -> SandboxLimits:
        if wall_s is None:
            return self.limits
        return self.limits.model_copy(update={"wall_s": wall_s, "cpu_s": min(self.limits.cpu_s, wall_s)})

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[tuple[int, int]]:
        """Two host uids of this run's own: no two concurrent processes share a uid, so none can count against
        another's process limit."""
        slot = await self._slots.get()
        try:
            base = self.limits.uid_base + 2 * slot
            yield base, base + 1
        finally:
            self._slots.put_nowait(slot)

    async def run(self, source: str, stdin: str = "", wall_s: float | None = None) -> ExecutionResult:
        """Run a program as `__main__`; its output is the result. `wall_s` replaces the wall limit for this run
        (a caller's `verifier.timeout_s`); CPU time stays within it."""
        isolation = self._require()
        limits = self._limits(wall_s)
        fds = _Fds()
        async with self._slot() as (uid, _):
            try:
                program = fds.add(sealed(source.encode("utf-8", "replace")))
                process = SandboxedProcess(isolation, limits)
                async with process.running(uid, {"role": "program", "program_fd": program}, (program,), piped_stdin=True):
                    fds.close(program)
                    returncode: int | None = None
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(limits.wall_s):
                            returncode = await process.finish(stdin.encode("utf-8", "replace"))
                    return process.result(returncode)
            finally:
                fds.close_all()

    async def judge(self, program: str, tests: list[str], entry_point: str | None, wall_s: float | None = None) -> Verdicts:
        """Run `tests` against `program` in two sandboxes. Verdicts arrive as each test ends, so the tests judged
        before the wall limit keep theirs; the candidate is given a moment to end once the harness has."""
        isolation = self._require()
        limits = self._limits(wall_s)
        fds = _Fds()
        verdicts = bytearray()
        async with self._slot() as (candidate_uid, harness_uid):
            try:
                program_fd = fds.add(sealed(program.encode("utf-8", "replace")))
                (calls_r, calls_w), (replies_r, replies_w), (verdicts_r, verdicts_w) = fds.pipe(), fds.pipe(), fds.pipe()
                candidate, harness = SandboxedProcess(isolation, limits), SandboxedProcess(isolation, limits)
                candidate_fds = (program_fd, calls_r, replies_w)
                harness_fds = (calls_w, replies_r, verdicts_w)
                candidate_config = {"role": "candidate", "program_fd": program_fd, "calls_fd": calls_r, "replies_fd": replies_w}
                harness_config = {
                    "role": "harness",
                    "tests": tests,
                    "entry_point": entry_point,
                    "calls_fd": calls_w,
                    "replies_fd": replies_r,
                    "verdicts_fd": verdicts_w,
                }
                async with (
                    candidate.running(candidate_uid, candidate_config, candidate_fds),
                    harness.running(harness_uid, harness_config, harness_fds),
                ):
                    fds.close(*candidate_fds, *harness_fds)
                    candidate_done = asyncio.ensure_future(candidate.finish())
                    returncode: int | None = None
                    try:
                        async with asyncio.timeout(limits.wall_s):
                            await asyncio.gather(harness.finish(), _read_all(verdicts_r, verdicts))
                            done, _ = await asyncio.wait({candidate_done}, timeout=CANDIDATE_GRACE_S)
                            returncode = candidate_done.result() if done else 0
                    except TimeoutError:
                        pass
                    finally:
                        # a process that outlived its launcher may still hold the pipes: stop reading them, the
                        # cgroup or the PID namespace ends it
                        candidate.kill()
                        candidate_done.cancel()
                        await asyncio.gather(candidate_done, return_exceptions=True)
                    outcome = candidate.result(returncode)
            finally:
                fds.close_all()
        found = VERDICT.findall(bytes(verdicts))
        passed = {int(index) for index, verdict in found if verdict == b"pass"}
        failed = {int(index) for index, verdict in found if verdict == b"fail"}
        return Verdicts(frozenset(passed - failed), outcome.status)


async def _read_all(fd: int, into: bytearray) -> None:
    """Everything written to the pipe until its last writer closes it, up to a bound."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_VERDICTS)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0))
    try:
        while len(into) < MAX_VERDICTS and (chunk := await reader.read(1 << 16)):
            into += chunk
    finally:
        transport.close()

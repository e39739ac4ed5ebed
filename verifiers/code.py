"""Run model-written Python against tests, in a sandbox.

Model output is hostile input. Each run is a fresh interpreter (`verifiers/sandbox_runner.py`) in its own
session, with rlimits, a wall timeout that kills the whole process group, a throwaway working directory, an
environment of PATH, LANG and TMPDIR only, and an audit hook; where the machine allows unprivileged
namespaces it also gets fresh user, network, PID, IPC and mount namespaces (no network, no view of the
server's processes, a read-only filesystem but for a small tmpfs). A root server runs programs as nobody where
nobody can run the interpreter, since root is exempt from RLIMIT_NPROC and from file permissions. Runs are
asyncio subprocesses, so a run never blocks the event loop, and at most `concurrency` run at once per Sandbox.

Test results come back on stdout behind a random per-run marker, so a program's own prints are not read as
results. A program that inspects the harness's frames can still find the marker; like an `__eq__` that always
returns True, that is a way to game a test, not to harm the server.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

RUNNER = Path(__file__).with_name("sandbox_runner.py").read_text()
UNSHARE = shutil.which("unshare")
SETPRIV = shutil.which("setpriv")  # drops to nobody as a command, so it works on any event loop (uvloop too)
NOBODY = 65534
UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc")
FLOOD_NOTE = b"\n[sandbox: output limit exceeded, program killed]\n"
REPORTED_FAILURES = 5

Status = Literal["ok", "error", "timeout", "killed"]


class SandboxLimits(BaseModel):
    """Limits of one sandbox run (nested into the service settings as PONDER_SANDBOX__*)."""

    cpu_s: float = Field(5, gt=0, description="RLIMIT_CPU (rounded up to whole seconds)")
    wall_s: float = Field(10, gt=0, description="wall-clock limit; the whole process group is killed after it")
    memory_mb: int = Field(512, ge=64, description="RLIMIT_AS")
    file_mb: int = Field(1, ge=1, description="RLIMIT_FSIZE: the largest file a program may write")
    disk_mb: int = Field(8, ge=1, description="all files a program may write (tmpfs size; file count in fallback)")
    processes: int = Field(
        16, ge=4, description="RLIMIT_NPROC: threads count, and in namespaces the sandbox's own 3 processes too"
    )
    output_kb: int = Field(64, ge=1, description="stdout and stderr kept, each; more kills the program")
    concurrency: int = Field(2, ge=1, description="runs at once per Sandbox")


@dataclass(frozen=True)
class ExecutionResult:
    status: Status  # ok: exit 0; error: nonzero exit; timeout: wall limit; killed: signal or output flood
    returncode: int | None  # negative: the signal that ended the program
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class _Mode:
    """How runs are isolated on this machine; `_detect_mode` picks the strongest that works."""

    namespaces: bool  # fresh user, network, PID, IPC and mount namespaces (util-linux unshare)
    contain_fs: bool  # all mounts read-only, working directory a small tmpfs (needs namespaces)
    nobody: bool  # server is root: run as uid/gid 65534 so RLIMIT_NPROC and file permissions apply

    def describe(self) -> str:
        layers = [
            *(["userns+netns+pidns+ipcns"] if self.namespaces else []),
            *(["rofs+tmpfs"] if self.contain_fs else []),
            *(["uid-nobody"] if self.nobody else []),
        ]
        return "+".join([*layers, "rlimits+audit-hook"])


@contextlib.contextmanager
def _prepared(mode: _Mode, limits: SandboxLimits, source: str, stdin: str) -> Iterator[tuple[list[str], dict]]:
    """A throwaway working directory, the program and stdin as files, and how to start the runner on them.

    The program travels on an inherited file descriptor and stdin is a file, not a pipe, so nothing here
    depends on the program reading its input or on file permissions when it runs as nobody.
    """
    with (
        tempfile.TemporaryDirectory(prefix="ponder-sandbox-") as workdir,
        tempfile.TemporaryFile() as program,
        tempfile.TemporaryFile() as stdin_file,
    ):
        for handle, text in ((program, source), (stdin_file, stdin)):
            handle.write(text.encode("utf-8", "replace"))
            handle.seek(0)
        config = {
            "stage": "setup",
            "program_fd": program.fileno(),
            "contain": mode.contain_fs,
            **limits.model_dump(include={"cpu_s", "memory_mb", "file_mb", "disk_mb", "processes"}),
        }
        argv = [sys.executable, "-I", "-S", "-B", "-c", RUNNER, json.dumps(config)]
        options: dict[str, Any] = {
            "stdin": stdin_file,
            "cwd": workdir,
            "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": workdir},
            "start_new_session": True,
            "pass_fds": (program.fileno(),),
        }
        if mode.namespaces:
            argv = [UNSHARE, *UNSHARE_FLAGS, *argv]
        if mode.nobody:
            os.chown(workdir, NOBODY, NOBODY)
            argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
        yield argv, options


def _works(mode: _Mode) -> bool:
    with _prepared(mode, SandboxLimits(), "print('ok')", "") as (argv, options):
        try:
            done = subprocess.run(argv, **options, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0 and done.stdout == b"ok\n"


@functools.cache
def _detect_mode() -> _Mode:
    """Try the strongest isolation first; each try runs a trivial program end to end (once per process)."""
    layers = [(True, True), (True, False)] if UNSHARE else []
    users = [True, False] if os.geteuid() == 0 and SETPRIV else [False]
    for namespaces, contain_fs in [*layers, (False, False)]:
        for nobody in users:
            mode = _Mode(namespaces, contain_fs, nobody)
            if _works(mode):
                return mode
    raise RuntimeError("sandbox: cannot start the sandbox runner on this machine")


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

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1 << 16):
            room = self._limit - len(self.data)
            self.data += chunk[:room]
            if len(chunk) > room and not self.flooded:
                self.flooded = True
                self._on_flood()


class Sandbox:
    """Runs untrusted Python; construct once (the first construction probes the machine, synchronously)."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._mode = _detect_mode()
        self.isolation = self._mode.describe()
        self._slots = asyncio.Semaphore(self.limits.concurrency)

    async def run(self, source: str, stdin: str = "", wall_s: float | None = None) -> ExecutionResult:
        """`wall_s` replaces the wall-clock limit for this run (a caller's `verifier.timeout_s`); CPU time stays
        within it."""
        limits = self.limits
        if wall_s is not None:
            limits = limits.model_copy(update={"wall_s": wall_s, "cpu_s": min(limits.cpu_s, wall_s)})
        async with self._slots:
            with _prepared(self._mode, limits, source, stdin) as (argv, options):
                started = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **options
                )
                try:
                    return await self._watch(proc, started, limits)
                finally:  # also on cancellation: nothing of the run may outlive it
                    _kill_group(proc.pid)
                    await proc.wait()

    async def _watch(self, proc: asyncio.subprocess.Process, started: float, limits: SandboxLimits) -> ExecutionResult:
        limit = limits.output_kb * 1024
        stdout, stderr = (_Capture(limit, lambda: _kill_group(proc.pid)) for _ in range(2))
        timed_out = False
        try:
            async with asyncio.timeout(limits.wall_s):
                await asyncio.gather(stdout.drain(proc.stdout), stderr.drain(proc.stderr), proc.wait())
        except TimeoutError:
            timed_out = True
        _kill_group(proc.pid)
        returncode = await proc.wait()
        if self._mode.namespaces and returncode > 128:
            returncode = 128 - returncode  # the PID-1 stage reports a signal N as exit status 128+N
        flooded = stdout.flooded or stderr.flooded
        status: Status
        if timed_out:
            status = "timeout"
        elif flooded or returncode < 0:
            status = "killed"
        else:
            status = "ok" if returncode == 0 else "error"
        return ExecutionResult(
            status=status,
            returncode=returncode,
            stdout=stdout.data.decode("utf-8", "replace"),
            stderr=(stderr.data + (FLOOD_NOTE if flooded else b"")).decode("utf-8", "replace"),
            duration_s=time.monotonic() - started,
        )


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    source: str  # Python statements that raise on failure
    label: str  # short human label for reports


@dataclass(frozen=True)
class TestReport:
    __test__ = False

    passed: int
    total: int
    status: str  # the run's status, or "no_tests"
    failures: list[str]  # labels of the first failed tests

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


def _shorten(text: str, width: int = 80) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _label(call: str, expected: str) -> str:
    return f"{_shorten(call, 60)} -> {_shorten(expected, 40)}"


def caller_tests(tests: str | list[str]) -> list[TestCase]:
    """Tests from the API caller: each list item one test (assert statements, a snippet, or a HumanEval-style
    `check(candidate)` definition that `run_tests` calls with the entry point)."""
    items = [tests] if isinstance(tests, str) else tests
    return [
        TestCase(item, "check(candidate)" if re.search(r"^def check\s*\(", item, re.MULTILINE) else _shorten(item))
        for item in items
        if item.strip()
    ]


_DOCTEST = """\
import ast, doctest


class _Checker(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        try:  # the same value written differently: "21" for '21', [1,2] for [1, 2]
            return ast.literal_eval(want) == ast.literal_eval(got)
        except Exception:
            return False


_runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.NORMALIZE_WHITESPACE)
_examples = [doctest.Example(source, want, exc_msg, options=options) for source, want, exc_msg, options in {examples!r}]
_runner.run(doctest.DocTest(_examples, globals(), "prompt", None, 0, None), out=lambda _: None, clear_globs=False)
assert not _runner.failures, "the prompt's example gave different output"
"""
_ARROW = re.compile(r"==>|=>|->|➞|→|==|\bshould return\b")
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")
_MAX_LINE = 500  # example lines are short; parsing every split of a long line costs time
_CLOSING_QUOTES = re.compile(r"^[ \t]*(\"\"\"|''').*", re.MULTILINE | re.DOTALL)
_PARSE_ERRORS = (SyntaxError, ValueError, TypeError, RecursionError, MemoryError)


def _cut_at_dedent(chunk: str) -> str:
    """The chunk up to its first line indented less than its first line: where a docstring quoted in a chat
    message ends and the message goes on."""
    first, *rest = chunk.split("\n")
    indent = len(first) - len(first.lstrip())
    for index, line in enumerate(rest):
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            return "\n".join([first, *rest[:index]])
    return chunk


def _doctest_examples(prompt: str) -> list[doctest.Example]:
    """Doctest examples; when the prompt as a whole is not a consistent doctest, example by example.

    The prompt is read as written, not as its docstrings' values: examples in prompts are written for the eye
    (an escape like "a\\nb" meant as typed), and the prompt may be a chat message rather than Python.
    """
    parser = doctest.DocTestParser()
    try:
        return parser.get_examples(prompt)
    except ValueError:
        examples = []
        for chunk in re.split(r"\n(?=[ \t]*>>>)", prompt):
            with contextlib.suppress(ValueError):
                examples += parser.get_examples(_cut_at_dedent(chunk))
        return examples


def _doctest_tests(prompt: str) -> list[TestCase]:
    """One test per example with expected output; examples without output are setup for the ones after."""
    tests, setup = [], []
    for example in _doctest_examples(prompt):
        # the expected output ran on to the docstring's end
        example.want = _CLOSING_QUOTES.sub("", example.want)
        if example.exc_msg is not None:
            example.exc_msg = _CLOSING_QUOTES.sub("", example.exc_msg)
        if not example.want and example.exc_msg is None:
            setup.append(example)
            continue
        steps = [(e.source, e.want, e.exc_msg, e.options) for e in [*setup, example]]
        tests.append(TestCase(_DOCTEST.format(examples=steps), _label(example.source, example.exc_msg or example.want)))
    return tests


def _expression(text: str) -> ast.expr | None:
    """The expression the text is, or None; quietly (a prompt's "\\d" is not ours to warn about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(text, mode="eval").body
        except _PARSE_ERRORS:
            return None


def _is_literal(node: ast.expr) -> bool:
    """Literals only: a name or call in an example is prose or needs context the test would not have."""
    try:
        ast.literal_eval(node)
    except _PARSE_ERRORS:
        return False
    return True


def _arrow_example(left: str, right: str, entry_point: str | None) -> tuple[str, str] | None:
    right = right.strip()
    candidates = (_expression(text) for text in (right, right.rstrip(".,;")))  # "should return 3."
    expected = next((node for node in candidates if node is not None and _is_literal(node)), None)
    if expected is None:
        return None
    for start in _CALL_START.finditer(left):
        if entry_point is not None and start.group(1) != entry_point:
            continue
        call = _expression(left[start.start() :].strip())
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and all(_is_literal(arg) for arg in [*call.args, *(keyword.value for keyword in call.keywords)])
        ):
            return ast.unparse(call), ast.unparse(expected)
    return None


def _arrow_tests(text: str, entry_point: str | None) -> list[TestCase]:
    tests = []
    for line in text.splitlines():
        if len(line) > _MAX_LINE or line.lstrip().startswith((">>>", "...")):
            continue
        for match in _ARROW.finditer(line):
            if found := _arrow_example(line[: match.start()], line[match.end() :], entry_point):
                call, expected = found
                tests.append(TestCase(f"assert ({call}) == ({expected})", _label(call, expected)))
                break
    return tests


def visible_tests(prompt: str, entry_point: str | None = None) -> list[TestCase]:
    """Tests from the examples a prompt shows: doctests, and lines like `f(1, 2) ==> 3` (also `=>`, `->`, `➞`,
    `→`, `==`, `should return`) whose call and expected value are Python literals. Pure parsing."""
    return list(dict.fromkeys([*_doctest_tests(prompt), *_arrow_tests(prompt, entry_point)]))


_HARNESS = """\
import os as _os


def _harness(program, tests, entry_point, marker, write=_os.write, exec=exec, compile=compile, dict=dict,
             enumerate=enumerate, callable=callable, BaseException=BaseException):
    namespace = {{"__name__": "__candidate__"}}
    exec(compile(program, "<program>", "exec"), namespace)
    for index, test in enumerate(tests):
        scope = dict(namespace)
        try:
            exec(compile(test, f"<test {{index}}>", "exec"), scope)
            check = scope.get("check")
            if entry_point is not None and callable(check) and check is not namespace.get("check"):
                check(namespace[entry_point])
        except BaseException:
            outcome = "fail"
        else:
            outcome = "pass"
        write(1, f"\\n{{marker}} {{index}} {{outcome}}\\n".encode())


_harness(*{payload!r})
"""


async def run_tests(
    sandbox: Sandbox, program: str, tests: list[TestCase], entry_point: str | None = None, wall_s: float | None = None
) -> TestReport:
    """Run the program once, then each test in its own try/except, in one sandbox run.

    A program that fails to load fails every test (status "error"); tests not reported when the run ends
    (timeout, kill, os._exit) count as failed. Builtins the harness uses are bound before the program runs, so
    rebinding them does not skip tests.
    """
    if not tests:
        return TestReport(passed=0, total=0, status="no_tests", failures=[])
    marker = secrets.token_hex(16)
    payload = (program, [test.source for test in tests], entry_point, marker)
    result = await sandbox.run(_HARNESS.format(payload=payload), wall_s=wall_s)
    outcomes = re.findall(rf"^{marker} (\d+) (pass|fail)$", result.stdout, re.MULTILINE)
    failed = {int(index) for index, outcome in outcomes if outcome == "fail"}
    passed = {int(index) for index, outcome in outcomes if outcome == "pass"} - failed
    return TestReport(
        passed=len(passed & set(range(len(tests)))),
        total=len(tests),
        status=result.status,
        failures=[test.label for index, test in enumerate(tests) if index not in passed][:REPORTED_FAILURES],
    )

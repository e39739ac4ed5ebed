"""The code sandbox: tests against programs, the prompt-example parser, and hostile programs.

Hostile programs run under both the isolation this machine allows and the fallback (rlimits and the audit
hook only, as where namespaces are disallowed), and must fail without touching this process, its files, its
network listener or its environment, and without leaving a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import keyword
import os
import secrets
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from verifiers import code
from verifiers.code import (
    ExecutionResult,
    Sandbox,
    SandboxLimits,
    caller_tests,
    run_tests,
    visible_tests,
)
from verifiers.sandbox_runner import make_guard

LIMITS = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256, output_kb=16, concurrency=2)
FALLBACK = code._Mode(namespaces=False, contain_fs=False, nobody=False)

HUMANEVAL_PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
'''
CORRECT = HUMANEVAL_PROMPT + """    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
"""
WRONG = HUMANEVAL_PROMPT + "    return False\n"
HUMANEVAL_TEST = """

METADATA = {'author': 'jt', 'dataset': 'test'}


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
    assert candidate([1.0, 2.0, 3.0, 4.0, 5.0], 2.0) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False
"""


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


@pytest.fixture(params=["detected", "fallback"])
def any_sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The machine's isolation, and the fallback that machines without namespaces get."""
    if request.param == "fallback":
        monkeypatch.setattr(code, "_detect_mode", lambda: FALLBACK)
    return Sandbox(LIMITS)


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Session ids of the runs a test starts: each run is a new session, and its processes (in a PID namespace
    or not) stay in it, so a process left in one outlived its run."""
    started: list[int] = []
    spawn = asyncio.create_subprocess_exec

    async def recording(*args: object, **kwargs: object) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return started


def in_sessions(sessions: list[int], processes: list[psutil.Process] | None = None) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter() if processes is None else processes:
        with contextlib.suppress(OSError):
            if os.getsid(process.pid) in sessions:
                found.append(process)
    return found


def assert_no_leftovers(sessions: list[int]) -> None:
    assert sessions, "no run was started"
    # Other tests' helpers (math-verify's worker process) may be children too: only the sandbox's sessions count.
    assert not in_sessions(sessions, psutil.Process().children(recursive=True)), "a sandbox process was not reaped"
    deadline = time.monotonic() + 2  # SIGKILL is delivered asynchronously; give the kernel a moment
    while (alive := in_sessions(sessions)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"sandbox processes outlived their run: {alive}"


# --- tests against programs ---


async def test_correct_and_incorrect_programs_against_caller_tests(sandbox: Sandbox) -> None:
    tests = caller_tests(["assert add(1, 2) == 3", "assert add(2, 0) == 2", "assert add('a', 'b') == 'ab'"])
    good = await run_tests(sandbox, "def add(a, b):\n    return a + b\n", tests)
    assert (good.passed, good.total, good.status, good.failures, good.pass_rate) == (3, 3, "ok", [], 1.0)
    bad = await run_tests(sandbox, "def add(a, b):\n    print('3 pass', a)\n    return a - b\n", tests)
    assert (bad.passed, bad.total, bad.status) == (1, 3, "ok")
    assert bad.failures == ["assert add(1, 2) == 3", "assert add('a', 'b') == 'ab'"]


async def test_humaneval_check_candidate(sandbox: Sandbox) -> None:
    tests = caller_tests(HUMANEVAL_TEST)
    assert [t.label for t in tests] == ["check(candidate)"]
    assert (await run_tests(sandbox, CORRECT, tests, entry_point="has_close_elements")).passed == 1
    assert (await run_tests(sandbox, WRONG, tests, entry_point="has_close_elements")).passed == 0


async def test_program_that_fails_to_load_fails_every_test(sandbox: Sandbox) -> None:
    report = await run_tests(sandbox, "def add(a, b) return a + b", caller_tests(["assert add(1, 2) == 3"]))
    assert (report.passed, report.total, report.status) == (0, 1, "error")


async def test_test_that_loops_fails_with_the_run_timing_out() -> None:
    sandbox = Sandbox(LIMITS.model_copy(update={"wall_s": 1.5, "cpu_s": 10}))
    tests = caller_tests(["assert f() == 1", "while True: pass", "assert f() == 1"])
    report = await run_tests(sandbox, "def f():\n    return 1\n", tests)
    assert (report.passed, report.total, report.status) == (1, 3, "timeout")


async def test_no_tests_runs_nothing(sandbox: Sandbox) -> None:
    report = await run_tests(sandbox, "raise SystemExit(1)", [])
    assert (report.passed, report.total, report.status, report.pass_rate) == (0, 0, "no_tests", 0.0)


async def test_rebinding_builtins_does_not_skip_tests(sandbox: Sandbox) -> None:
    program = "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
    report = await run_tests(sandbox, program, caller_tests(["assert False"]))
    assert report.passed == 0


# --- prompt examples ---


async def test_doctests_from_a_humaneval_prompt(sandbox: Sandbox) -> None:
    tests = visible_tests(HUMANEVAL_PROMPT, "has_close_elements")
    assert [t.label for t in tests] == [
        "has_close_elements([1.0, 2.0, 3.0], 0.5) -> False",
        "has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) -> True",
    ]
    assert (await run_tests(sandbox, CORRECT, tests)).passed == 2
    assert (await run_tests(sandbox, WRONG, tests)).passed == 1


async def test_doctests_from_a_chat_prompt(sandbox: Sandbox) -> None:
    prompt = f"Complete this function:\n```python\n{HUMANEVAL_PROMPT}```\nAnswer with code only."
    tests = visible_tests(prompt, "has_close_elements")
    assert len(tests) == 2
    assert (await run_tests(sandbox, CORRECT, tests)).passed == 2


async def test_doctest_setup_output_and_exceptions(sandbox: Sandbox) -> None:
    prompt = '''def double(x):
    """
    >>> y = double(2)
    >>> y
    4
    >>> print(double('ab'))
    abab
    >>> double(None)
    Traceback (most recent call last):
    TypeError: unsupported operand type(s) for *: 'NoneType' and 'int'
    """
'''
    tests = visible_tests(prompt, "double")
    assert len(tests) == 3
    report = await run_tests(sandbox, prompt + "    return x * 2\n", tests)
    assert (report.passed, report.failures) == (3, [])


def test_arrow_styles() -> None:
    prompt = """
    Examples
    any_int(5, 2, 7) ➞ True
    any_int(3, -2, 1) ==> False
    any_int(3,2,2) -> False
    For example: any_int(1, 2, 3) == True
    any_int(2, 2, 4) should return True.
    any_int(x, y, z) -> the sum
    any_int(1, 2, 3) -> some text
    other(1) ➞ 2
    def any_int(x, y, z) -> bool:
    """
    assert [t.label for t in visible_tests(prompt, "any_int")] == [
        "any_int(5, 2, 7) -> True",
        "any_int(3, -2, 1) -> False",
        "any_int(3, 2, 2) -> False",
        "any_int(1, 2, 3) -> True",
        "any_int(2, 2, 4) -> True",
    ]
    assert "other(1) -> 2" in [t.label for t in visible_tests(prompt)]
    assert visible_tests(prompt, "any_int")[0].source == "assert (any_int(5, 2, 7)) == (True)"


literals = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
    max_leaves=6,
)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda name: not keyword.iskeyword(name))
examples = st.lists(st.tuples(st.lists(literals, max_size=3), literals), min_size=1, max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.text(), st.none() | names)
def test_parser_never_raises_and_its_tests_compile(text: str, entry_point: str | None) -> None:
    for test in visible_tests(text, entry_point):
        compile(test.source, "<test>", "exec")


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"(>>> |[a-z]+\(|[-=]=?>|➞|\n    |[0-9]|\[|'|\)|should return | )*", fullmatch=True))
def test_parser_never_raises_on_example_like_text(text: str) -> None:
    for test in visible_tests(text):
        compile(test.source, "<test>", "exec")


@settings(max_examples=50, deadline=None)
@given(names, examples, st.sampled_from(["doctest", "==>", "➞", "->", "==", "should return"]))
def test_generated_examples_round_trip(name: str, cases: list, style: str) -> None:
    calls = list(dict.fromkeys((f"{name}({', '.join(map(repr, args))})", repr(expected)) for args, expected in cases))
    if style == "doctest":
        body = "".join(f"    >>> {call}\n    {want}\n" for call, want in calls)
    else:
        body = "".join(f"    {call} {style} {want}\n" for call, want in calls)
    assume('"""' not in body)
    prompt = f'def {name}(*args):\n    """Doc.\n\n{body}    """\n'
    assert [t.label for t in visible_tests(prompt, name)] == [code._label(call, want) for call, want in calls]


def test_parser_skips_unparsable_expected_values() -> None:
    assert visible_tests("f(1) ==> three\nf(2) -> [1, 2\nf(3) should return a list", "f") == []


async def test_parsed_examples_run_against_a_solution(sandbox: Sandbox) -> None:
    # the last two doctests print the value differently from its repr; they pass on equal literals
    prompt = "add(1, 2) ==> 3\nadd('a', 'b') ➞ 'ab'\n>>> add([1], [2])\n[1,2]\n>>> add('x', 'y')\n\"xy\"\n"
    tests = visible_tests(prompt, "add")
    report = await run_tests(sandbox, "def add(a, b):\n    return a + b\n", tests)
    assert (report.passed, report.total) == (4, 4)
    assert (await run_tests(sandbox, "def add(a, b):\n    return b + a\n", tests)).passed == 1


# --- the sandbox itself ---


async def test_statuses_and_stdin(sandbox: Sandbox) -> None:
    assert sandbox.isolation.endswith("rlimits+audit-hook")
    ok = await sandbox.run("print(input()[::-1])", stdin="olleh\n")
    assert (ok.status, ok.returncode, ok.stdout) == ("ok", 0, "hello\n")
    error = await sandbox.run("import sys\nprint('x', file=sys.stderr)\nsys.exit(3)")
    assert (error.status, error.returncode, error.stderr) == ("error", 3, "x\n")


async def test_cpu_limit_kills(any_sandbox: Sandbox, sessions: list[int]) -> None:
    # a generous wall limit: on a loaded machine one CPU second can take several seconds
    result = await Sandbox(LIMITS.model_copy(update={"cpu_s": 1, "wall_s": 20})).run("while True: pass")
    assert (result.status, result.returncode) == ("killed", -24)  # SIGXCPU
    assert_no_leftovers(sessions)


async def test_infinite_loop_times_out_and_its_group_is_killed(any_sandbox: Sandbox, sessions: list[int]) -> None:
    limits = LIMITS.model_copy(update={"wall_s": 1, "cpu_s": 30})
    started = time.monotonic()
    result = await Sandbox(limits).run("import threading\nthreading.Thread(target=lambda: None).start()\nwhile 1: pass")
    assert result.status == "timeout"
    assert time.monotonic() - started < 3
    assert_no_leftovers(sessions)


async def test_fork_bomb_fails(any_sandbox: Sandbox, sessions: list[int]) -> None:
    program = """
import os, subprocess
for spawn in (os.fork, lambda: subprocess.Popen(["sleep", "60"]), lambda: os.posix_spawn("/bin/sleep", ["sleep", "60"], {})):
    try:
        spawn()
        print("spawned")
    except PermissionError:
        print("refused")
while True:
    os.fork()
"""
    result = await any_sandbox.run(program)
    assert result.stdout == "refused\n" * 3
    assert result.status == "error"
    assert_no_leftovers(sessions)


async def test_memory_bomb_is_stopped(any_sandbox: Sandbox, sessions: list[int]) -> None:
    # calloc'ed bytes: address space runs out at once, without zeroing pages on a busy machine
    result = await any_sandbox.run("hoard = [bytes(1 << 26) for _ in range(10**6)]")
    assert result.status in ("error", "killed")
    assert result.status == "killed" or "MemoryError" in result.stderr
    assert psutil.Process().memory_info().rss < 2 << 30
    assert_no_leftovers(sessions)


async def test_writes_outside_the_working_directory_fail(any_sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "owned-by-the-test"
    program = f"""
import os, shutil, pathlib
attempts = [
    lambda: open({str(target)!r}, "w").write("x"),
    lambda: os.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)),
    lambda: os.close(os.open({target.name!r}, os.O_CREAT | os.O_WRONLY, dir_fd=os.open({str(tmp_path)!r}, os.O_RDONLY))),
    lambda: open(os.path.relpath({str(target)!r}), "w").write("x"),
    lambda: pathlib.Path({str(target)!r}).write_text("x"),
    lambda: shutil.copy("/etc/hostname", {str(target)!r}),
    lambda: (os.symlink({str(target)!r}, "link"), open("link", "w").write("x")),
    lambda: (os.chdir({str(tmp_path)!r}), open({target.name!r}, "w").write("x")),
    lambda: os.mknod({str(target)!r}),
]
for attempt in attempts:
    try:
        attempt()
        print("wrote")
    except OSError:
        print("refused")
open("inside.txt", "w").write("fine")
print(open("inside.txt").read())
"""
    result = await any_sandbox.run(program)
    assert result.stdout == "refused\n" * 9 + "fine\n", result.stderr
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


async def test_reads_outside_the_working_directory_and_library_fail(any_sandbox: Sandbox, tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    (tmp_path / "secret.txt").write_text(secret)
    path = str(tmp_path / "secret.txt")
    program = f"""
import os
attempts = [
    lambda: open({path!r}).read(),
    lambda: os.read(os.open({path!r}, os.O_RDONLY), 100),
    lambda: open("/proc/self/root" + {path!r}).read(),
    lambda: open(os.path.relpath({path!r})).read(),
    lambda: open(os.path.join({str(tmp_path)!r}, "x", "..", "secret.txt")).read(),
]
for attempt in attempts:
    try:
        print(attempt())
    except OSError:
        print("refused")
"""
    result = await any_sandbox.run(program)
    assert result.stdout == "refused\n" * 5, result.stderr
    assert secret not in result.stdout + result.stderr


async def test_total_written_is_bounded(any_sandbox: Sandbox) -> None:
    program = """
written = 0
try:
    for i in range(1000):
        with open(f"f{i}", "wb") as f:
            for _ in range(4):
                f.write(b"x" * (1 << 18))
                f.flush()
                written += 1 << 18
except OSError:
    pass
print(written >> 20)
"""
    result = await any_sandbox.run(program)
    assert result.status in ("ok", "killed")  # SIGXFSZ or ENOSPC / refusal, whichever comes first
    assert not result.stdout or int(result.stdout) <= LIMITS.disk_mb


async def test_network_is_refused(any_sandbox: Sandbox) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        program = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    print("connected")
except OSError as e:
    print("refused", type(e).__name__)
"""
        result = await any_sandbox.run(program)
        assert result.stdout.startswith("refused"), result
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_server_environment_stays_secret(any_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("PONDER_TEST_SECRET", secret)
    program = f"""
import os
print(dict(os.environ))
for path in ["/proc/{os.getpid()}/environ", "/proc/self/environ", "/proc/1/environ",
             *("/proc/" + pid + "/environ" for pid in os.listdir("/proc") if pid.isdigit())]:
    try:
        print(path, open(path, "rb").read())
    except OSError as e:
        print(path, "refused", e)
"""
    result = await any_sandbox.run(program)
    assert result.status == "ok", result.stderr
    assert "/proc/self/environ" in result.stdout
    assert secret not in result.stdout + result.stderr


async def test_output_flood_is_bounded(any_sandbox: Sandbox, sessions: list[int]) -> None:
    started = time.monotonic()
    result = await any_sandbox.run("while True:\n    print('x' * 1000)")
    assert result.status == "killed"
    assert len(result.stdout) <= LIMITS.output_kb * 1024
    assert "output limit" in result.stderr
    assert time.monotonic() - started < 3
    assert_no_leftovers(sessions)


async def test_cancelling_a_run_kills_the_program(any_sandbox: Sandbox, sessions: list[int]) -> None:
    task = asyncio.create_task(any_sandbox.run("import time\ntime.sleep(30)"))
    while not sessions:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert in_sessions(sessions)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_no_leftovers(sessions)


async def test_concurrency_is_limited() -> None:
    sandbox = Sandbox(LIMITS)
    program = "import time\nstart = time.time()\ntime.sleep(1)\nprint(start, time.time())"
    results = await asyncio.gather(*(sandbox.run(program) for _ in range(4)))
    spans = [tuple(map(float, result.stdout.split())) for result in results]
    overlapping = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert overlapping == LIMITS.concurrency


@pytest.mark.parametrize("namespaces", [True, False])
async def test_root_server_runs_programs_as_nobody(
    namespaces: bool, monkeypatch: pytest.MonkeyPatch, sessions: list[int]
) -> None:
    """Root is exempt from RLIMIT_NPROC; as nobody (also inside a user namespace) the thread count is capped."""
    interpreter = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    mode = code._Mode(namespaces=namespaces, contain_fs=namespaces, nobody=True)
    monkeypatch.setattr(sys, "executable", interpreter)
    if os.geteuid() != 0 or not os.path.exists(interpreter) or not code._works(mode):
        pytest.skip("needs a root test process and an interpreter that nobody can run")
    monkeypatch.setattr(code, "_detect_mode", lambda: mode)
    program = """
import os, threading, time
started = 0
try:
    for _ in range(64):
        threading.Thread(target=time.sleep, args=(1,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
print(os.getuid(), started)
"""
    result = await Sandbox(LIMITS).run(program)
    uid, started = map(int, result.stdout.split())
    assert uid == (0 if namespaces else 65534)  # root inside the namespace is nobody outside
    assert started < LIMITS.processes
    assert_no_leftovers(sessions)


def test_runs_on_uvloop() -> None:
    """uvicorn runs the service on uvloop where it is installed; its subprocess support is narrower."""
    uvloop = pytest.importorskip("uvloop")

    async def runs() -> tuple[ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(LIMITS.model_copy(update={"wall_s": 1}))
        return await sandbox.run("print(input())", stdin="hi"), await sandbox.run("while True: pass")

    done, looping = uvloop.run(runs())
    assert (done.status, done.stdout, looping.status) == ("ok", "hi\n", "timeout")


def test_audit_hook_looks_up_no_names_a_program_could_rebind(tmp_path: Path) -> None:
    guard = make_guard(str(tmp_path), ("/usr/lib/python3",), 4)
    lookups = {i.opname for i in dis.get_instructions(guard)} & {"LOAD_GLOBAL", "LOAD_NAME"}
    assert not lookups


async def test_a_callers_timeout_replaces_the_wall_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    report = await run_tests(sandbox, "def f():\n    while True: pass", caller_tests(["f()"]), wall_s=1)
    assert report.status == "timeout" and report.passed == 0
    assert time.monotonic() - started < 3

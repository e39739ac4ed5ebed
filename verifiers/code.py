"""Tests for model-written code: where they come from (the API caller, or the examples a prompt shows) and how a
program is scored on them. The running is the sandbox's (`verifiers.sandbox`): the program in one sandbox, the
tests in another, so that a program can fail a test but never fake a pass.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import re
import warnings
from dataclasses import dataclass

from verifiers.sandbox import Sandbox

REPORTED_FAILURES = 5


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
    return [TestCase(item, "check(candidate)" if re.search(r"^def check\s*\(", item, re.MULTILINE) else _shorten(item)) for item in items if item.strip()]


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


async def run_tests(sandbox: Sandbox, program: str, tests: list[TestCase], entry_point: str | None = None, wall_s: float | None = None) -> TestReport:
    """Score the program on each test, in one sandboxed run. A program that fails to load has status "error" and
    fails every test that uses it; tests without a verdict when the run ends (timeout, kill) fail."""
    if not tests:
        return TestReport(passed=0, total=0, status="no_tests", failures=[])
    verdicts = await sandbox.judge(program, [test.source for test in tests], entry_point, wall_s=wall_s)
    passed = verdicts.passed & set(range(len(tests)))
    return TestReport(
        passed=len(passed),
        total=len(tests),
        status=verdicts.status,
        failures=[test.label for index, test in enumerate(tests) if index not in passed][:REPORTED_FAILURES],
    )

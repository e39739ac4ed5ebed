from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifiers import answers
from verifiers.answers import AnswerGrouper, extract_answer, extract_code


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("So the total is $\\boxed{42}$.", "42"),
        ("First \\boxed{3}, but correcting: \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\left\\{1, 2\\right\\}}", "\\left\\{1, 2\\right\\}"),
        ("\\boxed{7} ... then the reply was cut off: \\boxed{8", "7"),
        ("Put your final answer in \\boxed{}. The answer is 9", "9"),
        ("\\fbox{ 8 }", "8"),
        ("\\boxed {x^{2}}", "x^{2}"),
        ("The answer is \\boxed{5}. Answer: 6", "5"),
        ("The answer is 42.", "42"),
        ("Thus, the final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("The answer is **-2**.", "-2"),
        ("the answer is: (B)", "(B)"),
        ("The answer is 3.5 metres. Next question.", "3.5 metres"),
        ("The answer is $x = 3$, since 2x = 6.", "x = 3"),
        ("I think the answer is 4.\nActually the final answer is 5", "5"),
        ("**Answer:** 7", "7"),
        ("**Final Answer**: $12$", "12"),
        ("Answer:\n\n$$1024$$\n", "1024"),
        ("answer: \\(\\pi\\)", "\\pi"),
        ("There are 3 cats and 4 dogs, so 7 animals", "7"),
        ("The change is -5 degrees", "-5"),
        ("x = -2.75.", "-2.75"),
        ("About 1,234,567 people", "1234567"),
        ("The ratio is 3/4", "3/4"),
        ("Step 1: 10 - 3 = 7", "7"),
        ("Version 2.0 of x2", "2.0"),
        ("No idea.", None),
        ("", None),
        ("\\boxed{}", None),
    ],
)
def test_extract_answer(reply: str, expected: str | None) -> None:
    assert extract_answer(reply) == expected


ADVERSARIAL = [
    "\\boxed{" * 40_000,
    "{" * 300_000 + "}" * 10,
    "the answer is " * 30_000,
    "the" + " " * 300_000 + "answer",
    "answer" + " " * 300_000 + "x",
    "Answer: " + "**" * 100_000,
    "The answer is " + "$" * 300_000,
    "The answer is " + "a. " * 100_000,
    "1," * 150_000,
    "1,000" * 60_000 + "1",
    "-" * 300_000 + "1",
    "9" * 300_000,
    "1/" * 150_000,
    "\\boxed" + " " * 300_000,
    "." * 300_000,
    "```python\n" * 30_000,
    "```" * 100_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_extraction_is_linear_on_adversarial_input(text: str) -> None:
    started = time.perf_counter()
    extract_answer(text)
    extract_code(text)
    assert time.perf_counter() - started < 1.5


STRUCTURE = st.sampled_from([*"\\{}$*_:.,-/0123456789 \n`", "boxed", "fbox", "the answer is ", "Answer:", "```", "python"])
HOSTILE = st.one_of(st.text(max_size=500), st.lists(STRUCTURE, max_size=300).map("".join))


@settings(max_examples=300, deadline=500)
@given(HOSTILE)
def test_extraction_never_raises(text: str) -> None:
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, str) and answer)
    code = extract_code(text)
    assert code is None or isinstance(code, str)


PLAIN = st.text(st.characters(blacklist_characters="{}\\", blacklist_categories=("Cs",)), max_size=60)
FORMULA = st.one_of(PLAIN, st.builds(lambda a, b: f"\\frac{{{a}}}{{{b}}}", PLAIN, PLAIN)).filter(lambda a: a.strip())


@settings(deadline=500)
@given(PLAIN, FORMULA, PLAIN)
def test_boxed_answer_is_recovered_from_any_surrounding_text(before: str, answer: str, after: str) -> None:
    assert extract_answer(f"{before}\\boxed{{{answer}}}{after}") == answer.strip()


NO_BACKTICKS = st.text(st.characters(blacklist_characters="`", blacklist_categories=("Cs",)), max_size=200)


@settings(deadline=500)
@given(NO_BACKTICKS, NO_BACKTICKS.filter(lambda c: c.strip()), NO_BACKTICKS)
def test_fenced_code_is_recovered_from_any_surrounding_text(before: str, code: str, after: str) -> None:
    assert extract_code(f"{before}```python\n{code}\n```{after}") == code.strip("\n")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
        ("```Python3\nprint(2)\n```", "print(2)"),
        ("```py\nx = 1\n```", "x = 1"),
        ("```\nprint(3)\n```", "print(3)"),
        ("```python\nfirst()\n```\nthen\n```python\nsecond()\n```", "second()"),
        ("```python\nsolve()\n```\nOutput:\n```\n42\n```", "solve()"),
        ("```python\nsolve()\n```\n```python\n\n```", "solve()"),
        ("```bash\npip install x\n```\n```\nrun()\n```", "run()"),
        ("```python\ndef g():\n    return", "def g():\n    return"),
        ("```cpp\nint main() {}\n```", "int main() {}"),
        ("Use ```print(4)``` inline", "print(4)"),
        ("No code here.", None),
    ],
)
def test_extract_code(reply: str, expected: str | None) -> None:
    assert extract_code(reply) == expected


async def test_equivalent_forms_share_a_group(answers: AnswerGrouper) -> None:
    forms = ["1/2", "0.5", "\\frac{1}{2}", "\\dfrac12", "42", " 42 ", "42.0", "\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"]
    ids = await answers.group(forms)
    assert ids == [0, 0, 0, 0, 1, 1, 1, 2, 2]


async def test_different_answers_get_different_groups(answers: AnswerGrouper) -> None:
    assert await answers.group(["1/3", "0.5", "42", "43", "-42", "x + 1"]) == [0, 1, 2, 3, 4, 5]


async def test_ids_follow_first_appearance_and_none_stays_none(answers: AnswerGrouper) -> None:
    assert await answers.group([None, "7", "3", None, "7.0", "3/1", "9"]) == [None, 0, 1, None, 0, 1, 2]
    assert await answers.group([None, None]) == [None, None]
    assert await answers.group([]) == []


async def test_concurrent_calls_are_all_answered_by_math_verify(answers: AnswerGrouper) -> None:
    calls = [answers.group([f"{i}/2", f"{i / 2}", "1"]) for i in range(3, 9)]
    assert await asyncio.gather(*calls) == [[0, 0, 1]] * 6


async def test_identical_answers_need_no_worker() -> None:
    g = AnswerGrouper()
    assert await g.group(["5", " 5 ", None, "5\n"]) == [0, 0, None, 0]
    assert g._pool is None


async def test_equivalent_grades_against_a_reference(answers: AnswerGrouper) -> None:
    assert await answers.equivalent("\\frac{1}{2}", "0.5")
    assert await answers.equivalent("\\dfrac{3}{4}", "0.75")
    assert await answers.equivalent("10", "10.0")
    assert not await answers.equivalent("42", "41")
    assert not await answers.equivalent("3", None)


def _stuck_in_worker(answers: list[str], budget_s: float) -> list[int]:
    """Stands in for math-verify stuck where no signal reaches it; found by the worker through this module."""
    time.sleep(60)
    return list(range(len(answers)))


async def _dies(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_backstop_kills_a_stuck_worker_and_falls_back_to_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    g = AnswerGrouper(timeout_s=1.0)
    try:
        assert await g.group(["1/2", "0.5"]) == [0, 0]  # the worker is up; its start-up is not on the clock
        stuck = list(g._pool._processes)
        monkeypatch.setattr(answers, "_group_in_worker", _stuck_in_worker)
        started = time.monotonic()
        assert await g.group(["1/2", "0.5", "1/2"]) == [0, 1, 0]
        assert time.monotonic() - started < 2.5
        for pid in stuck:
            assert await _dies(pid)
        monkeypatch.undo()
        assert await g.group(["1/2", "0.5", "1/2"]) == [0, 0, 0]  # a fresh worker
    finally:
        await g.aclose()

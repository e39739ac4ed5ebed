"""Final answers of model replies, and which of them mean the same thing.

Extraction is plain string work on hostile input: every scan is linear (str.find, a brace stack, regexes without
nested quantifiers), so a megabyte of adversarial text costs milliseconds, never a catastrophic backtrack.

Equivalence is math-verify's, and math-verify is the dangerous part: parsing and sympy simplification of model
output can take arbitrarily long, and its own timeouts use SIGALRM, which only works on a process's main thread.
So it runs in a worker process (spawned, never forked: the gateway holds Ray and threads) whose main thread runs
it with its own timeouts, inside a per-call budget; the caller keeps an `asyncio.wait_for` backstop for what a
signal cannot interrupt (a long big-integer operation in C), kills the worker when it fires and answers that call
by string equality.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)
# "Answer: 7", "**Answer:** 7", "**Final Answer**: 7".
_ANSWER_MARKER = re.compile(r"\banswer(?:\*\*|__)?\s*:(?:\*\*|__)?", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?")
_SPACE = re.compile(r"\s*")
_SENTENCE_END = re.compile(r"\.\s")
# Wrappers a model puts around an answer after "the answer is" / "Answer:", outermost first.
_WRAPPERS = (("**", "**"), ("__", "__"), ("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_PYTHON_TAGS = frozenset({"python", "py", "python3", "py3"})


def extract_answer(text: str) -> str | None:
    """The final answer of a reply: the last non-empty \\boxed{} (or \\fbox{}), else what follows the last
    "the (final) answer is", else what follows the last "Answer:", else the last number (thousands separators
    dropped, so "1,234" comes back as "1234"). None when the reply has none of these."""
    return _last_boxed(text) or _after_last(_ANSWER_IS, text) or _after_last(_ANSWER_MARKER, text) or _last_number(text)


def _last_boxed(text: str) -> str | None:
    starts = [m.end() - 1 for m in _BOXED.finditer(text)]
    if not starts:
        return None
    closing = _matching_braces(text, starts[0])
    for open_at in reversed(starts):
        close_at = closing.get(open_at)
        # A truncated reply leaves its last \boxed{ unclosed; an instruction echo leaves an empty \boxed{}.
        if close_at is not None and (content := text[open_at + 1 : close_at].strip()):
            return content
    return None


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """One pass with a stack, so that many unclosed \\boxed{ cost linear time, not one scan to the end each."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for m in re.finditer(r"[{}]", text[start:]):
        if m.group() == "{":
            stack.append(start + m.start())
        elif stack:
            closing[stack.pop()] = start + m.start()
    return closing


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    tail = deque(pattern.finditer(text), maxlen=1)
    return tail[0] if tail else None


def _after_last(marker: re.Pattern[str], text: str) -> str | None:
    if (last := _last_match(marker, text)) is None:
        return None
    # The answer may sit on the next line ("Answer:\n\n$$42$$"): skip blank space, then take one line.
    space = _SPACE.match(text, last.end())  # `\s*` always matches
    start = space.end() if space else last.end()
    end = text.find("\n", start)
    line = text[start:] if end == -1 else text[start:end]
    return _clean(line)


def _clean(span: str) -> str | None:
    span = span.strip().lstrip(":").strip()
    for _ in range(len(_WRAPPERS)):
        before = span
        for opener, closer in _WRAPPERS:
            if span.startswith(opener) and (close_at := span.find(closer, len(opener))) != -1:
                span = span[len(opener) : close_at].strip()
                break
        else:
            # Not wrapped: the answer ends with its sentence ("42. So we are done."), not at a decimal point.
            if sentence_end := _SENTENCE_END.search(span):
                span = span[: sentence_end.start()]
        span = span.rstrip().rstrip(".").rstrip()
        if span == before:
            break
    return span or None


def _last_number(text: str) -> str | None:
    last = _last_match(_NUMBER, text)
    return None if last is None else last.group().replace(",", "")


def extract_code(text: str) -> str | None:
    """The code of a reply: the last non-empty python-tagged fenced block, else the last non-empty untagged one,
    else the last block of any kind. A reply cut off by the token limit leaves its last fence open; that block
    runs to the end of the text. None when there is no fence at all."""
    blocks: list[tuple[str, str]] = []
    pos = 0
    while (fence := text.find("```", pos)) != -1:
        info_end = text.find("\n", fence + 3)
        close = text.find("```", fence + 3)
        if close != -1 and (info_end == -1 or close < info_end):  # ```inline```: no language tag
            blocks.append(("", text[fence + 3 : close]))
            pos = close + 3
            continue
        info_end = len(text) if info_end == -1 else info_end
        words = text[fence + 3 : info_end].strip().lstrip("`").split()
        body = text[info_end + 1 :] if close == -1 else text[info_end + 1 : close]
        blocks.append((words[0].lower() if words else "", body))
        if close == -1:
            break
        pos = close + 3
    if not blocks:
        return None
    codes = [(tag, body.strip("\n")) for tag, body in blocks]
    for wanted in (lambda tag: tag in _PYTHON_TAGS, lambda tag: tag == ""):
        chosen = [code for tag, code in codes if wanted(tag) and code.strip()]
        if chosen:
            return chosen[-1]
    return codes[-1][1]


def _normalise(answer: str) -> str:
    return " ".join(answer.split())


def _assign_groups(answers: Sequence[str], same: Callable[[str, str], bool]) -> list[int]:
    """Group ids in order of first appearance; a new answer joins the first group whose representative (first
    member) it is `same` as. Identical strings share a group without asking `same`."""
    representatives: list[str] = []
    known: dict[str, int] = {}
    ids = []
    for answer in answers:
        group = known.get(answer)
        if group is None:
            group = next((g for g, rep in enumerate(representatives) if same(rep, answer)), len(representatives))
            if group == len(representatives):
                representatives.append(answer)
            known[answer] = group
        ids.append(group)
    return ids


def _string_groups(answers: Sequence[str]) -> list[int]:
    return _assign_groups(answers, lambda _rep, _answer: False)


# Worker side: these run in the worker process's main thread, the one place math-verify's SIGALRM timeouts work.


def _math_verify_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _warm_up() -> None:
    """Imports sympy, math-verify and latex2sympy's parser once, so that no call's budget pays for it."""
    from math_verify import parse, verify

    config = _math_verify_config()
    verify(parse("\\boxed{\\frac{1}{2}}", config), parse("\\boxed{0.5}", config))


def _group_in_worker(answers: list[str], budget_s: float) -> list[int]:
    """Each answer is parsed as the content of a \\boxed{} (LaTeX first, then a plain expression), the form most
    answers were extracted from: "1/2", "0.5" and "\\frac{1}{2}" all parse to 1/2, " 42 " and "42.0" to 42, and
    "x = 5" to an equation math-verify matches against 5. A group's representative is passed as math-verify's
    gold, the newcomer as its prediction (verify is not symmetric). Every parse and comparison gets math-verify's
    own timeout, cut to what is left of the budget; once the budget is spent, only identical strings group."""
    from math_verify import parse, verify

    config = _math_verify_config()
    deadline = time.monotonic() + budget_s
    parsed: dict[str, list[Any]] = {}

    def seconds_left() -> int | None:
        left = deadline - time.monotonic()
        return max(1, int(left)) if left > 0 else None  # SIGALRM counts whole seconds

    def same(rep: str, answer: str) -> bool:
        for text in (rep, answer):
            if text not in parsed:
                if (timeout_s := seconds_left()) is None:
                    return False
                parsed[text] = parse("\\boxed{" + text + "}", config, parsing_timeout=timeout_s)
        if (timeout_s := seconds_left()) is None:
            return False
        return bool(verify(parsed[rep], parsed[answer], timeout_seconds=timeout_s))

    return _assign_groups(answers, same)


# Caller side.

_START_TIMEOUT_S = 60.0
"""Spawning the worker imports the parent's main module, sympy and math-verify: seconds on a busy CPU."""
_IPC_MARGIN_S = 0.2
"""Of a call's budget, kept back for pickling and the pipe so that the worker answers before the backstop fires."""


class AnswerGrouper:
    """Groups answers by mathematical equivalence with math-verify, off the event loop and bounded in time.

    One worker process serves one call at a time. A call's `timeout_s` runs from when it starts waiting for the
    worker (so a queue of slow calls cannot make it wait longer), but not over the worker's one-off start-up,
    which has its own bound. Whatever goes wrong, the call answers by whitespace-normalised string equality and
    never raises."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._start_lock = asyncio.Lock()
        self._work_lock = asyncio.Lock()

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """One group id per answer (None for a None answer), numbered 0, 1, 2… in order of first appearance."""
        texts = [None if a is None else _normalise(a) for a in answers]
        present = [t for t in texts if t is not None]
        ids = iter(await self._group(present) if len(set(present)) > 1 else _string_groups(present))
        return [None if t is None else next(ids) for t in texts]

    async def equivalent(self, gold: str, answer: str | None) -> bool:
        """Grading: whether `answer` is math-verify-equivalent to the reference `gold` (gold is math-verify's gold)."""
        if answer is None:
            return False
        first, second = await self.group([gold, answer])
        return first == second

    async def aclose(self) -> None:
        """The worker holds nothing worth finishing, so it is killed rather than waited for."""
        pool, self._pool = self._pool, None
        if pool is not None:
            _kill(pool)

    async def _group(self, answers: list[str]) -> list[int]:
        pool = await self._started_pool()
        if pool is None:
            return _string_groups(answers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            await asyncio.wait_for(self._work_lock.acquire(), self._timeout_s)
        except TimeoutError:
            log.warning("answer grouping: worker busy past %.1f s; %d answers grouped by string", self._timeout_s, len(answers))
            return _string_groups(answers)
        try:
            left = deadline - loop.time()
            work = loop.run_in_executor(pool, _group_in_worker, answers, max(left - _IPC_MARGIN_S, 0.0))
            return await asyncio.wait_for(work, max(left, 0.0))
        except Exception as e:  # TimeoutError from the backstop, BrokenProcessPool, a shut-down pool
            log.warning("answer grouping failed (%r); worker replaced, %d answers grouped by string", e, len(answers))
            self._discard(pool)
            return _string_groups(answers)
        finally:
            self._work_lock.release()

    async def _started_pool(self) -> ProcessPoolExecutor | None:
        async with self._start_lock:
            if self._pool is None:
                # Held from the start, so that a caller cancelled mid-start leaves the worker to aclose, not orphaned.
                self._pool = pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
                try:
                    await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, _warm_up), _START_TIMEOUT_S)
                except Exception as e:
                    log.warning("answer grouping: math-verify worker did not start (%r); grouping by string", e)
                    self._discard(pool)
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        _kill(pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Python 3.11's executor cannot kill a worker stuck in a task (3.14 adds kill_workers), so its processes are
    killed directly; the executor's management thread then sees them die and reaps them."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()

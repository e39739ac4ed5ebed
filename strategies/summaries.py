"""Rollout summaries (Kim et al. 2026): each rollout compressed by the same model into what the paper says a summary
keeps — the hypotheses tried, the progress made, the failure modes hit, the final state — so that judges and later
rollouts compare and reuse attempts, not raw traces.

The paper's prompt and schema are in an appendix we could not read. Ours: the model writes six headed sections
(`SECTIONS`), parsed leniently (a missing section is empty); `final_answer` is not the model's word but extracted
from the rollout (the boxed/stated answer, or its last code block), so a judge always sees what the attempt
actually ended with. Summaries are cached under the model, `PROMPT_VERSION`, the rollout's text and the sampling
parameters: the same rollout is summarized once, whichever request or gateway meets it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from strategies.base import Context
from strategies.rollouts import Trajectory
from verifiers.answers import extract_answer, extract_code

PROMPT_VERSION = "summary-v1"
SECTIONS = ("hypotheses", "key_decisions", "progress", "final_state", "failure_modes", "open_issues")
HEADINGS = {s: s.replace("_", " ").capitalize() for s in SECTIONS}
MAX_FINAL_CHARS = 1200

PROMPT = """Below is a problem and one attempt at solving it. Summarize the attempt for someone who must choose between several attempts. Write one or two short lines under each of these headings, in this order:
{headings}

Problem:
{problem}

Attempt:
{attempt}"""

_HEADING = re.compile(r"^\W*(" + "|".join(re.escape(h) for h in HEADINGS.values()) + r")\W*:?\s*(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Summary:
    index: int
    sections: dict[str, str]
    final_answer: str | None
    tokens: int
    cached: bool

    def render(self) -> str:
        lines = [f"{HEADINGS[s]}: {self.sections[s]}" for s in SECTIONS if self.sections.get(s)]
        lines.append(f"Final answer: {self.final_answer if self.final_answer is not None else '(none)'}")
        return "\n".join(lines)

    def report(self) -> dict[str, Any]:
        return {"index": self.index, **self.sections, "final_answer": self.final_answer, "tokens": self.tokens, "cached": self.cached}


def final_answer(text: str) -> str | None:
    code = extract_code(text) if "```" in text or "def " in text else None
    answer = code if code is not None else extract_answer(text)
    return answer[:MAX_FINAL_CHARS] if answer is not None else None


def parse_sections(text: str) -> dict[str, str]:
    """Each heading's text up to the next heading; headings the model skipped stay empty."""
    by_title = {h.lower(): s for s, h in HEADINGS.items()}
    sections = dict.fromkeys(SECTIONS, "")
    marks = list(_HEADING.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)] if marks else []
    for mark, end in zip(marks, ends, strict=True):
        body = text[mark.start(2) : end]
        sections[by_title[mark.group(1).lower()]] = " ".join(body.split())[:400]
    return sections


async def summarize(ctx: Context, trajectory: Trajectory, *, temperature: float, max_tokens: int) -> Summary:
    attempt, final = trajectory.transcript(), final_answer(trajectory.final.text)
    key = {"model": ctx.model, "version": PROMPT_VERSION, "problem": ctx.task.text, "attempt": attempt, "temperature": temperature, "max_tokens": max_tokens}
    cached = await ctx.shared.cache.get("summary", key)
    if cached is not None:
        return Summary(trajectory.index, cached["sections"], final, 0, cached=True)
    prompt = PROMPT.format(headings="\n".join(f"{h}:" for h in HEADINGS.values()), problem=ctx.task.text, attempt=attempt)
    rollouts = await ctx.generate(1, temperature=temperature, max_tokens=max_tokens, stage="summary", messages=[{"role": "user", "content": prompt}])
    if not rollouts:  # the budget ran out before the summary could be written
        return Summary(trajectory.index, dict.fromkeys(SECTIONS, ""), final, 0, cached=False)
    written = rollouts[0]
    sections = parse_sections(written.text)
    spent = written.prompt_tokens + len(written.token_ids)
    if not written.cut_short:
        await ctx.shared.cache.put("summary", key, {"sections": sections}, spent)
    return Summary(trajectory.index, sections, final, spent, cached=False)

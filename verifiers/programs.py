"""Turning a model's reply into a program to test. A chat reply usually restates the whole function in a fenced
block; a completion continues the prompt's stub. Either way the stub's imports are kept, because models drop
`from typing import List` and the like, which would fail a correct body for the wrong reason."""

from __future__ import annotations

import re

from verifiers.answers import extract_code

_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_IMPORT = re.compile(r"^(?:import|from)\s+\S.*$", re.MULTILINE)


def stub_of(task_text: str) -> str:
    """The code a task shows: its fenced block, else the whole text (a completion prompt is the code itself)."""
    return extract_code(task_text) or task_text


def entry_point_of(code: str) -> str | None:
    """The function a stub asks for: its last top-level `def` (helpers come first in HumanEval-style stubs)."""
    names = _DEF.findall(code)
    return names[-1] if names else None


def candidate_program(reply: str, stub: str, entry_point: str | None) -> str:
    code = extract_code(reply) or reply
    if entry_point and not re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        code = stub + code
    imports = "\n".join(_IMPORT.findall(stub))
    return f"{imports}\n{code}" if imports else code

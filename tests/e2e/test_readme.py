"""The README's quick start, run as written against the real server: a new user's first request must answer, not
run to the deadline. Only the address changes."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.slow

QUICK_START = re.compile(r"## Quick start\n(.*?)\n## ", re.DOTALL)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def quick_start_python(readme: Path) -> str:
    section = QUICK_START.search(readme.read_text())
    assert section, "README.md has no Quick start section"
    blocks = PYTHON_BLOCK.findall(section.group(1))
    assert blocks, "the Quick start has no Python example"
    return "\n".join(blocks)


def test_the_quick_start_runs_as_written(server: Server) -> None:
    code = quick_start_python(ROOT / "README.md")
    assert 'base_url="http://127.0.0.1:8000/v1"' in code
    # the example's own client, pointed at the test's server, and bounded so that a hang fails instead of waiting
    code = code.replace('base_url="http://127.0.0.1:8000/v1"', f'base_url="{server.api}", timeout=120, max_retries=0')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102  (running it is the point)
    shown = printed.getvalue()
    assert shown.count("CompletionUsage(") == 1  # the plain call's usage, printed as the example says
    assert "'method': 'majority'" in shown  # the vote's report

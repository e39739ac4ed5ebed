"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from verifiers.answers import AnswerGrouper


@pytest.fixture(scope="module")
async def answers() -> AsyncIterator[AnswerGrouper]:
    """The real math-verify grouping (its worker process pool), one per test module."""
    grouper = AnswerGrouper(timeout_s=30)
    yield grouper
    await grouper.aclose()

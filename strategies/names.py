"""The names a request's `strategy` may take. Kept apart from the registry, so that what only needs the names
(formatting an error, resolving `<model>@<strategy>`) does not load every strategy and its dependencies."""

from __future__ import annotations

STRATEGY_NAMES = ("none", "majority", "best_of_n", "rtv", "pdr", "atts", "kinetics", "auto", "ahead_by_k", "program")


def split_model_name(model: str) -> tuple[str, str | None]:
    """`<model>@<strategy>` lets clients that can only set a model name pick a strategy with its defaults."""
    base, sep, strategy = model.partition("@")
    return base, (strategy if sep else None)

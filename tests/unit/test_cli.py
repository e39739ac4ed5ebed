"""`ponder serve --model DIR`: the command line becomes the one served model's spec, and a wrong use is refused
before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from service.cli.main import main, served_model


def args(**given: object) -> argparse.Namespace:
    defaults = {"model": None, "served_model_name": None, "tool_parser": None, "reasoning_parser": None, "chat_template": None}
    return argparse.Namespace(**{**defaults, **given})


def test_a_directory_is_served_under_its_name_or_the_one_given(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    spec = served_model(args(model=model))
    assert (spec.name, spec.source, spec.tool_parser) == ("my-model", str(model.resolve()), None)
    named = served_model(args(model=model, served_model_name="tiny", tool_parser="hermes", reasoning_parser="qwen3", chat_template=tmp_path / "t.jinja"))
    assert (named.name, named.tool_parser, named.reasoning_parser, named.chat_template) == ("tiny", "hermes", "qwen3", tmp_path / "t.jinja")


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--served-model-name", "x"],
        ["serve", "--tool-parser", "hermes"],
        ["serve", "--reasoning-parser", "qwen3"],
        ["serve", "--model", "/nonexistent/dir"],
    ],
)
def test_wrong_use_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "--model" in capsys.readouterr().err

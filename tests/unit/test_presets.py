"""Presets files: loaded and validated like request fields at start-up; a bad file names the entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api.presets import PresetError, load_presets


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    return path


def test_presets_are_validated_strategies_with_budgets(tmp_path: Path) -> None:
    presets = load_presets(
        write(
            tmp_path,
            """
careful-math:
  description: majority of 16
  strategy: {name: majority, n: 16, temperature: 0.6}
  budget: {max_total_tokens: 4096}
fast-atts:
  strategy: {name: atts, samples: 4, turns: 3, alpha: 0.3}
""",
        )
    )
    assert list(presets) == ["careful-math", "fast-atts"]
    careful = presets["careful-math"].listing()
    assert careful["strategy"]["n"] == 16 and careful["budget"] == {"max_total_tokens": 4096, "deadline_s": None}
    assert presets["fast-atts"].strategy.name == "atts" and presets["fast-atts"].budget is None
    assert load_presets(None) == {}
    assert load_presets(write(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bad:\n  strategy: {name: majority, n: 0}\n", "n"),
        ("bad:\n  strategy: {name: nonsense}\n", "nonsense"),
        ("bad:\n  strategy: {name: majority}\n  colour: blue\n", "colour"),
        ("majority:\n  strategy: {name: majority}\n", "may not be strategy names"),
        ("- just\n- a list\n", "must map"),
        ("bad: [unclosed\n", "cannot read"),
        ("'bad name!':\n  strategy: {name: majority}\n", "name"),
    ],
)
def test_a_bad_presets_file_stops_the_gateway_with_the_reason(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PresetError, match=needle):
        load_presets(write(tmp_path, text))


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="cannot read"):
        load_presets(tmp_path / "missing.yaml")

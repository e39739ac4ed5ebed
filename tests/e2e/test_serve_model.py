"""`ponder serve --model DIR --served-model-name NAME`, as `vllm serve` takes a model: a Hugging Face directory
served alone under a name of its own, with its own generation config's defaults and a tool parser given on the
command line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.conftest import Server, running_server, state_dir

pytestmark = pytest.mark.slow

TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def tiny(redis_url: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The packaged model's prepared directory (the session server made it), served as a plain directory."""
    directory = state_dir() / "models" / "smollm2-135m"
    log = tmp_path_factory.mktemp("serve-model") / "ponder.log"
    args = ("--model", str(directory), "--served-model-name", "tiny", "--tool-parser", "hermes")
    with running_server(redis_url, server.ray_address, log, args=args, PONDER_RAY_NAMESPACE="ponder-serve-model") as gateway:
        yield gateway


def test_the_directory_is_served_under_its_name(tiny: Server, client: OpenAI) -> None:
    """Its own template (the model's, without tools) renders the same prompt as the packaged model's."""
    own = OpenAI(base_url=tiny.api, api_key="none", max_retries=0, timeout=120)
    assert [m.id for m in own.models.list().data] == ["tiny"]
    question = [{"role": "user", "content": "2+2?"}]
    response = own.chat.completions.create(model="tiny", messages=question)
    assert response.model == "tiny" and response.choices[0].finish_reason == "stop"
    packaged = client.chat.completions.create(model="smollm2-135m", messages=question, max_tokens=1)
    assert response.usage.prompt_tokens == packaged.usage.prompt_tokens


def test_a_tool_parser_given_on_the_command_line_serves_auto(tiny: Server) -> None:
    """A plain directory's own template renders no tools; `auto` is served (the parser reads whatever comes) rather
    than refused as it is for a model without a parser."""
    client = OpenAI(base_url=tiny.api, api_key="none", max_retries=0, timeout=120)
    response = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What time is it in Rome?"}], tools=[TOOL], tool_choice="auto", max_tokens=32, temperature=0
    )
    assert response.choices[0].message.content or response.choices[0].message.tool_calls

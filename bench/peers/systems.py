"""The peers' servers and the rows each system is asked for: optillm and its_hub's IaaS server in front of vLLM's own
OpenAI server (bench.overhead's, on Ponder's engine arguments and environment), Ponder on an engine of its own.

Every row sends the same chat messages with the same N, temperature and token cap, each in the field its system
reads. Where a peer does not honour one of them, the row's note says so (from the peer's own code), and the table
shows what the peer did with it rather than what was asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers.envs import ITS_HUB, OPTILLM
from bench.server import ROOT, Side

ITS_HUB_IAAS = ROOT / "bench" / "peers" / "its_hub_iaas.py"


@dataclass(frozen=True)
class Sampling:
    """What every row of a suite is asked for."""

    n: int
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Row:
    label: str
    server: str
    """Which server it is sent to: "vllm", "optillm", "its_hub", "its_hub_bon" or "ponder"."""
    engine: str
    """Whose engine counters see it, and so whose plain call its latency is divided by: "vllm" or "ponder"."""
    model: str
    extra_body: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def optillm_server(cache: Path, vllm_url: str, port: int, sampling: Sampling) -> Side:
    """optillm as its README runs it in front of a local OpenAI-compatible server: OPENAI_API_KEY set (any value)
    and --base-url. Its `bon` approach takes N only from --best-of-n at start-up, never from the request."""
    command = [OPTILLM.bin(cache, "optillm"), "--base-url", f"{vllm_url}/v1", "--port", str(port), "--best-of-n", str(sampling.n)]
    return Side("optillm", command, port, start_timeout_s=300, stop_grace_s=15, engine_args={}, engine_env={}, env_set={"OPENAI_API_KEY": "none"})


def its_hub_server(cache: Path, vllm_url: str, model: str, port: int, sampling: Sampling, best_of_n: bool) -> Side:
    """IaaS with its LM client's sampling set (its_hub_iaas.py says why); it has no /health."""
    command = [
        ITS_HUB.bin(cache, "python"),
        str(ITS_HUB_IAAS),
        "--port",
        str(port),
        "--endpoint",
        f"{vllm_url}/v1",
        "--model",
        model,
        "--temperature",
        str(sampling.temperature),
        "--max-tokens",
        str(sampling.max_tokens),
        *(["--best-of-n"] if best_of_n else []),
    ]
    name = "its_hub_bon" if best_of_n else "its_hub"
    return Side(name, command, port, start_timeout_s=120, stop_grace_s=15, engine_args={}, engine_env={}, health_path="/v1/models")


def its_hub_configuration(vllm_url: str, model: str, suite: str, sampling: Sampling) -> dict[str, Any]:
    """Self-consistency in IaaS votes on what `regex_patterns` capture (required): the last number of the reply for
    arithmetic (as Ponder's extractor falls back to), the first code block for HumanEval (identical programs agree)."""
    pattern = r"(-?\d+)(?!.*\d)" if suite == "arithmetic" else r"```(?:python)?\s*\n(.*?)```"
    return {"endpoint": f"{vllm_url}/v1", "api_key": "none", "model": model, "alg": "self-consistency", "regex_patterns": [pattern], "budget": sampling.n}


def peer_rows(model: str, suite: str, s: Sampling) -> list[Row]:
    """Through vLLM's server: the plain call and the peers' two approaches each."""
    capped = f"T={s.temperature}, {s.max_tokens} tokens"
    return [
        Row("vLLM direct (plain)", "vllm", "vllm", model, note=f"one sample, {capped}"),
        Row(
            "optillm majority_voting",
            "optillm",
            "vllm",
            f"majority_voting-{model}",
            {"k": s.n},
            note="k samples in one n=k request; votes on the normalized reply (or its 'answer:' line); like every non-`none` "
            "approach it resends the chat as an empty system message and 'User: <text>'",
        ),
        Row(
            "optillm bon",
            "optillm",
            "vllm",
            f"bon-{model}",
            note="samples at temperature 1 whatever is asked (hard-coded), same rewritten chat; the model rates each reply 0-10, one call each",
        ),
        Row(
            "its_hub self-consistency",
            "its_hub",
            "vllm",
            model,
            {"budget": s.n},
            note="N requests of n=1; votes on a regex capture; T and the cap set on its LM client (IaaS drops the request's)",
        ),
        Row(
            "its_hub best-of-N (LLM judge)",
            "its_hub_bon",
            "vllm",
            model,
            {"budget": s.n},
            note="library BestOfN + LLMJudge (the model scores each reply 0-10 as JSON) behind IaaS, which serves only self-consistency",
        ),
    ]


def ponder_rows(model: str, suite: str, s: Sampling) -> list[Row]:
    code = suite == "humaneval"
    best_of_n = {
        "name": "best_of_n",
        "n": s.n,
        "temperature": s.temperature,
        "select": "code_tests" if code else "logprob",
        "score": "self_certainty" if code else "logprob",
    }
    rtv = {"name": "rtv", "n": s.n, "temperature": s.temperature, "group_size": 2, "votes": 3, "keep": 1}
    return [
        Row("Ponder plain", "ponder", "ponder", model, {"strategy": {"name": "none"}}, note="one sample"),
        Row(
            "Ponder majority",
            "ponder",
            "ponder",
            model,
            {"strategy": {"name": "majority", "n": s.n, "temperature": s.temperature}},
            note="n=N in one engine request; votes on extracted answers grouped by math-verify",
        ),
        Row(
            "Ponder best_of_n",
            "ponder",
            "ponder",
            model,
            {"strategy": best_of_n},
            note="picks by the prompt's visible examples run in the sandbox (self-certainty where it has none)"
            if code
            else "picks by mean token log-probability",
        ),
        Row("Ponder rtv", "ponder", "ponder", model, {"strategy": rtv}, note="N rollouts summarized, pairs judged 3 times each, until one remains"),
    ]

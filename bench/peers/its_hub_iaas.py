"""its_hub's IaaS server as the table runs it: inside its_hub's own environment (it imports nothing of Ponder).

Two things IaaS 1.2.0 does not expose, set here through the library it is built on, the rest of IaaS left as it is
(its request handling, `budget` field and usage accounting are what the table measures):
- the sampling: IaaS accepts `temperature` and `max_tokens` in a request but drops both (its gateway builds its LM
  client from endpoint, key and model alone, and caches it), so every sample would run at the engine's temperature
  1.0 until the context is full. The client it would build is put in its cache beforehand, built with the
  library's own `temperature` and `max_completion_tokens` options.
- best-of-N (`--best-of-n`): /configure accepts only self-consistency (`SUPPORTED_ALGORITHMS`), while the library
  ships `BestOfN` and `LLMJudge`, an outcome reward model that has the served model itself score each reply 0-10
  through the same endpoint, so it needs no reward model of its own (its PRMs want a local vLLM serving a PRM's
  weights, which this host cannot have). The judge's client gets the same options.

    .bench-peers/its_hub/bin/python bench/peers/its_hub_iaas.py --port 8110 --endpoint http://127.0.0.1:8000/v1 \
        --model M --temperature 0.7 --max-tokens 64 [--best-of-n]
"""

from __future__ import annotations

import argparse

import uvicorn
from its_hub import BestOfN, LLMJudge, OpenAICompatibleLanguageModel
from its_hub.core.gateway import ITSGateway
from its_hub.integration.iaas import app as iaas

API_KEY = "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoint", required=True, help="the OpenAI-compatible base URL (ending in /v1)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--best-of-n", action="store_true", help="BestOfN with LLMJudge instead of self-consistency")
    args = parser.parse_args()

    def client() -> OpenAICompatibleLanguageModel:
        return OpenAICompatibleLanguageModel(
            endpoint=args.endpoint, api_key=API_KEY, model_name=args.model, temperature=args.temperature, max_completion_tokens=args.max_tokens
        )

    if args.best_of_n:
        iaas._state.gateway = ITSGateway(algorithm=BestOfN(orm=LLMJudge(lm=client())))
        config = iaas._state.config
        config.endpoint, config.model, config.api_key = args.endpoint, args.model, API_KEY
    gateway = iaas._state.gateway
    gateway._lm_cache[(args.endpoint, args.model, gateway._hash_api_key(API_KEY))] = client()
    uvicorn.run(iaas.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

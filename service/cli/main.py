"""`ponder serve`, `prepare-model`, `calibrate`, `profile-hardware` and `import-results`."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from service.logs import configure_logging
from service.settings import ModelSpec, Settings


def served_model(args: argparse.Namespace) -> ModelSpec:
    """`ponder serve --model DIR`: one served model from the command line, the rest of its spec at its defaults."""
    path = args.model.resolve()
    return ModelSpec(
        name=args.served_model_name or path.name,
        source=str(path),
        tool_parser=args.tool_parser,
        reasoning_parser=args.reasoning_parser,
        chat_template=args.chat_template,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder", description="Inference-time scaling behind an OpenAI-compatible API")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway and its engines")
    serve.add_argument("--host", help="overrides PONDER_HOST")
    serve.add_argument("--port", type=int, help="overrides PONDER_PORT")
    serve.add_argument("--ray-address", help="join this Ray cluster (overrides PONDER_RAY_ADDRESS)")
    serve.add_argument("--model", type=Path, help="serve this Hugging Face model directory alone, as `vllm serve` does (overrides PONDER_MODELS)")
    serve.add_argument("--served-model-name", help="the name clients call it by (default: the directory's name)")
    serve.add_argument("--tool-parser", help="vLLM's tool parser for tool_choice auto (hermes, llama3_json, ...)")
    serve.add_argument("--reasoning-parser", help="vLLM's reasoning parser (deepseek_r1, qwen3, ...) or think_tags")
    serve.add_argument("--chat-template", type=Path, help="a Jinja chat template in place of the model's own")
    prepare = sub.add_parser("prepare-model", help="convert packaged GGUF models into Hugging Face directories")
    prepare.add_argument("--model", help="only this served model")
    prepare.add_argument("--force", action="store_true", help="convert again even if already prepared")
    calibrate = sub.add_parser("calibrate", help="seed ATTS's calibration pools from a benchmark suite, through a running gateway")
    calibrate.add_argument("--suite", choices=("arithmetic", "humaneval"), required=True)
    calibrate.add_argument("--problems", type=int, default=50)
    calibrate.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    calibrate.add_argument("--api-key", default="none")
    calibrate.add_argument("--model", default="smollm2-135m", help="the request's model (draft and target default to it)")
    calibrate.add_argument("--draft")
    calibrate.add_argument("--target")
    calibrate.add_argument("--family", default="default")
    calibrate.add_argument("--coverage", choices=("marginal", "per_question"), default="marginal")
    calibrate.add_argument("--samples", type=int, default=16, help="first-turn chunks per problem (m)")
    calibrate.add_argument("--draft-tokens", type=int, default=500)
    calibrate.add_argument("--draft-temperature", type=float, default=0.8)
    calibrate.add_argument("--concurrency", type=int, default=2)
    profile = sub.add_parser("profile-hardware", help="measure this host's FLOP/s and memory bandwidth for the cost model and save the profile")
    profile.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: the engine's dtype on this CPU")
    imports = sub.add_parser("import-results", help="load benchmark result files into Redis, for every gateway on it to plan from and show")
    imports.add_argument("files", nargs="*", type=Path, metavar="FILE", help="result files named <benchmark>-<family>-<time>.json, as bench/ writes them")
    imports.add_argument("--dry-run", action="store_true", help="check the files and say what they hold; write nothing")
    imports.add_argument("--list", action="store_true", help="list the runs imported")
    imports.add_argument("--remove", nargs="+", default=[], metavar="RUN", help="take these runs out again")
    args = parser.parse_args(argv)
    if args.command == "serve" and args.model is None and (args.served_model_name or args.tool_parser or args.reasoning_parser or args.chat_template):
        serve.error("--served-model-name, --tool-parser, --reasoning-parser and --chat-template describe the model given with --model")
    if args.command == "serve" and args.model is not None and not (args.model / "config.json").is_file():
        serve.error(f"--model {args.model}: not a Hugging Face model directory (no config.json)")
    if args.command == "import-results" and sum((bool(args.files), args.list, bool(args.remove))) != 1:
        imports.error("give result files, --list or --remove RUN...")

    overrides = {
        k: v
        for k, v in {"host": getattr(args, "host", None), "port": getattr(args, "port", None), "ray_address": getattr(args, "ray_address", None)}.items()
        if v is not None
    }
    if args.command == "serve" and args.model is not None:
        overrides["models"] = [served_model(args)]
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    if args.command == "serve":
        import uvicorn

        from service.app import create_app
        from service.shutdown import DrainingServer

        app = create_app(settings)
        # uvicorn takes whole seconds; rounding up never cuts short the drain that was configured.
        grace_s = math.ceil(settings.drain.timeout_s)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=grace_s)
        DrainingServer(config, app.state, settings.drain.readiness_delay_s).run()
    elif args.command == "calibrate":
        import asyncio
        import json

        from service.cli.calibrate import calibrate as run_calibration

        strategy = {
            "samples": args.samples,
            "draft_tokens": args.draft_tokens,
            "draft_temperature": args.draft_temperature,
            "family": args.family,
            "calibration": args.coverage,
            **{k: v for k, v in {"draft": args.draft, "target": args.target}.items() if v},
        }
        done = asyncio.run(run_calibration(args.base_url, args.api_key, args.model, args.suite, args.problems, strategy, args.draft_tokens, args.concurrency))
        print(json.dumps(done))
    elif args.command == "import-results":
        import asyncio
        import json

        from service.cli.import_results import ImportFailed, run

        try:
            done = asyncio.run(run(settings.redis_url, args.files, dry_run=args.dry_run, listing=args.list, remove=args.remove))
        except ImportFailed as exc:
            print(f"ponder import-results: {exc}", file=sys.stderr)
            raise SystemExit(1) from exc
        print(json.dumps(done, indent=2))
    elif args.command == "profile-hardware":
        import json

        from service.planning.hardware import cpu_dtype
        from service.planning.profile_hardware import measure, save

        measured = measure(args.dtype or cpu_dtype())
        path = save(measured, settings.state_path)
        print(json.dumps({**measured.model_dump(), "intensity": measured.intensity, "saved": str(path)}))
    else:
        from service.engines.prepare import GGUF_PACKAGE_PREFIX, prepare_model

        for spec in settings.models:
            if (args.model is None or spec.name == args.model) and spec.source.startswith(GGUF_PACKAGE_PREFIX):
                logging.getLogger("ponder").info("prepared %s", prepare_model(spec, settings.state_path, force=args.force))


if __name__ == "__main__":
    main()

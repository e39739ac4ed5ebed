"""`ponder serve` and `ponder prepare-model`."""

from __future__ import annotations

import argparse
import logging

from service.logs import configure_logging
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ponder", description="Inference-time scaling behind an OpenAI-compatible API")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway and its engines")
    serve.add_argument("--host", help="overrides PONDER_HOST")
    serve.add_argument("--port", type=int, help="overrides PONDER_PORT")
    serve.add_argument("--ray-address", help="join this Ray cluster (overrides PONDER_RAY_ADDRESS)")
    prepare = sub.add_parser("prepare-model", help="convert packaged GGUF models into Hugging Face directories")
    prepare.add_argument("--model", help="only this served model")
    prepare.add_argument("--force", action="store_true", help="convert again even if already prepared")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in {"host": getattr(args, "host", None), "port": getattr(args, "port", None), "ray_address": getattr(args, "ray_address", None)}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    if args.command == "serve":
        import uvicorn

        from service.app import create_app
        from service.shutdown import DrainingServer

        app = create_app(settings)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=settings.drain.timeout_s)
        DrainingServer(config, app.state, settings.drain.readiness_delay_s).run()
    else:
        from service.engines.prepare import GGUF_PACKAGE_PREFIX, prepare_model

        for spec in settings.models:
            if (args.model is None or spec.name == args.model) and spec.source.startswith(GGUF_PACKAGE_PREFIX):
                logging.getLogger("ponder").info("prepared %s", prepare_model(spec, settings.state_path, force=args.force))


if __name__ == "__main__":
    main()

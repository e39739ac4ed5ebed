"""Ponder beside its peers, optillm and its_hub (Red Hat's inference-time scaling hub), on the same model, engine
arguments and problems: one table a user choosing between them can read.

    .venv/bin/python -m bench.peers            # builds the peers' environments once (.bench-peers/), then ~55 min
    .venv/bin/python -m bench.peers --setup    # only the environments

Each peer lives in a virtual environment of its own (envs), in front of vLLM's own OpenAI server started with
Ponder's engine arguments and environment; Ponder runs on an engine of its own with the same ones (systems). Every
row runs the same problems with the same N, temperature and token cap (run); the table gives accuracy, latency
against the plain call on the same engine, and tokens and engine requests per problem both as each system reports
them and as its engine counts them, so a system that under-reports shows (counters, report).
"""

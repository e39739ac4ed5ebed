"""Block top-k sparse decode (service/engines/sparse_attention.py) against dense attention: the time of one decode
step at growing context lengths, at several KV budgets, and how far greedy outputs stay with dense.

    flock /tmp/ponder-engine.lock .venv/bin/python -m bench.sparse_decode [--contexts 1024,2048,4096,8000]
        [--budgets 512,1024,2048] [--decode-tokens 32] [--batch 1] [--out PATH]
    flock /tmp/ponder-engine.lock .venv/bin/python -m bench.sparse_decode --humaneval [--budgets 96,160,256]

Each configuration is its own engine process (the budget is engine-wide, read from PONDER_SPARSE_KV_BUDGET when the
engine starts), the offline `LLM` with the service's CPU engine environment, enforce_eager and block size 32. A
request's steps are timed one by one through `LLMEngine.step`; the first is its prefill, the rest are decode steps.

Prompts: for timing and agreement, the repository's READMEs cut to each context length, continued greedily; for
accuracy, a pass key hidden at 10%, 50% and 90% depth of filler text at the longest context, asked for at the end
(the answer must come from one middle block, which top-k must find).

`--humaneval`: accuracy by KV budget on a suite. Every HumanEval problem (chat prompt, ~100-400 tokens) answered
greedily, up to 256 tokens, in one batch per engine, graded by its hidden tests in the sandbox: pass@1 and how many
answers are token-for-token dense's, at budgets below the context (sink + top-k + newest block of 32 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bench.server import ROOT, save_result
from bench.sparse_kernel_times import BLOCK_SIZE, kernel_table, kernel_times
from service.execution.models import CPU_ENGINE_ENV
from service.planning.hardware import CpuDtype, cpu_dtype
from suites import humaneval

MODEL_DIR = Path.home() / ".local" / "share" / "ponder" / "models" / "smollm2-135m"
MAX_MODEL_LEN = 8192
CORPUS = (ROOT / "README.md", ROOT / "deploy" / "README.md")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PASS_KEYS = ("68402", "31957", "80264")
DEPTHS = (0.1, 0.5, 0.9)


@dataclass
class EngineJob:
    """One engine's work: every prompt run greedily `repeats` times as `batch` copies (timed per step), then all of
    `together` at once."""

    model: str
    budget: int | None
    prompts: list[list[int]]
    max_tokens: int
    batch: int = 1
    repeats: int = 1
    together: list[list[int]] = field(default_factory=list)
    block_size: int = BLOCK_SIZE
    max_model_len: int = MAX_MODEL_LEN
    dtype: CpuDtype | None = None  # the host's serving dtype (service.planning.hardware.cpu_dtype) unless set
    ignore_eos: bool = True


def engine_env(budget: int | None) -> dict[str, str]:
    """The service's CPU engine environment (service/execution/models.py), with the budget or without it."""
    env = {k: v for k, v in os.environ.items() if k != "PONDER_SPARSE_KV_BUDGET"}
    env |= CPU_ENGINE_ENV | {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    if budget is not None:
        env["PONDER_SPARSE_KV_BUDGET"] = str(budget)
    return env


def run_engine(job: EngineJob, timeout_s: float = 1800) -> dict[str, Any]:
    """Runs `job` in a fresh process: vLLM loads its plugins once per process, so each budget needs its own."""
    with tempfile.TemporaryDirectory(prefix="ponder-sparse-") as scratch:
        job_file, result_file = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job_file.write_text(json.dumps(asdict(job)))
        done = subprocess.run(
            [sys.executable, "-m", "bench.sparse_decode", "--engine-job", str(job_file), str(result_file)],
            env=engine_env(job.budget),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"engine job (budget {job.budget}) exited with {done.returncode}:\n{done.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(result_file.read_text())
        return result


def _engine_job(job: EngineJob) -> dict[str, Any]:
    """In the engine process. Per prompt: its step times per repeat, its greedy tokens and, with a budget, the
    backend's per-step record of KV tokens attended (sparse_kernel.STATS, read through collective_rpc), from the
    first repeat. Prefix caching is on, as the service runs it: later repeats and batch copies reuse the prompt's
    blocks (and their key summaries), so only their decode is new work."""
    from vllm import LLM, RequestOutput, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=job.model,
        dtype=job.dtype or cpu_dtype(),
        block_size=job.block_size,
        max_model_len=job.max_model_len,
        enforce_eager=True,
        enable_prefix_caching=True,
        enable_chunked_prefill=False,
        seed=0,
    )
    greedy = SamplingParams(temperature=0.0, max_tokens=job.max_tokens, ignore_eos=job.ignore_eos)
    prefill = SamplingParams(temperature=0.0, max_tokens=1)
    engine = llm.llm_engine

    def stats() -> dict[str, Any] | None:
        if job.budget is None:
            return None
        from service.engines.sparse_kernel import sparse_decode_stats

        return llm.collective_rpc(sparse_decode_stats)[0]

    def reset() -> None:
        if job.budget is not None:
            from service.engines.sparse_kernel import reset_sparse_decode_stats

            llm.collective_rpc(reset_sparse_decode_stats)

    def decode(prompt: list[int], tag: str) -> tuple[list[float], list[int]]:
        for copy in range(job.batch):
            engine.add_request(f"{tag}-{copy}", {"prompt_token_ids": prompt}, greedy)
        step_s: list[float] = []
        tokens: list[int] = []
        while engine.has_unfinished_requests():
            started = time.perf_counter()
            outputs = engine.step()
            step_s.append(time.perf_counter() - started)
            tokens = next((list(o.outputs[0].token_ids) for o in outputs if isinstance(o, RequestOutput) and o.request_id == f"{tag}-0" and o.finished), tokens)
        return step_s, tokens

    if job.prompts:  # the first steps of an engine pay one-off warm-up costs
        llm.generate([TokensPrompt(prompt_token_ids=job.prompts[0])], SamplingParams(max_tokens=4), use_tqdm=False)
    runs = []
    for i, prompt in enumerate(job.prompts):
        if job.batch > 1:  # prefilled once, so that the copies share its cached blocks
            llm.generate([TokensPrompt(prompt_token_ids=prompt)], prefill, use_tqdm=False)
        repeats = []
        for r in range(job.repeats):
            reset()
            step_s, tokens = decode(prompt, f"p{i}r{r}")
            repeats.append({"step_s": step_s, "tokens": tokens, "stats": stats()})
        runs.append({"prompt_tokens": len(prompt), "step_s": [r["step_s"] for r in repeats], "tokens": repeats[0]["tokens"], "stats": repeats[0]["stats"]})
    together = None
    if job.together:
        reset()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in job.together], greedy, use_tqdm=False)
        together = {"tokens": [list(o.outputs[0].token_ids) for o in outputs], "stats": stats()}
    return {"runs": runs, "together": together}


def text_prompt(tokenizer: Any, length: int) -> list[int]:
    ids: list[int] = []
    text = "\n\n".join(p.read_text() for p in CORPUS)
    while len(ids) < length:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:length]


def pass_key_prompt(tokenizer: Any, length: int, key: str, depth: float) -> list[int]:
    head: list[int] = tokenizer(
        "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about it.\n",
        add_special_tokens=False,
    )["input_ids"]
    needle: list[int] = tokenizer(f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n", add_special_tokens=False)["input_ids"]
    question: list[int] = tokenizer("\nWhat is the pass key? The pass key is", add_special_tokens=False)["input_ids"]
    unit: list[int] = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    room = length - len(head) - len(needle) - len(question)
    filler = (unit * (room // len(unit) + 1))[:room]
    cut = int(room * depth)
    return head + filler[:cut] + needle + filler[cut:] + question


def agreement(tokens: list[int], reference: list[int]) -> int:
    """How many leading tokens match dense: greedy decoding diverges for good after its first difference."""
    same = 0
    for a, b in zip(tokens, reference, strict=False):
        if a != b:
            break
        same += 1
    return same


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    contexts = [int(c) for c in args.contexts.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    longest = max(contexts)
    timing = [text_prompt(tokenizer, c) for c in contexts]
    keys = [pass_key_prompt(tokenizer, longest, key, depth) for key, depth in zip(PASS_KEYS, DEPTHS, strict=True)]
    results: dict[str, Any] = {}
    for budget in [None, *budgets]:
        name = "dense" if budget is None else str(budget)
        job = EngineJob(model=str(args.model), budget=budget, prompts=timing + keys, max_tokens=args.decode_tokens, batch=args.batch, repeats=args.repeats)
        results[name] = run_engine(job)
    rows = []
    for i, context in enumerate(contexts):
        row: dict[str, Any] = {"context": context}
        for name, result in results.items():
            run = result["runs"][i]
            row[f"{name}_ms"] = 1000 * min(statistics.median(steps[1:]) for steps in run["step_s"])
            row[f"{name}_agree"] = agreement(run["tokens"], results["dense"]["runs"][i]["tokens"])
            if run["stats"] is not None and run["stats"]["dense_kv_tokens"]:
                row[f"{name}_kv_read"] = run["stats"]["attended_kv_tokens"] / run["stats"]["dense_kv_tokens"]
        rows.append(row)
    accuracy = {}
    for name, result in results.items():
        found = []
        for j, key in enumerate(PASS_KEYS):
            # One sequence of ids decodes to one string; the declared list is for a batch.
            text = cast(str, tokenizer.decode(result["runs"][len(contexts) + j]["tokens"]))
            found.append(text.strip().startswith(key))
        accuracy[name] = found
    kernel = kernel_times(args.model, contexts, budgets, args.batch)
    return {"rows": rows, "kernel": kernel, "pass_key": accuracy, "raw": results}


def suite_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """HumanEval pass@1 by KV budget, and how many answers are exactly dense's."""
    import asyncio

    from service.execution.prompts import PromptCodec
    from verifiers.sandbox import Sandbox, SandboxLimits

    codec = PromptCodec(str(args.model))  # the gateway's own chat prompts
    items = humaneval.problems(args.problems)
    prompts = [codec.chat(p.messages) for p in items]
    budgets = [int(b) for b in args.budgets.split(",")]
    answers: dict[str, list[list[int]]] = {}
    kv_read: dict[str, float | None] = {}
    for budget in [None, *budgets]:
        name = "dense" if budget is None else str(budget)
        job = EngineJob(model=str(args.model), budget=budget, prompts=[], together=prompts, max_tokens=args.answer_tokens, ignore_eos=False)
        together = run_engine(job)["together"]
        answers[name] = together["tokens"]
        stats = together["stats"]
        kv_read[name] = stats["attended_kv_tokens"] / stats["dense_kv_tokens"] if stats and stats["dense_kv_tokens"] else None

    async def grade_all() -> dict[str, list[bool]]:
        sandbox = Sandbox(SandboxLimits(concurrency=2))
        graded = {}
        for name, replies in answers.items():
            reports = [await humaneval.grade(sandbox, p, codec.decode(r)) for p, r in zip(items, replies, strict=True)]
            graded[name] = [r.total > 0 and r.passed == r.total for r in reports]
        return graded

    passed = asyncio.run(grade_all())
    rows = [
        {
            "budget": name,
            "passed": sum(passed[name]),
            "problems": len(items),
            "pass_at_1": sum(passed[name]) / len(items),
            "same_as_dense": sum(a == d for a, d in zip(answers[name], answers["dense"], strict=True)),
            "mean_prompt_tokens": statistics.mean(len(p) for p in prompts),
            "kv_read": kv_read[name],
        }
        for name in answers
    ]
    return {"rows": rows, "passed": passed, "answers": answers}


def suite_table(rows: list[dict[str, Any]]) -> str:
    lines = ["KV budget | pass@1 | passed | answers equal to dense | KV read"]
    lines += [
        f"{r['budget']} | {r['pass_at_1']:.3f} | {r['passed']}/{r['problems']} | {r['same_as_dense']}/{r['problems']} | "
        f"{'dense' if r['kv_read'] is None else format(r['kv_read'], '.0%')}"
        for r in rows
    ]
    return "\n".join(lines)


def table(rows: list[dict[str, Any]], names: list[str], decode_tokens: int) -> str:
    header = ["context"] + [f"{n} ms/step" for n in names] + [f"{n} agree/{decode_tokens}" for n in names[1:]]
    header += [f"{n} KV read" for n in names[1:]]
    lines = [" | ".join(header)]
    for row in rows:
        cells = [str(row["context"])] + [f"{row[f'{n}_ms']:.1f}" for n in names]
        cells += [str(row[f"{n}_agree"]) for n in names[1:]]
        cells += [f"{row[f'{n}_kv_read']:.0%}" if f"{n}_kv_read" in row else "dense" for n in names[1:]]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--engine-job":
        job = EngineJob(**json.loads(Path(sys.argv[2]).read_text()))
        Path(sys.argv[3]).write_text(json.dumps(_engine_job(job)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="1024,2048,4096,8000")
    parser.add_argument("--budgets", help="KV budgets in tokens (default 512,1024,2048; --humaneval: 96,160,256)")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="sequences decoding together (copies of the prompt)")
    parser.add_argument("--repeats", type=int, default=2, help="decode runs per prompt; the fastest median counts")
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--humaneval", action="store_true", help="accuracy by KV budget on HumanEval instead of step times")
    parser.add_argument("--problems", type=int, help="--humaneval: the first N problems (default all 164)")
    parser.add_argument("--answer-tokens", type=int, default=256, help="--humaneval: tokens per answer")
    args = parser.parse_args()
    args.budgets = args.budgets or ("96,160,256" if args.humaneval else "512,1024,2048")
    started = datetime.now(UTC)
    if args.humaneval:
        accuracy = suite_accuracy(args)
        model = {"name": "smollm2-135m", "path": str(args.model)}
        args.model = str(args.model)
        parameters = {"block_size": BLOCK_SIZE, "max_model_len": MAX_MODEL_LEN, "enforce_eager": True, "greedy": True, "layer_0": "dense"}
        result, out = save_result(
            "sparse_decode-humaneval", started, model, args, parameters, rows=accuracy["rows"], passed=accuracy["passed"], answers=accuracy["answers"]
        )
        print(
            f"{suite_table(accuracy['rows'])}\n\nmean prompt {accuracy['rows'][0]['mean_prompt_tokens']:.0f} tokens; one greedy run per "
            f"budget\nhost flags: {', '.join(result['host']['flags'])}\nresult: {out}"
        )
        return
    measured = measure(args)
    names = ["dense", *args.budgets.split(",")]
    parameters = {"block_size": BLOCK_SIZE, "max_model_len": MAX_MODEL_LEN, "enforce_eager": True, "pass_key_depths": list(DEPTHS), "layer_0": "dense"}
    model = {"name": "smollm2-135m", "path": str(args.model)}
    args.model = str(args.model)
    result, out = save_result(
        "sparse_decode", started, model, args, parameters, rows=measured["rows"], kernel=measured["kernel"], pass_key=measured["pass_key"], raw=measured["raw"]
    )
    keys = ", ".join(f"{n}: {sum(found)}/{len(found)}" for n, found in measured["pass_key"].items())
    print(
        f"{table(measured['rows'], names, args.decode_tokens)}\n\nmedian decode step (batch {args.batch}); agree = "
        f"leading greedy tokens equal to dense; KV read = attended / dense KV tokens over all layers\n"
        f"\none layer's decode attention alone (batch {args.batch}, fastest of 5 rounds):\n"
        f"{kernel_table(measured['kernel'], [int(b) for b in args.budgets.split(',')])}\n\n"
        f"pass key found at depths {list(DEPTHS)} of {max(int(c) for c in args.contexts.split(','))} tokens: {keys}\n"
        f"host flags: {', '.join(result['host']['flags'])}\nresult: {out}"
    )


if __name__ == "__main__":
    main()

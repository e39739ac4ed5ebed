"""ATTS: asynchronous conformal rejection sampling with a draft and a target model (Xiong et al., ICLR 2026,
arXiv 2509.15148; procedure, knobs and deviations in docs/strategies/atts.md).

    for each of m samples, concurrently, no barrier between them:
        H <- []
        for t in 0 .. T-1:
            c <- draft(question, H)                     up to K_d tokens at the draft's temperature
            s <- PPL_target(c | question, H)            one prefill pass, one generated token
            p <- (#{Cal >= s} + 1) / (|Cal| + 1)        Cal: first-turn scores, marginal or per question
            H <- H + c
            if p <= alpha:                              rejected: the target takes over (the chunk stays in H)
                H <- H + target(question, H)            up to K_t tokens at the target's temperature
            if H holds a final answer: stop
    answer <- select over the m samples                 majority with the answers verifier, or a best-of-N selector

Where the paper is silent or its code differs, the choice is a knob or stated here:
- `rule`: "conformal" is the paper's p-value with the +1 correction; "percentile" is the released code's rank test.
- Calibration is really online: a first-turn score is decided against the pool as it stands, then joins it (locally
  at once, in the shared Redis pool, newest `window` kept, when the request ends). A pool with fewer than
  `min_calibration` scores is cold: the request's own first-turn chunks calibrate each other (each against all the
  others), which holds the samples at turn 0 until every one has drafted; the response says so.
- `takeovers` (a budget B) instead of `alpha`: alpha = B / (m x mean chunks per sample seen on this pool).
- The history is one continuing assistant turn, extended token by token (a piece by the other model is re-tokenized
  for it), so every call extends the previous prompt and reuses its prefix cache; the released code joins chunks
  with blank lines in a new message.
- A final answer: a piece that ends the model's turn (end of sequence or a stop string), or a `\\boxed{}` in H.
- `mode="sync"` is the baseline ATTS replaces: a barrier per turn; every live sample drafts and is scored, the
  round(alpha x live) worst-scored go to the target, and the next turn waits for all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from strategies.base import CalibrationStore, Candidate, Context, Rollout, StrategyResult, Task
from strategies.best_of_n import Select, logprobs_needed, select_among, tests_for
from strategies.conformal import Decision, Rule, alpha_for_takeovers, budget_accuracy, decide, perplexity, rejection_interval
from strategies.voting import Score
from verifiers.answers import extract_answer

DEFAULT_ALPHA = 0.4  # the released code's threshold: reject when the rank fraction >= 0.6
Coverage = Literal["marginal", "per_question"]


class ATTSParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["atts"] = "atts"
    draft: str | None = Field(None, description="served model that drafts (default: the request's model)")
    target: str | None = Field(None, description="served model that scores and takes over (default: the request's)")
    samples: int = Field(16, ge=1, le=64, description="parallel samples (m)")
    turns: int = Field(15, ge=1, le=64, description="draft/target rounds per sample (T)")
    draft_tokens: int = Field(500, ge=1, le=8192, description="tokens per draft chunk (K_d)")
    target_tokens: int = Field(500, ge=1, le=8192, description="tokens per target takeover (K_t)")
    draft_temperature: float = Field(0.8, ge=0.0, le=2.0)
    target_temperature: float = Field(0.8, ge=0.0, le=2.0)
    alpha: float | None = Field(None, ge=0.0, le=1.0, description=f"target rejection rate (default {DEFAULT_ALPHA})")
    takeovers: int | None = Field(None, ge=1, le=4096, description="a takeover budget B per request; alpha is derived from it")
    calibration: Coverage = Field("marginal", description="one pool per (draft, target, family), or one per question too")
    rule: Rule = "conformal"
    family: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="task family: pools are kept apart by it")
    min_calibration: int = Field(16, ge=1, le=4096, description="a smaller pool is cold: the request calibrates itself")
    select: Select | Literal["majority"] = "majority"
    score: Score = Field("logprob", description="weighted_majority's weight; code_tests' tie-break")
    mode: Literal["async", "sync"] = "async"

    @model_validator(mode="after")
    def _one_rate(self) -> ATTSParams:
        if self.alpha is not None and self.takeovers is not None:
            raise ValueError("give alpha or takeovers, not both: alpha is derived from a takeover budget")
        return self

    def served_models(self) -> dict[str, str | None]:
        return {"draft": self.draft, "target": self.target}


def check(task: Task, params: BaseModel) -> None:
    if getattr(params, "select", None) == "code_tests":
        tests_for(task)


@dataclass
class Turn:
    turn: int
    draft_tokens: int
    score: float
    p: float
    reject: bool
    target_tokens: int = 0
    at: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "draft_tokens": self.draft_tokens,
            "score": round(self.score, 4) if self.score != float("inf") else None,
            "p": round(self.p, 4),
            "decision": "reject" if self.reject else "accept",
            "target_tokens": self.target_tokens,
            "t": round(self.at, 4),
        }


@dataclass
class Sample:
    index: int
    prompt: dict[str, list[int]]
    """Question plus history so far, in each model's tokens (one entry when draft and target are the same model)."""
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    finish_reason: str | None = None
    wall_s: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class Calibration:
    """One request's view of its pool: the stored scores plus this request's first-turn scores as they come."""

    def __init__(self, store: CalibrationStore | None, key: str, expires: bool, stored: list[float] | None, params: ATTSParams, alpha: float) -> None:
        self.store, self.key, self.expires = store, key, expires
        self.pool = list(stored or [])
        self.loaded = len(self.pool)
        self.available = stored is not None
        self.cold = self.loaded < params.min_calibration
        self.samples, self.rule, self.alpha = params.samples, params.rule, alpha
        self.added: list[float] = []
        self._first: dict[int, float | None] = {}
        self._ready = asyncio.Event()
        if not self.cold:
            self._ready.set()

    async def first(self, sample: int, score: float) -> Decision:
        """A first-turn chunk: exchangeable with the pool, so it is decided against it and then joins it."""
        if not self.cold:
            decision = decide(self.pool, score, self.alpha, self.rule)
            self.pool.append(score)
            self.added.append(score)
            return decision
        self._first[sample] = score
        self._arrived()
        await self._ready.wait()
        others = [s for i, s in self._first.items() if i != sample and s is not None]
        return decide(self.pool[: self.loaded] + others, score, self.alpha, self.rule)

    def later(self, score: float) -> Decision:
        return decide(self.pool, score, self.alpha, self.rule)

    def gone(self, sample: int) -> None:
        """A sample that ended before its first score no longer holds a cold pool's bootstrap back."""
        if sample not in self._first:
            self._first[sample] = None
            self._arrived()

    def _arrived(self) -> None:
        if self.cold and not self._ready.is_set() and len(self._first) == self.samples:
            own = [s for _, s in sorted(self._first.items()) if s is not None]
            self.pool.extend(own)
            self.added.extend(own)
            self._ready.set()

    async def flush(self) -> None:
        if self.store is not None and self.added:
            await self.store.add(self.key, self.added, expires=self.expires)

    def report(self, coverage: Coverage) -> dict[str, Any]:
        return {
            "coverage": coverage,
            "rule": self.rule,
            "pool": self.key,
            "pool_size": self.loaded,
            "bootstrapped": self.cold,
            "store": "ok" if self.available else "unavailable",
            "added": len(self.added),
        }


class ATTS:
    """The samples' loops over one context; `run` returns the samples, ended."""

    def __init__(self, ctx: Context, params: ATTSParams, calibration: Calibration, alpha: float) -> None:
        self.ctx, self.params, self.calibration, self.alpha = ctx, params, calibration, alpha
        self.draft = params.draft or ctx.model
        self.target = params.target or ctx.model
        self.logprobs = logprobs_needed(params.select, params.score)
        self.started = time.perf_counter()
        self.tokens = {"draft": 0, "target": 0, "scored": 0}

    async def run(self) -> list[Sample]:
        models = dict.fromkeys((self.draft, self.target))
        base = {m: await self.ctx.codec.tokens(model=m) for m in models}
        samples = [Sample(i, {m: list(ids) for m, ids in base.items()}) for i in range(self.params.samples)]
        if self.params.mode == "async":
            await asyncio.gather(*(self._run_async(s) for s in samples))
        else:
            await self._run_sync(samples)
        return samples

    async def _run_async(self, sample: Sample) -> None:
        try:
            for t in range(self.params.turns):
                turn = await self._draft_and_score(sample, t)
                if turn is None:
                    break
                decision = await self._decide(sample, turn)
                turn.p, turn.reject = decision.p, decision.reject
                if turn.reject:
                    await self._take_over(sample, turn)
                self._decided(sample, turn)
                if sample.done:
                    break
            self._end(sample, "length")
        finally:
            self.calibration.gone(sample.index)

    async def _run_sync(self, samples: list[Sample]) -> None:
        live = samples
        for t in range(self.params.turns):
            turns = await asyncio.gather(*(self._draft_and_score(s, t) for s in live))
            for s, turn in zip(live, turns, strict=True):
                if turn is None:
                    self.calibration.gone(s.index)
            scored = [(s, turn) for s, turn in zip(live, turns, strict=True) if turn is not None]
            decisions = await asyncio.gather(*(self._decide(s, turn) for s, turn in scored))
            worst = sorted(range(len(scored)), key=lambda k: -scored[k][1].score)[: round(self.alpha * len(scored))]
            for k, ((_, turn), decision) in enumerate(zip(scored, decisions, strict=True)):
                turn.p, turn.reject = decision.p, k in worst
            await asyncio.gather(*(self._take_over(s, turn) for s, turn in scored if turn.reject))
            for s, turn in scored:
                self._decided(s, turn)
            live = [s for s in live if not s.done]
            if not live:
                return
        for s in live:
            self._end(s, "length")

    async def _decide(self, sample: Sample, turn: Turn) -> Decision:
        if turn.turn == 0:
            return await self.calibration.first(sample.index, turn.score)
        return self.calibration.later(turn.score)

    async def _draft_and_score(self, sample: Sample, t: int) -> Turn | None:
        """The draft's next chunk, scored by the target; None when the sample has ended (an empty chunk, no room left
        in the context, the budget or deadline spent)."""
        chunk = await self._generate(sample, self.draft, self.params.draft_tokens, self.params.draft_temperature, "draft")
        if chunk is None:
            return None
        prefix = sample.prompt[self.target]
        ids = chunk.token_ids if self.target == self.draft else await self.ctx.codec.tokens(text=chunk.text, model=self.target)
        fits = len(prefix) + len(ids) < self.ctx.codec.context_limit(self.target)
        logprobs = await self.ctx.score(prefix + ids, len(prefix), model=self.target) if fits else None
        self.tokens["scored"] += len(ids) if fits else 0
        await self._append(sample, chunk, self.draft, "draft")
        if not fits or self.ctx.exhausted:
            self._end(sample, self.ctx.exhausted or "length")
            return None
        # A chunk the target could not score (no log-probabilities came back) scores as the worst: rejected.
        return Turn(t, len(chunk.token_ids), perplexity(logprobs), 1.0, False)

    async def _take_over(self, sample: Sample, turn: Turn) -> None:
        """A rejected chunk stays and the target continues after it, as in the paper's loop; a rejected chunk that
        ended the draft's turn still ends the sample once the target has added its part."""
        ended, sample.finish_reason = sample.finish_reason, None
        cont = await self._generate(sample, self.target, self.params.target_tokens, self.params.target_temperature, "target")
        if cont is not None:
            turn.target_tokens = len(cont.token_ids)
        if ended == "stop" and not sample.done:
            self._end(sample, "stop")

    async def _generate(self, sample: Sample, model: str, cap: int, temperature: float, role: str) -> Rollout | None:
        prompt = sample.prompt[model]
        room = self.ctx.codec.context_limit(model) - len(prompt) - 1
        if room <= 0:
            self._end(sample, "length")
            return None
        out = await self.ctx.generate(1, temperature=temperature, max_tokens=min(cap, room), logprobs=self.logprobs, prompt=prompt, model=model, stage=role)
        if not out:
            self._end(sample, self.ctx.exhausted or "budget")
            return None
        piece = out[0]
        if role == "target":
            await self._append(sample, piece, model, role)
        elif not piece.token_ids:
            self._end(sample, "stop")
            return None
        return piece

    async def _append(self, sample: Sample, piece: Rollout, writer: str, role: str) -> None:
        for model, prompt in sample.prompt.items():
            # A piece that ended its writer's turn is re-tokenized from its text: its end-of-turn token must not
            # stay inside a history the other model goes on writing.
            own = model == writer and piece.finish_reason != "stop"
            prompt.extend(piece.token_ids if own else await self.ctx.codec.tokens(text=piece.text, model=model))
        sample.text += piece.text
        sample.token_ids.extend(piece.token_ids)
        sample.logprobs.extend(piece.logprobs)
        self.tokens[role] += len(piece.token_ids)
        if piece.cut_short or piece.finish_reason == "stop" or extract_answer_boxed(sample.text):
            sample.finish_reason = piece.finish_reason if piece.cut_short else "stop"
            sample.wall_s = time.perf_counter() - self.started
        else:
            sample.finish_reason = None

    def _decided(self, sample: Sample, turn: Turn) -> None:
        turn.at = time.perf_counter() - self.started
        sample.turns.append(turn)
        self.ctx.emit({"type": "chunk", "sample": sample.index, **turn.report()})

    def _end(self, sample: Sample, reason: str) -> None:
        if not sample.done:
            sample.finish_reason = reason
            sample.wall_s = time.perf_counter() - self.started


def extract_answer_boxed(text: str) -> bool:
    return "\\boxed{" in text and extract_answer(text) is not None


def pool_key(draft: str, target: str, family: str, question: str | None) -> str:
    key = f"{draft}|{target}|{family}"
    return key if question is None else f"{key}|q:{hashlib.sha256(question.encode()).hexdigest()[:16]}"


async def atts(ctx: Context, params: ATTSParams) -> StrategyResult:
    draft, target = params.draft or ctx.model, params.target or ctx.model
    marginal = pool_key(draft, target, params.family, None)
    key = pool_key(draft, target, params.family, ctx.task.text if params.calibration == "per_question" else None)
    store = ctx.shared.calibration
    alpha, source = (params.alpha, "request") if params.alpha is not None else (DEFAULT_ALPHA, "default")
    if params.takeovers is not None:
        stats = await store.stats(marginal) if store else {}
        per_sample = stats.get("chunks", 0.0) / stats["samples"] if stats.get("samples") else 1.0
        alpha, source = alpha_for_takeovers(params.takeovers, params.samples, per_sample), "takeovers"
    stored = await store.scores(key) if store else None
    calibration = Calibration(store, key, params.calibration == "per_question", stored, params, alpha)
    tests = tests_for(ctx.task) if params.select == "code_tests" else None

    loop = ATTS(ctx, params, calibration, alpha)
    samples = await loop.run()
    await calibration.flush()
    decided = [t for s in samples for t in s.turns]
    if store is not None:
        await store.count(marginal, samples=len(samples), chunks=len(decided))

    candidates = [Candidate(Rollout(s.index, s.text, s.token_ids, s.logprobs, s.finish_reason), answer=extract_answer(s.text)) for s in samples]
    chosen, selection = await select_among(ctx, candidates, params.select, params.score, tests)
    takeovers = sum(t.reject for t in decided)
    walls = [s.wall_s for s in samples if s.wall_s is not None]
    report: dict[str, Any] = {
        "method": "atts",
        "mode": params.mode,
        "draft": draft,
        "target": target,
        "alpha": round(alpha, 6),
        "alpha_source": source,
        "calibration": calibration.report(params.calibration),
        "rejection": rejection_report(decided),
        "takeovers": takeovers,
        "tokens_by_model": loop.tokens,
        "sample_wall_s": {"max": round(max(walls), 4), "median": round(statistics.median(walls), 4)} if walls else None,
        "samples": [
            {
                "index": s.index,
                "finish_reason": s.finish_reason,
                "wall_s": round(s.wall_s or 0.0, 4),
                "answer": c.answer,
                "turns": [t.report() for t in s.turns],
            }
            for s, c in zip(samples, candidates, strict=True)
        ],
        **selection,
    }
    if params.takeovers is not None:
        report["takeover_budget"] = params.takeovers
        report["budget_accuracy"] = round(budget_accuracy(takeovers, params.takeovers), 4)
    return StrategyResult(candidates, chosen, report)


def rejection_report(turns: list[Turn]) -> dict[str, Any]:
    def rate(ts: list[Turn]) -> dict[str, Any]:
        rejected = sum(t.reject for t in ts)
        return {
            "decided": len(ts),
            "rejected": rejected,
            "rate": round(rejected / len(ts), 4) if ts else None,
            "interval95": rejection_interval(rejected, len(ts)),
        }

    return {**rate(turns), "turn0": rate([t for t in turns if t.turn == 0])}

"""Kinetics' allocation (Sadhukhan et al. 2025 §3; docs/strategies/kinetics-auto.md): a budget in eFLOPs becomes N samples, a token cap and a KV budget.

The paper picks, per question and offline, the best coverage among configurations that fit; a service cannot see
the answer, so a predicted accuracy takes coverage's place:

    candidates = grid (N x cap x B)  +  for every B: N = 1 at the longest length the budget buys
    for each candidate (n, cap, B):
        worst     = cost(n, L_out = cap)                        every sample runs to the cap
        predicted = cost(n, L_out = E[min(len, cap)])              over the length profile; cap without one
        feasible  = worst <= budget
        accuracy  = table.predictor(prior)(n, cap, B)
    plan = argmax accuracy over the feasible, ties to lower predicted cost, then lower worst cost
    nothing feasible -> BudgetTooSmall

The accuracy a configuration is predicted to have (the prior and the table of observations) is compute/accuracy.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compute.accuracy import AccuracyModel, AccuracyTable, Cell, Prior, kv_rank
from compute.cost_model import (
    PONDER_TERMS,
    HardwareProfile,
    ModelShape,
    Terms,
    max_length,
    request_cost,
)

N_GRID = (1, 2, 4, 8, 16, 32)
KV_GRID = (128, 256, 512, 1024, 2048)
# The paper's long-CoT caps are 2048..32768 in steps of 2048; Ponder's small models answer in tens to hundreds of
# tokens, so powers of two from 16 come first.
SHORT_CAPS = tuple(2**k for k in range(4, 11))
PAPER_CAPS = tuple(range(2048, 32768 + 1, 2048))
# vLLM-CPU kernel blocks are multiples of 32 (docs/engine-on-cpu.md, "Sparse decode"); the paper's page is 16.
CPU_BLOCK_SIZE = 32


class BudgetTooSmall(ValueError):
    """Not even one token of one sample fits: the caller should refuse the request rather than run it over."""


@dataclass(frozen=True)
class Plan:
    """What the strategy runs: SamplingParams n and max_tokens, and the engine's KV budget (None: dense).

    predicted_eflops is at the expected realised lengths, for the report; worst_eflops, every sample at the cap,
    is what was checked against the budget.
    """

    n: int
    max_tokens: int
    kv_budget: int | None
    block_size: int | None
    predicted_eflops: float
    predicted_accuracy: float
    reason: str
    worst_eflops: float


@dataclass(frozen=True)
class Candidate:
    n: int
    max_tokens: int
    kv_budget: int | None
    block_size: int | None
    expected_length: float
    predicted_eflops: float
    worst_eflops: float

    @property
    def cell(self) -> Cell:
        return Cell(self.n, self.max_tokens, self.kv_budget)


@dataclass(frozen=True)
class Considered:
    candidate: Candidate
    accuracy: float
    feasible: bool


def token_caps(l_in: int, max_context: int) -> list[int]:
    """Short caps for short answers, the paper's long-CoT caps, and the longest the context allows."""
    limit = max_context - l_in
    if limit < 1:
        return []
    return sorted({cap for cap in (*SHORT_CAPS, *PAPER_CAPS) if cap <= limit} | {limit})


def kv_options(sparse_available: bool, kv_budgets: Sequence[int], block_size: int) -> list[int | None]:
    """Dense always; a sparse budget only where the engine has sparse decode and it is a whole number of blocks."""
    options: list[int | None] = [None]
    if sparse_available:
        options += [b for b in kv_budgets if b >= block_size and b % block_size == 0]
    return options


def _pointless(kv_budget: int | None, l_in: int, cap: int) -> bool:
    """A budget covering the whole context is dense attention plus search and unshared prompt reads."""
    return kv_budget is not None and kv_budget >= l_in + cap


def _candidate(
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    cell: Cell,
    block_size: int,
    lengths: Sequence[int],
    terms: Terms,
) -> Candidate:
    """Feasibility is judged with every sample at the cap, since realised lengths can all reach it. The expected
    realised length E[min(len, cap)] only feeds the reported prediction: the cost at that length (the note's step
    3), a little below the mean of the costs that `realised_cost` reports, as cost is convex in the length."""
    blocks = block_size if cell.kv_budget is not None else None
    length = expected_length(lengths, cell.max_tokens)
    expected = request_cost(shape, hardware, cell.n, l_in, length, cell.kv_budget, blocks, terms)
    worst = request_cost(shape, hardware, cell.n, l_in, cell.max_tokens, cell.kv_budget, blocks, terms)
    return Candidate(
        n=cell.n,
        max_tokens=cell.max_tokens,
        kv_budget=cell.kv_budget,
        block_size=blocks,
        expected_length=length,
        predicted_eflops=expected.total,
        worst_eflops=worst.total,
    )


def expected_length(lengths: Sequence[int], cap: int) -> float:
    """E[min(natural length, cap)] over the profile; the cap itself without one, the conservative guess."""
    if not lengths:
        return float(cap)
    return sum(min(length, cap) for length in lengths) / len(lengths)


def candidates(
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    *,
    sparse_available: bool = False,
    block_size: int = CPU_BLOCK_SIZE,
    lengths: Sequence[int] = (),
    ns: Sequence[int] = N_GRID,
    caps: Sequence[int] | None = None,
    kv_budgets: Sequence[int] = KV_GRID,
    terms: Terms = PONDER_TERMS,
) -> list[Candidate]:
    """The paper's grid, with caps from `token_caps` unless given (any given cap beyond the context is dropped)."""
    limit = shape.max_context - l_in
    grid_caps = token_caps(l_in, shape.max_context) if caps is None else [c for c in caps if 1 <= c <= limit]
    return [
        _candidate(shape, hardware, l_in, Cell(n, cap, kv), block_size, lengths, terms)
        for kv in kv_options(sparse_available, kv_budgets, block_size)
        for n in ns
        for cap in grid_caps
        if not _pointless(kv, l_in, cap)
    ]


def _longest(
    budget_eflops: float,
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    options: Sequence[int | None],
    block_size: int,
    lengths: Sequence[int],
    terms: Terms,
    max_tokens: int | None = None,
) -> list[Candidate]:
    """N = 1 at the longest length the budget buys, per KV option: the note's answer when nothing on the grid fits,
    always considered, so that a larger budget, which buys a longer one, can never make the plan worse."""
    found = []
    for kv in options:
        blocks = block_size if kv is not None else None
        length = max_length(shape, hardware, budget_eflops, 1, l_in, kv, blocks, terms)
        if max_tokens is not None:
            length = min(length, max_tokens)
        if length >= 1 and not _pointless(kv, l_in, length):
            found.append(_candidate(shape, hardware, l_in, Cell(1, length, kv), block_size, lengths, terms))
    return found


def allocate(
    budget_eflops: float,
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    table: AccuracyModel | None = None,
    sparse_available: bool = False,
    *,
    block_size: int = CPU_BLOCK_SIZE,
    lengths: Sequence[int] = (),
    ns: Sequence[int] = N_GRID,
    caps: Sequence[int] | None = None,
    kv_budgets: Sequence[int] = KV_GRID,
    terms: Terms = PONDER_TERMS,
    max_tokens: int | None = None,
) -> tuple[Plan, list[Considered]]:
    """The most accurate configuration the budget surely pays for, and every configuration weighed, for the
    cost-model endpoint to explain the choice. `max_tokens`: what the request allows a sample, which no cap passes."""
    if max_tokens is not None:
        caps = sorted({c for c in (caps or token_caps(l_in, shape.max_context)) if c <= max_tokens} | {max_tokens})
    grid = candidates(
        shape,
        hardware,
        l_in,
        sparse_available=sparse_available,
        block_size=block_size,
        lengths=lengths,
        ns=ns,
        caps=caps,
        kv_budgets=kv_budgets,
        terms=terms,
    )
    options = kv_options(sparse_available, kv_budgets, block_size)
    seen = {c.cell for c in grid}
    longest = [c for c in _longest(budget_eflops, shape, hardware, l_in, options, block_size, lengths, terms, max_tokens) if c.cell not in seen]
    prior = Prior(l_in, shape.max_context - l_in, tuple(lengths))
    predict = (table if table is not None else AccuracyTable()).predictor(prior)
    considered = [Considered(c, predict(c.cell), c.worst_eflops <= budget_eflops) for c in grid + longest]
    feasible = [c for c in considered if c.feasible]
    if not feasible:
        raise BudgetTooSmall(_too_small(budget_eflops, shape, hardware, l_in, options, block_size, terms))
    best = min(feasible, key=_preference)
    return _plan(best, _reason(best, feasible, grid, table)), considered


def _preference(c: Considered) -> tuple[float, float, float, int, int, float]:
    k = c.candidate
    return (-c.accuracy, k.predicted_eflops, k.worst_eflops, k.n, k.max_tokens, kv_rank(k.kv_budget))


def _too_small(
    budget_eflops: float,
    shape: ModelShape,
    hardware: HardwareProfile,
    l_in: int,
    options: Sequence[int | None],
    block_size: int,
    terms: Terms,
) -> str:
    if shape.max_context - l_in < 1:
        return "the prompt leaves no room in the context to generate"
    one_token = min(request_cost(shape, hardware, 1, l_in, 1, kv, block_size if kv is not None else None, terms).total for kv in options)
    return f"a budget of {budget_eflops:.4g} eFLOPs does not pay for one token of one sample ({one_token:.4g})"


def _reason(best: Considered, feasible: Sequence[Considered], grid: Sequence[Candidate], table: AccuracyModel | None) -> str:
    grid_cells = {c.cell for c in grid}
    if not any(c.candidate.cell in grid_cells for c in feasible):
        return "no configuration on the grid fits the budget: one sample at the longest length it buys"
    observed = len(table) if isinstance(table, AccuracyTable) else 0
    evidence = f"a table of {observed} observations" if observed else "the prior"
    affordable = f"{len(feasible)} affordable configurations"
    return f"highest predicted accuracy ({best.accuracy:.3f}) of {affordable}, from {evidence}"


def _plan(best: Considered, reason: str) -> Plan:
    k = best.candidate
    return Plan(
        n=k.n,
        max_tokens=k.max_tokens,
        kv_budget=k.kv_budget,
        block_size=k.block_size,
        predicted_eflops=k.predicted_eflops,
        predicted_accuracy=best.accuracy,
        reason=reason,
        worst_eflops=k.worst_eflops,
    )

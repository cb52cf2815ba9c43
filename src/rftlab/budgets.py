"""Difficulty-aware sampling budgets (DART-Math): paths drawn in rounds until a problem has enough checked ones.

Under a budget (`rftlab sample --until-correct N --max-k K`), every problem draws k paths a round, its sample
indices continuing from the last round's (round r draws indices r*k .. r*k+k-1, the keys a uniform run with
k = K draws), until it holds N *checked* paths (the answer right by the paper's rule and every calculator
annotation checking: what `rftlab reject` keeps before de-duplication) or K paths in all; the last round draws
what is left of K. Easy problems stop early; the paths saved go to the hard ones, unlike the paper's uniform
k. With the hf backend a path is a function of its key alone, so a budget run holds, for every problem, a
prefix of what a uniform run with k = K draws: `budget_prefix` finds that prefix in a uniform file, which gives
the budget's samples without sampling again. Pure Python: neither torch nor transformers is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rftlab.answers import extract_answer, same_number
from rftlab.calculator import equation_key
from rftlab.data import DataError, Problem, atomic_writer, iter_jsonl

FORMAT = "rftlab.budget-stats/1"
CHECKER = "paper+calculator"
"""What counts as a checked path (recorded in a budget run's metadata)."""


@dataclass(frozen=True)
class Budget:
    """Draw until `until_correct` checked paths, or `max_k` paths, per problem."""

    until_correct: int
    max_k: int

    def validate(self, k: int) -> None:
        """ValueError naming the option when the budget cannot run with rounds of k paths."""
        if self.until_correct < 1:
            raise ValueError(f"--until-correct must be at least 1, got {self.until_correct}")
        if self.max_k < k:
            raise ValueError(f"--max-k {self.max_k} is below -k {k} (the paths a problem draws a round)")

    def next_round(self, drawn: int, checked: int, k: int) -> int:
        """How many paths a problem that has drawn `drawn` (`checked` of them checked) draws next: 0 when done."""
        if checked >= self.until_correct or drawn >= self.max_k:
            return 0
        return min(k, self.max_k - drawn)


def is_checked(response: str, answer: str) -> bool:
    """The answer is right (the paper's rule) and every calculator annotation checks."""
    return same_number(extract_answer(response), answer) and equation_key(response) is not None


def budget_prefix(checks: Sequence[bool], budget: Budget, k: int) -> tuple[int, bool]:
    """How many leading paths of a problem's `checks` (in sample order) a budget run draws, and whether the run
    ends there (False: `checks` ran out before the budget did)."""
    drawn = checked = 0
    while (more := budget.next_round(drawn, checked, k)) > 0:
        if drawn + more > len(checks):
            return drawn, False
        checked += sum(checks[drawn : drawn + more])
        drawn += more
    return drawn, True


def is_complete(checks: Sequence[bool], budget: Budget, k: int) -> bool:
    """Whether a problem's paths are exactly those of a finished budget run (not one cut off by a kill)."""
    drawn, finished = budget_prefix(checks, budget, k)
    return finished and drawn == len(checks)


def budget_samples(
    problems: Sequence[Problem], samples: str | os.PathLike[str], out: str | os.PathLike[str], budget: Budget, k: int
) -> dict[str, Any]:
    """Writes to `out` the paths a budget run draws, found in a uniform run's samples file (each problem's
    `budget_prefix` of its lines, in problem order); returns what that spends and finds (docs/formats.md)."""
    budget.validate(k)
    lines: dict[str, list[dict[str, Any]]] = {problem.id: [] for problem in problems}
    for number, record in iter_jsonl(samples):
        paths = lines.get(record.get("id"))  # type: ignore[arg-type]
        if paths is None:
            raise DataError(samples, number, f"no problem with id {record.get('id')!r} in the train file")
        if not isinstance(record.get("response"), str):
            raise DataError(samples, number, "response: expected a string")
        paths.append(record)
    drawn, checked, short = [], [], 0
    with atomic_writer(out) as handle:
        for problem in problems:
            checks = [is_checked(record["response"], problem.answer) for record in lines[problem.id]]
            count, finished = budget_prefix(checks, budget, k)
            short += not finished
            drawn.append(count)
            checked.append(sum(checks[:count]))
            handle.write(b"".join(orjson.dumps(record) + b"\n" for record in lines[problem.id][:count]))
    return _statistics(budget, k, drawn, checked, short)


def _statistics(budget: Budget, k: int, drawn: list[int], checked: list[int], short: int) -> dict[str, Any]:
    n = max(len(drawn), 1)
    return {"format": FORMAT, "until_correct": budget.until_correct, "max_k": budget.max_k, "round": k,
            "checker": CHECKER, "problems": len(drawn), "paths": sum(drawn), "paths_per_problem": sum(drawn) / n,
            "checked_per_problem": sum(checked) / n, "coverage": sum(c > 0 for c in checked) / n,
            "at_cap": sum(count >= budget.max_k for count in drawn), "short": short}  # fmt: skip

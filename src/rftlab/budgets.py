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

from collections.abc import Sequence
from dataclasses import dataclass

from rftlab.answers import extract_answer, same_number
from rftlab.reject import equation_key

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

"""`rftlab checkers`: how often each checker accepts an unsound path or rejects a sound one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, RUNTIME, Job, option

CHECKER_NAMES = ("answer", "paper", "math-verify", "math-verify+calculator")
"""`rftlab.checkers.CHECKERS`, named here so that the command line does not import the checkers."""


@dataclass(frozen=True, kw_only=True)
class CheckersJob(Job):
    """Measures each checker's false-positive and false-negative rates on labelled paths."""

    COMMAND = "checkers"
    HELP = "false-positive and false-negative rates of the answer checkers on labelled paths"
    DESCRIPTION = (
        "Labels paths as sound or not and measures which each checker (a verifier, with the calculator check or "
        "without) accepts: toy-world samples (--world and --samples), labelled by the world's solver, and GSM8K "
        "gold solutions with perturbations (--gsm8k): the answer restated, a wrong answer, an annotation that "
        "does not check. Reports, per corpus, each checker's false-positive and false-negative rates, its "
        "precision and its acceptance of each kind of path."
    )

    world: Path | None = option(None, "a toy world folder (rftlab toyworld) whose problems were sampled", kind=IO,
                                metavar="DIR")  # fmt: skip
    samples: tuple[Path, ...] = option((), "sample files drawn on the world's problems", kind=IO, nargs="+",
                                       metavar="SAMPLES.jsonl")  # fmt: skip
    gsm8k: Path | None = option(None, "GSM8K-format problems (query, response) whose gold solutions are perturbed",
                                kind=IO, metavar="PROBLEMS.jsonl")  # fmt: skip
    n_gsm8k: int = option(200, "GSM8K problems drawn", flag="--gsm8k-problems", metavar="N", within=AT_LEAST_ONE)
    checkers: tuple[str, ...] = option(CHECKER_NAMES, "the checkers measured", nargs="+", choices=CHECKER_NAMES)
    seed: int = option(0, "seed of the GSM8K draw", within=NON_NEGATIVE)
    out: Path | None = option(None, "write the rates as JSON", kind=IO, metavar="RATES.json", writes="json")
    quiet: bool = option(False, "no table", kind=RUNTIME, short="-q")

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.world) != bool(self.samples):
            raise ValueError("--world and --samples: give both (toy-world samples and their world) or neither")
        if not self.world and not self.gsm8k:
            raise ValueError("--world/--samples or --gsm8k: give at least one corpus")

    def libraries(self) -> tuple[str, ...]:
        return ("math-verify",) if any(name.startswith("math-verify") for name in self.checkers) else ()

    def run(self) -> dict[str, Any]:
        from rftlab.checkers import gsm8k_corpus, rates, toy_corpus
        from rftlab.data import read_problems, write_json

        corpora = {}
        if self.world:
            corpora["toy"] = toy_corpus(self.world, self.samples)
        if self.gsm8k:
            corpora["gsm8k"] = gsm8k_corpus(read_problems(self.gsm8k), self.n_gsm8k, self.seed)
        result = rates(corpora, self.checkers)
        if self.out:
            write_json(self.out, result)
        return result

    def message(self, result: dict[str, Any]) -> str | None:
        from rftlab.checkers import table

        if self.quiet:
            return None
        return table(result) + (f"\nwrote {self.out}" if self.out else "")

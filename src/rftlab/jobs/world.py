"""`rftlab toyworld`: a toy-world data set (train, test, pre-training corpus)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, Job, Range, option
from rftlab.toyworld import DEFAULT_CONFIG, DEFAULT_CORPUS_DOCS, SURFACES


def parse_people(text: str) -> tuple[int, ...]:
    """A comma-separated mix of people per problem, e.g. 2,3,3."""
    try:
        people = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of counts, e.g. 2,3") from None
    return people


@dataclass(frozen=True, kw_only=True)
class WorldJob(Job):
    """Generates the toy world's problems and corpus into `out`."""

    COMMAND = "toyworld"
    HELP = "generate a toy-world data set (train, test, pre-training corpus)"
    DESCRIPTION = (
        "Generate GSM-style problems whose quantities form a small dependency graph, with calculator-annotated "
        "solutions (one randomly drawn strategy each), a test split disjoint by a hash of each problem, and a "
        "pre-training corpus that never contains a train or test question."
    )

    out: Path = option(help="output folder", kind=IO, metavar="DIR", writes="world")
    n_train: int = option(4000, "train problems", within=AT_LEAST_ONE)
    n_test: int = option(500, "test problems", within=AT_LEAST_ONE)
    n_valid: int = option(0, "validation problems, held out from training for checkpoint selection (valid.jsonl)",
                          within=NON_NEGATIVE)  # fmt: skip
    seed: int = option(0, "seed", within=NON_NEGATIVE)
    surface: str = option(DEFAULT_CONFIG.surface, "text style", choices=SURFACES)
    canonical: bool = option(False, "one fixed solution strategy (no path diversity)")
    people: tuple[int, ...] = option(DEFAULT_CONFIG.people, "mix of people per problem", parse=parse_people,
                                     show=lambda people: ",".join(map(str, people)), within=Range(2))  # fmt: skip
    cost_share: float = option(DEFAULT_CONFIG.cost_share, "share of cost questions", within=Range(0, 1))
    distractors: int = option(DEFAULT_CONFIG.distractors, "most distractor facts", within=NON_NEGATIVE)
    corpus_docs: int = option(DEFAULT_CORPUS_DOCS, "pre-training documents", within=NON_NEGATIVE)
    corpus_solved: int = option(0, "solved total and cost questions (fresh problems) added to the pre-training "
                                "corpus: a base that has seen the task", within=NON_NEGATIVE)  # fmt: skip

    def config(self):
        from rftlab.toyworld import WorldConfig

        return WorldConfig(people=self.people, cost_share=self.cost_share, distractors=self.distractors,
                           surface=self.surface, canonical=self.canonical)  # fmt: skip

    def recorded(self) -> dict[str, Any]:
        """What toyworld.json records of these settings: another world's folder is told apart by it."""
        recorded = {"seed": self.seed, "train": self.n_train, "test": self.n_test, "config": asdict(self.config()),
                    "pretrain_solved": self.corpus_solved}  # fmt: skip
        return {**recorded, "valid": self.n_valid} if self.n_valid else recorded

    def run(self) -> dict[str, Any]:
        from rftlab.toyworld import write_toyworld

        return write_toyworld(self.out, self.n_train, self.n_test, self.seed, self.config(), self.corpus_docs,
                              n_valid=self.n_valid, corpus_solved=self.corpus_solved)  # fmt: skip

    def message(self, result: dict[str, Any]) -> str:
        valid = f", {result['valid']:,} validation" if result.get("valid") else ""
        corpus = f"{result['pretrain_docs']:,} documents ({result['pretrain_chars']:,} characters)"
        return f"{self.out}: {result['train']:,} train{valid} and {result['test']:,} test problems, corpus of {corpus}"

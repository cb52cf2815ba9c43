"""`rftlab budget`: the paths a difficulty-aware budget draws, found in a uniform run's samples (no sampling)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, RUNTIME, Job, option


@dataclass(frozen=True, kw_only=True)
class BudgetJob(Job):
    """Writes to `out` each problem's paths that `sample --until-correct N --max-k K` would draw, from `samples`."""

    COMMAND = "budget"
    HELP = "the paths a difficulty-aware budget draws, taken from a uniform run's samples"
    DESCRIPTION = (
        "With the hf backend a path is a function of its problem, sample index and seed, so a run of "
        "`rftlab sample --until-correct N --max-k K -k R` draws, for every problem, a prefix of what a uniform run "
        "with k >= K draws. This finds that prefix in a uniform samples file (rounds of R paths until N are checked: "
        "right answer, every annotation checks; or K in all) and writes it, as rftlab sample would, with what it "
        "spends and finds. Compare budgets at equal sampling compute without sampling again."
    )

    samples: Path = option(help="a uniform run's samples (k >= --max-k per problem)", kind=IO, positional=True,
                           metavar="SAMPLES.jsonl")  # fmt: skip
    train: Path = option(help="the problems that were sampled", kind=IO, metavar="TRAIN.jsonl")
    out: Path = option(help="the budget run's samples", kind=IO, metavar="BUDGET.jsonl", writes="samples")
    stats: Path | None = option(None, "also write what it spends and finds as JSON", kind=IO, metavar="STATS.json",
                               writes="json")  # fmt: skip
    k: int = option(4, "paths a problem draws a round", flag="-k", within=AT_LEAST_ONE)
    until_correct: int = option(help="stop a problem once it has N checked paths", metavar="N", within=AT_LEAST_ONE)
    max_k: int = option(help="the most paths a problem draws", metavar="K", within=AT_LEAST_ONE)
    quiet: bool = option(False, "no summary", kind=RUNTIME, short="-q")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.budget().validate(self.k)

    def budget(self):
        from rftlab.budgets import Budget

        return Budget(self.until_correct, self.max_k)

    def run(self) -> dict[str, Any]:
        from dataclasses import asdict

        from rftlab.budgets import CHECKER, budget_samples
        from rftlab.data import metadata_path, read_problems, write_json

        source = self._source_metadata()
        problems = read_problems(self.train)
        budget = {**asdict(self.budget()), "checker": CHECKER}  # as `rftlab sample --until-correct` records it
        settings = {**(source.get("settings") or {}), "k": self.k}
        metadata = {**source, "settings": settings, "budget": budget, "found_in": str(self.samples)}
        write_json(metadata_path(self.out), metadata)  # first: the file beside it marks the samples as rftlab's
        stats = budget_samples(problems, self.samples, self.out, self.budget(), self.k)
        write_json(metadata_path(self.out), {**metadata, "paths": stats["paths"]})
        if self.stats:
            write_json(self.stats, stats)
        return stats

    def _source_metadata(self) -> dict[str, Any]:
        """The uniform run's recorded settings; ValueError when they show it cannot hold the budget's paths."""
        from rftlab.data import metadata_path, read_json

        meta_file = metadata_path(self.samples)
        if not meta_file.is_file():
            return {}
        source = read_json(meta_file)
        if not isinstance(source, dict):
            raise ValueError(f"{meta_file}: expected a JSON object")
        if source.get("budget"):
            raise ValueError(f"{self.samples}: a budget run's samples (not k paths for every problem)")
        k = (source.get("settings") or {}).get("k")
        if isinstance(k, int) and k < self.max_k:
            raise ValueError(f"--max-k {self.max_k} is above the k={k} paths per problem of {self.samples}")
        return source

    def message(self, result: dict[str, Any]) -> str | None:
        if self.quiet:
            return None
        short = f"; {result['short']} problem(s) ran out of paths first" if result["short"] else ""
        return (f"{self.out}: {result['paths']:,} paths, {result['paths_per_problem']:.2f} per problem (rounds of "
                f"{self.k} until {self.until_correct} checked, at most {self.max_k}); coverage "
                f"{100 * result['coverage']:.1f}%, {result['checked_per_problem']:.2f} checked paths per problem"
                f"{short}")  # fmt: skip

"""`rftlab forecast`: coverage and distinct correct paths at large k, from the samples already drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS
from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, RUNTIME, Job, Range, option


@dataclass(frozen=True, kw_only=True)
class ForecastJob(Job):
    """Forecasts from the first `fit_k` paths of each problem what `k` paths would give."""

    COMMAND = "forecast"
    HELP = "forecast coverage and distinct correct paths at large k from small-k samples"
    DESCRIPTION = (
        "Fits each problem's rate of correct paths (answer right, every annotation checking) with a beta-binomial "
        "and the way its correct paths fall into equation lists with a Pitman-Yor process, from its first --fit-k "
        "paths, and forecasts the share of problems with a correct path and the distinct correct paths per problem "
        "at each --k, with bootstrap intervals over the problems; where the files hold k paths of every problem, "
        "also the observed values and the errors. Decide k before paying for it."
    )

    samples: tuple[Path, ...] = option(help="sample files, in sampling order (pooled)", kind=IO, positional=True,
                                       metavar="SAMPLES.jsonl")  # fmt: skip
    train: Path = option(help="the problems that were sampled", kind=IO, metavar="TRAIN.jsonl")
    k: tuple[int, ...] = option(help="the sample counts to forecast, each above --fit-k", flag="--k", nargs="+",
                                within=AT_LEAST_ONE)  # fmt: skip
    fit_k: int | None = option(None, "fit on each problem's first N paths (default: as many as every problem has)",
                               metavar="N", within=AT_LEAST_ONE)  # fmt: skip
    out: Path | None = option(None, "write the forecast as JSON", kind=IO, metavar="FORECAST.json", writes="json")
    resamples: int = option(200, "bootstrap resamples of the problems", within=Range(10))
    level: float = option(0.95, "interval coverage", within=Range(0, 1, low_open=True, high_open=True))
    seed: int = option(0, "seed of the bootstrap", within=NON_NEGATIVE)
    extractor: str = option(DEFAULT_EXTRACTOR, "final-answer extractor", choices=tuple(sorted(EXTRACTORS)))
    quiet: bool = option(False, "no table", kind=RUNTIME, short="-q")

    def run(self) -> dict[str, Any]:
        from rftlab.data import read_problems, write_json
        from rftlab.forecast import forecast, read_draws

        draws = read_draws(read_problems(self.train), self.samples, self.extractor)
        result = forecast(draws, sorted(set(self.k)), fit_k=self.fit_k, resamples=self.resamples, seed=self.seed,
                          level=self.level)  # fmt: skip
        if self.out:
            write_json(self.out, result)
        return result

    def message(self, result: dict[str, Any]) -> str | None:
        from rftlab.forecast import table

        if self.quiet:
            return None
        return table(result) + (f"\nwrote {self.out}" if self.out else "")

"""`rftlab reject`: keep the correct, checked, distinct paths (the paper's Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS
from rftlab.jobs.base import AT_LEAST_ONE, IO, RUNTIME, Job, option
from rftlab.verifiers import VERIFIERS


@dataclass(frozen=True, kw_only=True)
class RejectJob(Job):
    """Selects RFT data from sample files (pooled, in order) for the problems of `train`."""

    COMMAND = "reject"
    HELP = "rejection sampling: keep correct, checked, distinct paths"
    DESCRIPTION = (
        "Keep the sampled paths whose answer is right and whose every <<lhs=rhs>> annotation checks; keep one path "
        "per equation list (the farthest by edit distance, the paper's Algorithm 1). Several sample files are pooled "
        "(the union of models) before selection."
    )
    LIBRARIES = ("rapidfuzz",)

    samples: tuple[Path, ...] = option(help="sample files, in sampling order", kind=IO, positional=True,
                                       metavar="SAMPLES.jsonl")  # fmt: skip
    train: Path = option(help="the problems that were sampled", kind=IO, metavar="TRAIN.jsonl")
    out: Path = option(help="RFT data: gold, then selected paths", kind=IO, metavar="RFT.jsonl", writes="rft")
    stats: Path | None = option(None, "also write the statistics as JSON", kind=IO, metavar="STATS.json",
                               writes="json")  # fmt: skip
    no_dedup: bool = option(False, "keep every correct, checked path")
    first_k: int | None = option(None, "use only the first K paths of each problem per file", metavar="K",
                                 within=AT_LEAST_ONE)  # fmt: skip
    extractor: str = option(DEFAULT_EXTRACTOR, "final-answer extractor", choices=tuple(sorted(EXTRACTORS)))
    verifier: str = option("paper", "what makes an answer right: the paper's (the extracted number equals the gold) "
                           "or math-verify's (symbolic, on the whole text, a hard timeout per verdict)",
                           choices=VERIFIERS)  # fmt: skip
    no_calculator_check: bool = option(False, "keep a path with the right answer whatever its <<lhs=rhs>> "
                                       "annotations compute (the paper checks them)")  # fmt: skip
    quiet: bool = option(False, "no progress bar, no summary", kind=RUNTIME, short="-q")

    def libraries(self) -> tuple[str, ...]:
        return (*self.LIBRARIES, "math-verify") if self.verifier == "math-verify" else self.LIBRARIES

    def run(self) -> dict[str, Any]:
        from rftlab.data import read_problems, write_json, write_jsonl
        from rftlab.reject import reject, statistics

        result = reject(read_problems(self.train), self.samples, dedup=not self.no_dedup, extractor=self.extractor,
                        first_k=self.first_k, verifier=self.verifier, check_calculator=not self.no_calculator_check,
                        show_progress=False if self.quiet else None)  # fmt: skip
        stats = statistics(result)
        lines = write_jsonl(self.out, result.records())
        if self.stats:
            write_json(self.stats, stats)
        return {**stats, "lines": lines}

    def message(self, result: dict[str, Any]) -> str | None:
        from rftlab.reject import summary

        if self.quiet:
            return None
        stats = {key: value for key, value in result.items() if key != "lines"}
        written = f"wrote {self.out} ({result['lines']:,} lines)" + (f" and {self.stats}" if self.stats else "")
        return f"{summary(stats)}\n{written}"

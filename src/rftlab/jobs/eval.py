"""`rftlab eval`: maj1@1, maj1@k and pass@k of a model, or the scores of existing samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS
from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, option
from rftlab.jobs.sampling import SamplingOptions, train_beside


@dataclass(frozen=True, kw_only=True)
class EvalJob(SamplingOptions):
    """Greedy maj1@1 (and maj1@k, pass@k from k samples) of a model, or the scores of sample files."""

    COMMAND = "eval"
    HELP = "maj1@1 (greedy), maj1@k and pass@k of a model, or scores of existing samples"
    DESCRIPTION = (
        "With --model: greedy maj1@1 on the problems and, with -k, maj1@k (majority vote, ties to the answer seen "
        "first) and unbiased pass@k from k samples. With --samples: scores paths that already exist."
    )

    model: str | None = option(None, "checkpoint folder, hub id or .gguf", kind=IO, metavar="CKPT", exclusive="source")
    samples: tuple[Path, ...] = option((), "existing sample files", kind=IO, metavar="SAMPLES.jsonl",
                                       exclusive="source", nargs="+")  # fmt: skip
    data: Path = option(help="problems", kind=IO, metavar="TEST.jsonl")
    out: Path = option(help="summary JSON", kind=IO, metavar="EVAL.json", writes="json")
    k: int | None = option(None, "samples per problem for maj1@k and pass@k", flag="-k", within=AT_LEAST_ONE)
    temperature: float = option(0.7, "for the k samples (default 0.7)", within=NON_NEGATIVE)
    extractor: str = option(DEFAULT_EXTRACTOR, "answer rule", choices=tuple(sorted(EXTRACTORS)))
    shots: int = option(0, "solved examples before each question (ICL; paper: 8)", within=NON_NEGATIVE)
    shots_from: Path | None = option(None, "examples' file (default: train.jsonl beside --data); its first N "
                                     "problems are the examples", kind=IO, metavar="TRAIN.jsonl")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.model is None) == (not self.samples):
            raise ValueError("give one of --model and --samples")

    def identity(self) -> dict[str, Any]:
        """A greedy evaluation (no k) does not depend on the seed or the temperature: they are left out."""
        identity = super().identity()
        if not self.k or self.k < 2:
            identity.pop("seed")
            identity.pop("temperature")
        return identity

    def outputs(self) -> list[tuple[str, Path, str]]:
        """The summary and the predictions beside it."""
        from rftlab.evaluate import predictions_path

        return [*super().outputs(), ("--out's predictions", predictions_path(self.out), "file")]

    def run(self) -> dict[str, Any]:
        from rftlab.evaluate import evaluate_model, evaluate_sample_files

        if self.samples:
            return evaluate_sample_files(self.data, self.samples, self.out, self.extractor, self.k)
        sampling = {"top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                    "template": self.resolved_template(self.model), "batch_size": self.batch_size}  # fmt: skip
        return evaluate_model(
            self.model, self.data, self.out, k=self.k, temperature=self.temperature, seed=self.seed,
            extractor=self.extractor, sampling=sampling, shots=self.shots,
            shots_from=self.shots_from or train_beside(self.data), backend=self.backend_settings(),
            show_progress=self.progress(),
        )  # fmt: skip

    def message(self, result: dict[str, Any]) -> str:
        from rftlab.evaluate import summary_table

        return summary_table(result)

"""`rftlab sample`: k reasoning paths per problem, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, main_process, option
from rftlab.jobs.sampling import SamplingOptions


def parse_shard(text: str) -> tuple[int, int]:
    """I/N, 0 <= I < N."""
    index, _, shards = text.partition("/")
    if not (index.isdigit() and shards.isdigit() and int(index) < int(shards)):
        raise ValueError(f"{text!r} is not I/N with 0 <= I < N")
    return int(index), int(shards)


@dataclass(frozen=True, kw_only=True)
class SampleJob(SamplingOptions):
    """Samples k paths per problem of `data` from `model` into `out`."""

    COMMAND = "sample"
    HELP = "sample k reasoning paths per problem (resumable)"
    DESCRIPTION = (
        "Sample k reasoning paths per problem. Paths are appended a batch of problems at a time; rerunning the same "
        "command after an interruption continues where it stopped and gives the same file. With "
        "--data-parallel-size N, N worker processes sample every N-th batch each into a shard file (OUT.shardIofN) "
        "and the shards are merged into the file one process writes; under `accelerate launch`, ranks do the same. "
        "--shard I/N samples shard I only and leaves its file (one node each on a shared filesystem, say); the same "
        "command with --data-parallel-size N instead of --shard then merges the complete shards and samples those "
        "missing or unfinished. With --until-correct N --max-k K (difficulty-aware budgets), each problem draws "
        "k paths a round until N of them are checked (right answer, every annotation checks) or it has K."
    )

    model: str = option(help="checkpoint folder, hub id or .gguf", kind=IO, metavar="CKPT")
    data: Path = option(help="problems", kind=IO, metavar="TRAIN.jsonl")
    out: Path = option(help="sample file", kind=IO, metavar="SAMPLES.jsonl", writes="samples")
    k: int = option(1, "paths per problem", flag="-k", within=AT_LEAST_ONE)
    temperature: float = option(0.7, "0 is greedy (default 0.7, the paper's)", within=NON_NEGATIVE)
    label: str | None = option(None, "the `model` field of the records (default: the checkpoint's name)")
    shard: tuple[int, int] | None = option(None, "sample shard I of N only (0 <= I < N)", metavar="I/N",
                                           parse=parse_shard, show=lambda s: f"{s[0]}/{s[1]}")  # fmt: skip
    until_correct: int | None = option(None, "draw k paths a round until a problem has N checked paths (or K: "
                                       "--max-k); default: k paths for every problem", metavar="N",
                                       within=AT_LEAST_ONE)  # fmt: skip
    max_k: int | None = option(None, "with --until-correct: the most paths a problem draws", metavar="K",
                               within=AT_LEAST_ONE)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.until_correct is None) != (self.max_k is None):
            raise ValueError("--until-correct and --max-k go together")
        budget = self.budget()
        if budget is not None:
            budget.validate(self.k)

    def budget(self):
        """The difficulty-aware budget (`rftlab.budgets`), or None for k paths per problem."""
        if self.until_correct is None or self.max_k is None:
            return None
        from rftlab.budgets import Budget

        return Budget(self.until_correct, self.max_k)

    def settings(self):
        """The sampling settings of this job (the template resolved against the model)."""
        from rftlab.sample import SamplingSettings

        return SamplingSettings(k=self.k, temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                max_new_tokens=self.max_new_tokens, template=self.resolved_template(self.model),
                                batch_size=self.batch_size)  # fmt: skip

    def outputs(self) -> list[tuple[str, Path, str]]:
        """The sample file, or with --shard the shard's file."""
        if self.shard is None:
            return super().outputs()
        from rftlab.sample import shard_path

        return [("--out", shard_path(self.out, *self.shard), "samples")]

    def run(self) -> dict[str, Any]:
        from rftlab.sample import run_sampling

        return run_sampling(self.model, self.data, self.out, self.settings(), self.backend_settings(),
                            label=self.label, shard=self.shard, show_progress=self.progress(),
                            budget=self.budget())  # fmt: skip

    def message(self, result: dict[str, Any]) -> str | None:
        if self.shard:
            from rftlab.sample import shard_path

            index, shards = self.shard
            return (f"{shard_path(self.out, index, shards)}: shard {index} of {shards}, {self.k} path(s) per problem; "
                    f"merge with the same command with --data-parallel-size {shards} instead of --shard")  # fmt: skip
        if not main_process():
            return None
        if self.until_correct is not None:
            paths, problems = result.get("paths", 0), max(result.get("problems", 0), 1)
            return (f"{self.out}: {paths:,} paths, {paths / problems:.2f} per problem (rounds of {self.k} until "
                    f"{self.until_correct} checked, at most {self.max_k})")  # fmt: skip
        return f"{self.out}: {self.k} path(s) per problem"

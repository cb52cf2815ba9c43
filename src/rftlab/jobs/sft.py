"""`rftlab sft`: supervised fine-tuning with the loss on the response only (full or LoRA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.data import TEMPLATE_CHOICES
from rftlab.jobs.base import AT_LEAST_ONE, IO, NON_NEGATIVE, POSITIVE, Range, main_process, option
from rftlab.jobs.training import TrainingOptions
from rftlab.train import DTYPES, RECIPES

LORA = "LoRA (needs peft: pip install 'rftlab[lora]')"
SELECTION = "checkpoint selection (the best on problems held out from the train set, never the test set)"


@dataclass(frozen=True, kw_only=True)
class SftJob(TrainingOptions):
    """Fine-tunes `model` on `data` into `out`."""

    COMMAND = "sft"
    HELP = "supervised fine-tuning, loss on the response only"
    DESCRIPTION = (
        "Fine-tune a model on a problem file (GSM8K-style or RFT data) with the loss on the response and EOS only. "
        "Toy checkpoints default to a toy recipe (budget 3M tokens; lr 3e-4 for a base that has seen the task), other "
        "models to the paper's (3 epochs, "
        "global batch 128, lr 2e-5, 3% warm-up, cosine). Resumes if interrupted. With --lora-r, trains LoRA "
        "adapters (PEFT) and saves the base with them merged in, a plain checkpoint, and the adapter in OUT/adapter."
    )

    model: str = option(help="checkpoint folder, hub id or .gguf", kind=IO, metavar="CKPT_OR_HF_ID")
    data: Path = option(help="problems or RFT data", kind=IO, metavar="TRAIN.jsonl")
    out: Path = option(help="checkpoint folder", kind=IO, metavar="CKPT", writes="checkpoint")
    tokens_of: Path | None = option(None, "budget: as many tokens as this checkpoint saw (a compute-matched "
                                    "control)", kind=IO, metavar="CKPT", exclusive="budget")  # fmt: skip
    recipe: str | None = option(None, "settings to start from (default: paper; for a toy base, toy-finetune if "
                                "its corpus held solved task questions, else toy-sft)",
                                choices=tuple(r for r in RECIPES if "pretrain" not in r))  # fmt: skip
    template: str | None = option(None, "prompt template (chat: the tokenizer's)", choices=TEMPLATE_CHOICES)
    max_length: int | None = option(None, "longest example in tokens", within=Range(2))
    dtype: str = option("float32", "weights' dtype (auto: the checkpoint's)", choices=DTYPES)
    validation: Path | None = option(
        None,
        "held-out problems: keep the best checkpoint on them within the budget (default: the last)",
        kind=IO,
        metavar="VALID.jsonl",
        group=SELECTION,
    )
    select: str = option(
        "accuracy",
        "what decides the best: greedy accuracy, or the loss on the responses (loss: needed under FSDP and DeepSpeed)",
        choices=("accuracy", "loss"),
        group=SELECTION,
    )
    eval_every: int | None = option(None, "optimiser steps between measurements (default: one epoch); the last "
                                    "step is always measured", group=SELECTION, exclusive="measure",
                                    within=AT_LEAST_ONE)  # fmt: skip
    eval_count: int | None = option(None, "measurements, evenly over the budget (instead of --eval-every)",
                                    group=SELECTION, exclusive="measure", within=AT_LEAST_ONE)  # fmt: skip
    lora_r: int = option(0, "adapter rank (default 0: full fine-tuning)", group=LORA, within=NON_NEGATIVE)
    lora_alpha: float | None = option(None, "scale numerator: updates scaled by alpha/r (default 2 r)", group=LORA,
                                      within=POSITIVE)  # fmt: skip
    lora_dropout: float | None = option(None, "dropout on the adapters' input (default 0.05)", group=LORA,
                                        within=Range(0, 1, high_open=True))  # fmt: skip
    lora_targets: str | None = option(None, "adapted modules: all-linear (default: every linear layer but the output "
                                      "head) or names, e.g. q_proj,v_proj", group=LORA)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokens_of is not None and (self.tokens is not None or self.epochs is not None):
            raise ValueError("give one of --tokens, --epochs and --tokens-of")
        self.lora()
        self.selection()

    def selection(self):
        """Validation settings from `--validation`, `--select`, `--eval-every`, `--eval-count` (None: the last)."""
        from rftlab.validation import Validation

        if self.validation is None:
            if self.eval_every is not None or self.eval_count is not None or self.select != "accuracy":
                raise ValueError("--select, --eval-every and --eval-count need --validation")
            return None
        return Validation(self.validation, self.select, self.eval_every, self.eval_count)

    def lora(self):
        """LoRA settings from `--lora-*` (None: full fine-tuning); alpha defaults to 2 r."""
        from rftlab.train import Lora

        given = {key: getattr(self, f"lora_{key}") for key in ("alpha", "dropout", "targets")}
        given = {key: value for key, value in given.items() if value is not None}
        if not self.lora_r:
            if given:
                raise ValueError("--lora-alpha, --lora-dropout and --lora-targets need --lora-r")
            return None
        return Lora(r=self.lora_r, **{"alpha": 2.0 * self.lora_r, **given})

    def libraries(self) -> tuple[str, ...]:
        return (*self.LIBRARIES, *(("peft",) if self.lora_r else ()))

    def run(self) -> dict[str, Any]:
        from rftlab.models import read_metadata
        from rftlab.train import default_recipe, sft

        extra = {key: getattr(self, key) for key in ("template", "max_length")}
        name, job = self.recipe or default_recipe(self.model), self
        if self.tokens_of is not None:
            seen = read_metadata(self.tokens_of).get("tokens_seen")
            if seen is None:
                raise ValueError(f"--tokens-of {self.tokens_of}: no rftlab.json with tokens_seen there")
            job = self.with_changes(tokens=seen, tokens_of=None)
        recipe = job.make_recipe(name, **extra)
        return sft(self.model, self.data, self.out, recipe=recipe, seed=self.seed, dtype=self.dtype, lora=self.lora(),
                   validation=self.selection(), overwrite=self.overwrite, show_progress=self.progress())  # fmt: skip

    def message(self, result: dict[str, Any]) -> str | None:
        if not main_process():
            return None
        text = (f"{self.out}: {result['examples']:,} examples, {result['steps']:,} steps, "
                f"{result['tokens_seen']:,} tokens, final training loss {result['train_loss']:.4f}")  # fmt: skip
        if "validation" in result:
            best, metric = result["validation"]["best"], result["validation"]["metric"]
            text += f"; kept step {best['step']:,} (epoch {best['epoch']:.2f}), validation {metric} {best[metric]:.4f}"
        return text

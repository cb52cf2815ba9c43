"""`rftlab pretrain`: a toy base model trained from scratch on a corpus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import IO, main_process, option
from rftlab.jobs.training import TrainingOptions
from rftlab.models import DEFAULT_PRESET, PRESETS


@dataclass(frozen=True, kw_only=True)
class PretrainJob(TrainingOptions):
    """Pre-trains a toy Llama of a preset size on `corpus` into `out` (toy default budget 5M tokens)."""

    COMMAND = "pretrain"
    HELP = "train a toy base model from scratch on a corpus"
    DESCRIPTION = (
        "Train a toy base model (a Llama of the given size, character tokenizer) from scratch; the held-out loss on "
        "the corpus is saved in OUT/rftlab.json. Resumes if interrupted."
    )

    corpus: Path = option(help="text, documents separated by blank lines", kind=IO)
    preset: str = option(DEFAULT_PRESET, "model size", choices=tuple(PRESETS))
    out: Path = option(help="checkpoint folder", kind=IO, metavar="CKPT", writes="checkpoint")

    def run(self) -> dict[str, Any]:
        from rftlab.train import pretrain

        recipe = self.make_recipe("toy-pretrain")
        return pretrain(self.corpus, self.out, preset=self.preset, recipe=recipe, seed=self.seed,
                        overwrite=self.overwrite, show_progress=self.progress())  # fmt: skip

    def message(self, result: dict[str, Any]) -> str | None:
        if not main_process():
            return None
        return (f"{self.out}: {result['parameters']:,} parameters, {result['tokens_seen']:,} tokens, "
                f"held-out loss {result['heldout_loss']:.4f}")  # fmt: skip

"""Checkpoint selection on a validation split: the best model within a training budget, and its curve.

Every `every` optimiser steps, or `count` times over the budget (default: once an epoch), and at the last
step, the model in training is scored on problems held out from the train set, never the test set: greedy
accuracy (the answers of the sampler's greedy paths) or the loss on the responses. The Trainer keeps the best
checkpoint (the earliest of equals) and loads it at the end; the curve goes into the checkpoint's metadata.
Under FSDP or DeepSpeed the weights are sharded and no process can decode alone, so there only the loss can
select.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab.data import Problem

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METRICS = ("accuracy", "loss")
_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""The sampler of each model in training, made at its first measurement."""


@dataclass(frozen=True)
class Validation:
    """Select by `metric` on the problems of `data`, measured every `every` optimiser steps, or `count` times
    evenly over the budget (neither: once an epoch)."""

    data: Path
    metric: str = "accuracy"
    every: int | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"--select must be one of {', '.join(METRICS)} (got {self.metric!r})")
        if self.every is not None and self.every < 1:
            raise ValueError(f"--eval-every must be at least 1 optimiser step (got {self.every})")
        if self.count is not None and self.count < 1:
            raise ValueError(f"--eval-count must be at least 1 (got {self.count})")
        if self.every is not None and self.count is not None:
            raise ValueError("give --eval-every or --eval-count, not both")

    def steps_between(self, total_steps: int, epoch_steps: int) -> int:
        """Optimiser steps between two measurements: `every`, else the budget over `count`, else an epoch's."""
        if self.count is not None:
            return max(1, -(-total_steps // self.count))
        return self.every or epoch_steps


@dataclass(frozen=True)
class Selection:
    """What training needs to select: the settings, the validation problems as examples (the loss's data) and
    the scorer of a model (None: select by the loss)."""

    validation: Validation
    examples: list[dict[str, list[int]]]
    score: Callable[[PreTrainedModel], float] | None


def greedy_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], template: str
) -> float:
    """Share of `problems` whose greedy path (the sampler's, as `rftlab eval` runs it) has the right answer."""
    from rftlab.answers import DEFAULT_EXTRACTOR, get_extractor, same_number
    from rftlab.backends.base import SamplingSettings
    from rftlab.backends.hf import HFBackend
    from rftlab.sample import chunks, sample_texts

    training = model.training
    if model not in _BACKENDS:  # once a run: the decoder's self-check and the newline tokens do not change
        _BACKENDS[model] = HFBackend(model, tokenizer)
    backend, settings = _BACKENDS[model], SamplingSettings(k=1, temperature=0.0, template=template)
    model.eval()
    extract, right = get_extractor(DEFAULT_EXTRACTOR), 0
    for chunk in chunks(len(problems), settings):
        batch = [problems[i] for i in chunk]
        for problem, (text,) in zip(batch, sample_texts(backend, batch, settings), strict=True):
            right += same_number(extract(text), problem.answer)
    model.train(training)
    return right / max(len(problems), 1)


def trainer_arguments(validation: Validation, every: int) -> dict[str, Any]:
    """TrainingArguments that measure every `every` steps, save there (the best must be a checkpoint) and load the
    best at the end."""
    return {
        "eval_strategy": "steps",
        "eval_steps": every,
        "save_steps": every,
        "load_best_model_at_end": True,
        "metric_for_best_model": validation.metric,
        "greater_is_better": validation.metric == "accuracy",
    }


def curve(log_history: Sequence[dict[str, Any]], metric: str, best_checkpoint: str | None) -> dict[str, Any]:
    """The validation curve (step, epoch, tokens seen, value) and the selected point, from the Trainer's log."""
    key = f"eval_{metric}"
    points = [
        {"step": entry["step"], "epoch": round(entry.get("epoch", 0.0), 4),
         "tokens_seen": entry.get("num_input_tokens_seen"), metric: entry[key]}
        for entry in log_history if key in entry
    ]  # fmt: skip
    best_step = int(best_checkpoint.rsplit("-", 1)[1]) if best_checkpoint else points[-1]["step"]
    best = next(point for point in points if point["step"] == best_step)
    return {"metric": metric, "curve": points, "best": best}

"""The options that `rftlab pretrain` and `rftlab sft` share: the budget and the optimiser's settings."""

from __future__ import annotations

from dataclasses import dataclass

from rftlab.jobs.base import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, RUNTIME, Job, main_process, option


@dataclass(frozen=True, kw_only=True)
class TrainingOptions(Job):
    """A token or epoch budget over a named recipe's settings (unset fields keep the recipe's)."""

    LIBRARIES = ("torch", "transformers", "accelerate")

    tokens: int | None = option(None, "budget in non-padding tokens seen", exclusive="budget", within=AT_LEAST_ONE)
    epochs: float | None = option(None, "budget in passes over the data", exclusive="budget", within=POSITIVE)
    lr: float | None = option(None, "peak learning rate", within=POSITIVE)
    batch_size: int | None = option(None, "global batch (examples per optimiser step)", within=AT_LEAST_ONE)
    device_batch: int | None = option(None, "examples per forward pass; the rest is accumulated", within=AT_LEAST_ONE)
    save_every: int | None = option(None, "optimiser steps between resumable checkpoints", within=AT_LEAST_ONE)
    log_every: int | None = option(None, "optimiser steps between logged losses", within=AT_LEAST_ONE)
    gradient_checkpointing: bool | None = option(
        None,
        "recompute activations in the backward pass: less memory (for 7B+ models), same result; under FSDP, "
        "fsdp_activation_checkpointing in the accelerate config does it without a redundant all-gather",
    )
    seed: int = option(0, "seed of initialisation and data order", within=NON_NEGATIVE)
    overwrite: bool = option(False, "train from scratch, replacing what OUT holds", kind=RUNTIME)
    quiet: bool = option(False, "no progress bar", kind=RUNTIME, short="-q")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gradient_checkpointing is False:  # the recipes' default; a flag can only say "on"
            object.__setattr__(self, "gradient_checkpointing", None)
        if self.tokens is not None and self.epochs is not None:
            raise ValueError("give --tokens or --epochs, not both")

    def make_recipe(self, name: str, **extra: object):
        """The named recipe with this job's settings over it."""
        from rftlab.train import recipe_with

        return recipe_with(name, learning_rate=self.lr, global_batch=self.batch_size, device_batch=self.device_batch,
                           save_every=self.save_every, log_every=self.log_every, epochs=self.epochs,
                           gradient_checkpointing=self.gradient_checkpointing, tokens=self.tokens,
                           **extra)  # fmt: skip

    def progress(self) -> bool | None:
        return False if self.quiet or not main_process() else None

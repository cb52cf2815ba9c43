"""The Hugging Face Trainer as rftlab runs it: checkpoint selection, a resume that equals the run it continues,
and checkpoints that say when they are whole.

- Selection: evaluation is a score of the model (greedy validation accuracy, `rftlab.validation`) or the
  Trainer's own loss.
- Exact resume. The length-grouped sampler draws each epoch's order from the global torch generator when
  the epoch starts; a run resumed mid-epoch starts that epoch with another generator state, so its order,
  and every weight after it, differed. Here each epoch's generator state is kept and saved with every
  checkpoint; a run resumed mid-epoch draws that epoch's order from it (HF restores the generator itself
  just after). The running loss total is saved and restored too, so the final training loss covers the
  whole run, and losses are logged at every checkpoint step, so the first interval logged after a resume is
  the one an uninterrupted run logs. An uninterrupted run draws, trains and logs as before.
- Whole checkpoints. After the Trainer has written a checkpoint, a manifest (`rftlab-checkpoint.json`: every
  file's size, the sampler's epoch and the loss total) is written last, atomically. A checkpoint without a
  manifest, or whose files do not match it (a kill or a full disk mid-save), is not resumed from
  (`complete_checkpoints`).
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab.data import DataError, read_json, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MANIFEST = "rftlab-checkpoint.json"
SAMPLER_STATE = "rftlab-sampler.pt"
MANIFEST_FORMAT = "rftlab.checkpoint-manifest/1"


def logging_interval(log_every: int, save_every: int) -> int:
    """Steps between logged losses: `log_every`, made to divide `save_every` (their gcd), so that every
    checkpoint falls on a logging step and a resumed run logs the intervals an uninterrupted one does."""
    return math.gcd(log_every, save_every)


def broken(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None: its manifest is there and every file matches)."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return "no manifest (a save that did not finish)"
    try:
        files = read_json(manifest)["files"]
    except (DataError, KeyError, TypeError):
        return f"{MANIFEST} cannot be read"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or not the size the manifest records"
    return None


def complete_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints in `folder` that can be resumed from, oldest first; a broken one is removed with a
    warning (the one before it, if any, is used instead)."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda path: int(path.name.rsplit("-", 1)[1]))
    complete = []
    for checkpoint in checkpoints:
        if (why := broken(checkpoint)) is None:
            complete.append(checkpoint)
            continue
        print(f"warning: {checkpoint}: {why}; not resumed from, removed", file=sys.stderr)
        shutil.rmtree(checkpoint)
    return complete


def _write_manifest(checkpoint: Path, extra: dict[str, Any]) -> None:
    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in sorted(checkpoint.rglob("*")) if p.is_file()}
    write_json(checkpoint / MANIFEST, {"format": MANIFEST_FORMAT, "files": files, **extra})


def rftlab_trainer(score: Callable[[PreTrainedModel], float] | None, **kwargs: Any) -> Any:
    """A Trainer whose evaluation is `score(model)` as `eval_accuracy` (None: the Trainer's own loss), and
    whose checkpoints carry what an exact resume needs (see the module's docstring)."""
    import torch
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochOrder(LengthGroupedSampler):
        """HF's length-grouped order, drawn as HF draws it, with the generator state of each draw kept."""

        drawn: Any = None
        """The generator state the current epoch's order was drawn from."""
        pending: Any = None
        """A saved state to draw the next epoch's order from (a resume mid-epoch)."""

        def __iter__(self):
            if self.pending is not None:
                generator = torch.Generator()
                generator.set_state(self.pending)
                self.drawn, self.pending = self.pending, None
                return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
            self.drawn = torch.get_rng_state()
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=None))

    class RestoreLoss(TrainerCallback):
        """Sets the running loss total to the checkpoint's once the Trainer has reset it."""

        def __init__(self, trainer: Any) -> None:
            self.trainer = trainer

        def on_train_begin(self, args, state, control, **kwargs):
            self.trainer._total_loss_scalar = self.trainer.resumed_loss

    class RftlabTrainer(Trainer):
        resumed_loss = 0.0
        order: EpochOrder | None = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if score is None or eval_dataset is not None:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            metrics = {f"{metric_key_prefix}_accuracy": score(self.model)}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, LengthGroupedSampler):
                model_input = self.processing_class.model_input_names[0] if self.processing_class else None
                sampler = EpochOrder(sampler.batch_size, dataset=train_dataset or self.train_dataset,
                                     lengths=sampler.lengths, model_input_name=model_input)  # fmt: skip
                self.order = sampler
            return sampler

        def _init_training_state(self, max_steps, steps_per_epoch, epochs, resume_from_checkpoint, trial):
            trained = super()._init_training_state(max_steps, steps_per_epoch, epochs, resume_from_checkpoint, trial)
            if resume_from_checkpoint is not None:
                manifest = read_json(Path(resume_from_checkpoint) / MANIFEST)
                self.resumed_loss = manifest["loss_total"]
                if trained[1] > 0 and self.order is not None:  # mid-epoch: that epoch's order, as first drawn
                    self.order.pending = torch.load(Path(resume_from_checkpoint) / SAMPLER_STATE)
            return trained

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's files are written before the manifest lists them
            if not self.is_world_process_zero():
                return
            checkpoint = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            if self.order is not None and self.order.drawn is not None:
                torch.save(self.order.drawn, checkpoint / SAMPLER_STATE)
            _write_manifest(checkpoint, {"loss_total": self._total_loss_scalar})

        def _issue_warnings_after_load(self, load_result):
            """A tied weight (the output head of a model that shares its embeddings) is saved once: loading the
            best checkpoint fills it through the weight it shares, which is not worth a warning."""
            tied = _tied_names(self.model)
            missing = [key for key in load_result.missing_keys if key not in tied]
            super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    trainer = RftlabTrainer(**kwargs)
    trainer.add_callback(RestoreLoss(trainer))
    if score is not None and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise ValueError("--select accuracy decodes with the whole model in one process; under FSDP or DeepSpeed "
                         "the weights are sharded: pass --select loss")  # fmt: skip
    return trainer


def whole_run_loss(trainer: Any) -> float:
    """The mean training loss over every step of the run, resumed or not (HF's covers the last `train()` only)."""
    return trainer._total_loss_scalar / max(trainer.state.global_step, 1)


def _tied_names(model: PreTrainedModel) -> set[str]:
    """Names in the state dict that share their tensor with another name (tied weights)."""
    first: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in first:
            tied |= {name, first[tensor.data_ptr()]}
        first.setdefault(tensor.data_ptr(), name)
    return tied

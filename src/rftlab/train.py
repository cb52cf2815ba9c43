"""Pre-training (toy world) and supervised fine-tuning, on the Hugging Face Trainer.

The Trainer brings Accelerate (DDP, FSDP, DeepSpeed under `accelerate launch`), checkpoints that resume,
and TensorBoard logs where tensorboard is installed. SFT puts the loss on the response tokens and EOS
only. Budgets are epochs (the paper's recipe) or tokens (toy recipes), never wall-clock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab import __version__
from rftlab.data import read_problems
from rftlab.models import (
    char_tokenizer,
    count_parameters,
    encode_prompt,
    new_toy_model,
    read_metadata,
    write_metadata,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
TRAINER_DIR = "trainer"
"""Inside a checkpoint folder: the Trainer's resumable checkpoints (removed when done) and TensorBoard logs."""


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings; `epochs` or `tokens` sets the budget (tokens: non-padding tokens seen)."""

    learning_rate: float
    global_batch: int
    device_batch: int
    epochs: float | None
    tokens: int | None
    warmup: float
    min_lr_rate: float
    weight_decay: float
    max_length: int
    template: str
    bf16: bool = False
    save_every: int = 200
    """Optimiser steps between resumable checkpoints."""
    log_every: int = 20

    def identity(self) -> dict[str, Any]:
        """The settings that shape the trained model (not how often it is saved or logged)."""
        return {k: v for k, v in asdict(self).items() if k not in ("save_every", "log_every")}


RECIPES: dict[str, Recipe] = {
    # Paper §1.3: 3 epochs, global batch 128, peak lr 2e-5, 3% warm-up, cosine, no weight decay, 512 tokens.
    "paper": Recipe(2e-5, 128, 4, 3.0, None, 0.03, 0.0, 0.0, 512, "alpaca", bf16=True, save_every=500),
    "toy-sft": Recipe(3e-3, 16, 16, None, 3_000_000, 0.02, 0.1, 0.1, 256, "compact"),
    "toy-pretrain": Recipe(3e-3, 16, 16, None, 5_000_000, 0.02, 0.1, 0.1, 256, "compact"),
}


# Examples ----------------------------------------------------------------------------------------


def sft_example(
    tokenizer: PreTrainedTokenizerBase, query: str, response: str, template: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids of prompt + response + EOS, with labels only on the response and EOS."""
    prompt = encode_prompt(tokenizer, query, template)
    answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt + answer)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def corpus_documents(text: str) -> list[str]:
    """Documents of a pre-training corpus: separated by blank lines."""
    return [document.strip("\n") for document in text.split("\n\n") if document.strip()]


def is_held_out(document: str, share: int = 50) -> bool:
    """A fixed 1-in-`share` part of the corpus, chosen by content, is kept for the held-out loss."""
    return int.from_bytes(hashlib.sha256(document.encode()).digest()[:8], "big") % share == 0


def packed_blocks(
    tokenizer: PreTrainedTokenizerBase, documents: Sequence[str], block: int
) -> list[dict[str, list[int]]]:
    """Documents as BOS + text + EOS, concatenated and cut into blocks of `block` tokens."""
    stream: list[int] = []
    for document in documents:
        stream += tokenizer(document, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    return [
        {"input_ids": stream[start : start + block], "labels": stream[start : start + block]}
        for start in range(0, len(stream) - block + 1, block)
    ]


# Training ----------------------------------------------------------------------------------------


def _make_progress_callback(description: str, show: bool | None) -> Any:
    from tqdm import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A progress bar with loss and tokens/s."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=description, file=sys.stderr,
                disable=None if show is None else not show, unit="step",
            )  # fmt: skip
            self.start, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                rate = (state.num_input_tokens_seen - self.tokens) / max(time.perf_counter() - self.start, 1e-9)
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", tok_s=f"{rate:,.0f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return Progress()


def _steps_for(recipe: Recipe, examples: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """Trainer arguments for the budget: epochs as they are, tokens turned into optimiser steps."""
    if recipe.tokens is None:
        return {"num_train_epochs": recipe.epochs or 1.0}
    mean_tokens = sum(len(e["input_ids"]) for e in examples) / max(len(examples), 1)
    return {"max_steps": max(1, math.ceil(recipe.tokens / (recipe.global_batch * mean_tokens)))}


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, list[int]]],
    out: Path,
    recipe: Recipe,
    seed: int,
    *,
    description: str,
    show_progress: bool | None = None,
    held_out: list[dict[str, list[int]]] | None = None,
    group_by_length: bool = False,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains with the HF Trainer, resuming from `out/trainer` if a run stopped; saves the model in `out`.

    Returns the run's facts: steps, tokens seen, seconds, final training loss, the logged loss curve and,
    given `held_out`, the held-out loss.
    """
    import torch
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ours shows loss and tokens/s

    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun / accelerate launch set it for each process
    accumulation = max(1, recipe.global_batch // (recipe.device_batch * world_size))
    args = TrainingArguments(
        output_dir=str(out / TRAINER_DIR),
        per_device_train_batch_size=recipe.device_batch,
        per_device_eval_batch_size=recipe.device_batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine_with_min_lr" if recipe.min_lr_rate else "cosine",
        lr_scheduler_kwargs={"min_lr_rate": recipe.min_lr_rate} if recipe.min_lr_rate else None,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        bf16=recipe.bf16 and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        logging_steps=recipe.log_every,
        save_strategy="steps",
        save_steps=recipe.save_every,
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **_steps_for(recipe, examples),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        eval_dataset=held_out,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8),
        processing_class=tokenizer,
        callbacks=[_make_progress_callback(description, show_progress)],
    )
    trainer.remove_callback(PrinterCallback)
    resume = last_complete_checkpoint(out / TRAINER_DIR)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    facts = {
        "processes": trainer.args.world_size,
        "steps": trainer.state.global_step,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "train_seconds": round(time.perf_counter() - start, 2),
        "train_loss": result.training_loss,
        "losses": [[entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry],
        "distributed": trainer.accelerator.distributed_type.value,
        "resumed": resume is not None,
    }
    if held_out:
        facts["heldout_loss"] = trainer.evaluate()["eval_loss"]
    if trainer.is_fsdp_enabled:  # save_model writes nothing from a sharded state dict: gather the full one
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out))
    record = {**facts, **(metadata or {}), "complete": True}
    if trainer.is_world_process_zero():
        _check_saved(out)
        for checkpoint in (out / TRAINER_DIR).glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        write_metadata(out, record)
    return record


def _check_saved(folder: Path) -> None:
    """An error if the Trainer saved no weights (DeepSpeed ZeRO-3 gathers them only when told to)."""
    if not any(folder.glob("*.safetensors")):
        raise RuntimeError(
            f"{folder}: no weights were saved; under DeepSpeed ZeRO-3 set stage3_gather_16bit_weights_on_model_save "
            "to true (accelerate config: zero3_save_16bit_model)"
        )


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest Trainer checkpoint that was fully written; a kill mid-save leaves a partial one behind."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda path: int(path.name.rsplit("-", 1)[1]))
    complete = [path for path in checkpoints if (path / "trainer_state.json").is_file()]
    for partial in set(checkpoints) - set(complete):
        shutil.rmtree(partial)
    return complete[-1] if complete else None


def _finished(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The metadata of an earlier, complete run with the same settings; an error if settings differ."""
    metadata = read_metadata(out)
    if not metadata.get("complete") or overwrite:
        return None
    if metadata.get("settings") != settings:
        raise FileExistsError(f"{out} holds a model trained with other settings; pass --overwrite to replace it")
    return metadata


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(
    corpus: Path,
    out: Path,
    *,
    preset: str,
    recipe: Recipe = RECIPES["toy-pretrain"],
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Trains a toy base model from scratch on a corpus; records its held-out loss in the metadata."""
    settings = {
        "stage": "pretrain",
        "preset": preset,
        "recipe": recipe.identity(),
        "seed": seed,
        "corpus": _sha256(corpus),
    }
    if (done := _finished(out, settings, overwrite)) is not None:
        return done
    tokenizer = char_tokenizer()
    model = new_toy_model(preset, tokenizer, seed)
    documents = corpus_documents(corpus.read_text())
    train_docs = [d for d in documents if not is_held_out(d)]
    held_docs = [d for d in documents if is_held_out(d)]
    metadata = {
        "parameters": count_parameters(model),
        "non_embedding_parameters": count_parameters(model, non_embedding=True),
        "corpus_path": str(corpus),
        "settings": settings,
        "rftlab_version": __version__,
    }
    return train_causal_lm(
        model,
        tokenizer,
        packed_blocks(tokenizer, train_docs, recipe.max_length),
        out,
        recipe,
        seed,
        description=f"pretrain {preset}",
        show_progress=show_progress,
        held_out=packed_blocks(tokenizer, held_docs, recipe.max_length),
        metadata=metadata,
    )


def default_recipe(model_name: str) -> str:
    """`toy-sft` for rftlab's toy checkpoints, the paper's recipe for any other model."""
    return "toy-sft" if read_metadata(model_name).get("settings", {}).get("preset") else "paper"


def sft(
    model_name: str,
    data: Path,
    out: Path,
    *,
    recipe: Recipe,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning on a problem file (GSM8K-style or RFT data), loss on responses only."""
    from rftlab.models import load_model

    settings = {
        "stage": "sft",
        "model": str(model_name),
        "recipe": recipe.identity(),
        "seed": seed,
        "data": _sha256(data),
    }
    if (done := _finished(out, settings, overwrite)) is not None:
        return done
    model, tokenizer = load_model(model_name, dtype="float32")
    problems = read_problems(data, unique_ids=False)
    examples = [sft_example(tokenizer, p.query, p.response, recipe.template, recipe.max_length) for p in problems]
    base = read_metadata(model_name)
    metadata = {
        "examples": len(examples),
        "data_path": str(data),
        "base": {key: base[key] for key in ("settings", "heldout_loss", "parameters") if key in base},
        "parameters": count_parameters(model),
        "settings": settings,
        "rftlab_version": __version__,
    }
    return train_causal_lm(
        model, tokenizer, examples, out, recipe, seed, description="sft", show_progress=show_progress,
        group_by_length=True, metadata=metadata,
    )  # fmt: skip


def recipe_with(name: str, **overrides: Any) -> Recipe:
    """A named recipe with the given fields replaced (None leaves a field as it is).

    The budget is one of `epochs` and `tokens`: giving one clears the other.
    """
    changes = {key: value for key, value in overrides.items() if value is not None}
    if "epochs" in changes:
        changes.setdefault("tokens", None)
    elif "tokens" in changes:
        changes["epochs"] = None
    return replace(RECIPES[name], **changes)

"""Pre-training (toy world) and supervised fine-tuning, on the Hugging Face Trainer.

The Trainer brings Accelerate (DDP, FSDP, DeepSpeed under `accelerate launch`), checkpoints that resume,
and TensorBoard logs where tensorboard is installed. SFT puts the loss on the response tokens and EOS
only, on all weights or on LoRA adapters (PEFT) that are merged into the base at the end. Budgets are
epochs (the paper's recipe) or tokens (toy recipes), never wall-clock.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab import __version__
from rftlab.data import Problem, read_json, read_problems, write_errors_named
from rftlab.models import (
    MOST_CHARACTERS_A_TOKEN,
    char_tokenizer,
    count_parameters,
    encode_prompt,
    model_fingerprint,
    new_toy_model,
    read_metadata,
    write_metadata,
)
from rftlab.trainer import complete_checkpoints, logging_interval, rftlab_trainer, whole_run_loss
from rftlab.validation import Selection, Validation, curve, greedy_accuracy, trainer_arguments

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
TRAINER_DIR = "trainer"
"""Inside a checkpoint folder: the Trainer's resumable checkpoints (removed when done) and TensorBoard logs."""
ADAPTER_DIR = "adapter"
"""Inside a LoRA-tuned checkpoint folder: the trained adapter alone, as PEFT saves it."""
DTYPES = ("float32", "bfloat16", "float16", "auto")


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
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, same result."""

    def identity(self) -> dict[str, Any]:
        """The settings that shape the trained model (not how often it is saved or logged, nor memory savings)."""
        return {k: v for k, v in asdict(self).items() if k not in ("save_every", "log_every", "gradient_checkpointing")}


@dataclass(frozen=True)
class Lora:
    """LoRA adapters (PEFT): rank `r`, scale `alpha / r`, dropout, and the adapted modules: `all-linear` (every
    linear layer but the output head) or a comma-separated list of module names such as `q_proj,v_proj`."""

    r: int
    alpha: float
    dropout: float = 0.05
    targets: str = "all-linear"

    def config(self) -> LoraConfig:
        """PEFT's configuration of these adapters for a causal LM."""
        LoraConfig = _peft().LoraConfig
        targets = self.targets if self.targets == "all-linear" else [t.strip() for t in self.targets.split(",")]
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets, task_type="CAUSAL_LM"
        )


def _peft() -> Any:
    """The peft module, or an error that names the extra to install."""
    try:
        import peft
    except ImportError:
        raise ModuleNotFoundError("LoRA needs peft: pip install 'rftlab[lora]'") from None
    return peft


TOY_SFT = Recipe(3e-3, 16, 16, None, 3_000_000, 0.02, 0.1, 0.1, 256, "compact")
RECIPES: dict[str, Recipe] = {
    # Paper §1.3: 3 epochs, global batch 128, peak lr 2e-5, 3% warm-up, cosine, no weight decay, 512 tokens.
    "paper": Recipe(2e-5, 128, 4, 3.0, None, 0.03, 0.0, 0.0, 512, "alpaca", bf16=True, save_every=500),
    "toy-sft": TOY_SFT,
    # A toy base that has seen the task (solved questions in its corpus, `rftlab toyworld --corpus-solved`):
    # a tenth of pre-training's lr, as the paper fine-tunes far below pre-training's; toy-sft's 3e-3 undoes
    # what such a base knows (measured: 29% greedy validation accuracy before SFT, 2.5% after its first epoch).
    "toy-finetune": replace(TOY_SFT, learning_rate=3e-4),
    # SmolLM2-135M-Instruct on a GSM8K subset (the real-model demo): the paper's schedule (3 epochs, 3% warm-up,
    # cosine, no weight decay) with a batch of 16 so that a few hundred problems take tens of steps, and a peak lr
    # for a 135M model (chosen, not tuned); its chat template, which the model was instruction-tuned with.
    "smollm2": Recipe(1e-4, 16, 4, 3.0, None, 0.03, 0.0, 0.0, 512, "chat", save_every=50, log_every=5),
    "toy-pretrain": Recipe(3e-3, 16, 16, None, 5_000_000, 0.02, 0.1, 0.1, 256, "compact"),
}


# Examples ----------------------------------------------------------------------------------------


def sft_example(
    tokenizer: PreTrainedTokenizerBase, query: str, response: str, template: str, max_length: int
) -> dict[str, list[int]]:
    """Token ids of prompt + response + EOS, with labels only on the response and EOS, cut to `max_length`. The
    texts are first cut to what could fit (`MOST_CHARACTERS_A_TOKEN` a token): a huge one costs no more."""
    room = max_length * MOST_CHARACTERS_A_TOKEN
    prompt = encode_prompt(tokenizer, query[:room], template)
    answer = tokenizer(response[:room], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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


def budget_arguments(recipe: Recipe, examples: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """Trainer arguments for the budget: epochs as they are, tokens turned into optimiser steps: whole epochs
    (each ends in a short batch), then the nearest number of full batches, so that a token budget copied from
    another run (`--tokens-of`) trains about as many tokens as it did and n full batches' tokens are n steps."""
    if recipe.tokens is None:
        return {"num_train_epochs": recipe.epochs or 1.0}
    epoch_tokens = max(sum(len(e["input_ids"]) for e in examples), 1)
    epoch_steps = max(1, math.ceil(len(examples) / recipe.global_batch))
    batch_tokens = epoch_tokens / max(len(examples), 1) * recipe.global_batch
    epochs, rest = divmod(recipe.tokens, epoch_tokens)
    return {"max_steps": max(1, epochs * epoch_steps + min(epoch_steps, round(rest / batch_tokens)))}


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
    overwrite: bool = False,
    lora_base: Callable[[], PreTrainedModel] | None = None,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """Trains with the HF Trainer, resuming from `out/trainer` if a run stopped (unless `overwrite`); saves the
    model in `out`. With `lora_base` (loads the base model again), `model` is a PEFT model: its adapter is saved
    in `out/adapter` and merged into the base, which is saved in `out` as a plain checkpoint. With `selection`,
    the model saved is the best on the validation problems (see `rftlab.validation`).

    Returns the run's facts: steps, tokens seen, seconds, final training loss, the logged loss curve and,
    given `held_out`, the held-out loss; given `selection`, the validation curve and the point selected.
    """
    import torch
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ours shows loss and tokens/s

    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun / accelerate launch set it for each process
    accumulation = max(1, recipe.global_batch // (recipe.device_batch * world_size))
    # transformers after 5.17 renamed gradient_checkpointing (a deprecated alias since) to activation_checkpointing
    checkpointing = next(
        name for name in ("activation_checkpointing", "gradient_checkpointing") if hasattr(TrainingArguments, name)
    )
    budget = budget_arguments(recipe, examples)
    arguments = dict(
        output_dir=str(out / TRAINER_DIR),
        per_device_train_batch_size=recipe.device_batch,
        per_device_eval_batch_size=recipe.device_batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine_with_min_lr" if recipe.min_lr_rate else "cosine",
        lr_scheduler_kwargs={"min_lr_rate": recipe.min_lr_rate} if recipe.min_lr_rate else None,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        bf16=_bf16(recipe),
        **{checkpointing: recipe.gradient_checkpointing},
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
        **budget,
    )
    arguments |= _selecting(selection, recipe, len(examples), budget)
    arguments["logging_steps"] = logging_interval(recipe.log_every, arguments["save_steps"])
    args = TrainingArguments(**arguments)
    trainer = rftlab_trainer(
        selection.score if selection else None,
        model=model,
        args=args,
        train_dataset=examples,
        eval_dataset=selection.examples if selection else held_out,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8),
        processing_class=tokenizer,
        callbacks=[_make_progress_callback(description, show_progress)],
    )
    trainer.remove_callback(PrinterCallback)
    if trainer.is_world_process_zero():
        if overwrite:
            _remove_checkpoints(out)
        write_metadata(out, {**(metadata or {}), "complete": False})  # the settings an interrupted run resumes with
    resume = None if overwrite else last_complete_checkpoint(out / TRAINER_DIR)
    with write_errors_named(out):  # a full disk names the folder, not a library's internals
        return _train_and_save(trainer, out, resume, held_out, selection, lora_base, metadata)


def _train_and_save(
    trainer: Any,
    out: Path,
    resume: Path | None,
    held_out: Any,
    selection: Selection | None,
    lora_base: Callable[[], Any] | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """Trains (from `resume` where given), saves the model into `out` and records the run's facts."""
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    facts = {
        "processes": trainer.args.world_size,
        "steps": trainer.state.global_step,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "train_seconds": round(time.perf_counter() - start, 2),
        "train_loss": whole_run_loss(trainer),
        "losses": [[entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry],
        "distributed": trainer.accelerator.distributed_type.value,
        "bf16": trainer.args.bf16,
        "resumed": resume is not None,
    }
    if held_out:
        facts["heldout_loss"] = trainer.evaluate()["eval_loss"]
    if selection is not None:
        metric = selection.validation.metric
        facts["validation"] = curve(trainer.state.log_history, metric, trainer.state.best_model_checkpoint)
    if trainer.is_fsdp_enabled:  # save_model writes nothing from a sharded state dict: gather the full one
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    saved = out / ADAPTER_DIR if lora_base else out
    trainer.save_model(str(saved))
    record = {**facts, **(metadata or {}), "complete": True}
    if trainer.is_world_process_zero():
        _check_saved(saved)
        if lora_base:
            _peft().PeftModel.from_pretrained(lora_base(), saved).merge_and_unload().save_pretrained(out)
            trainer.processing_class.save_pretrained(out)
        _remove_checkpoints(out)
        write_metadata(out, record)
    return record


def _selecting(selection: Selection | None, recipe: Recipe, examples: int, budget: dict[str, Any]) -> dict:
    """The Trainer arguments of checkpoint selection (none without it), measuring at the selection's interval
    over the `budget` (`budget_arguments`'s)."""
    if selection is None:
        return {}
    epoch_steps = max(1, math.ceil(examples / recipe.global_batch))
    total = budget.get("max_steps") or math.ceil(epoch_steps * budget["num_train_epochs"])
    return trainer_arguments(selection.validation, selection.validation.steps_between(total, epoch_steps))


def _bf16(recipe: Recipe) -> bool:
    """bf16 mixed precision on a GPU when the recipe or the launcher asks for it (an Accelerate config's
    `mixed_precision: bf16`, which DeepSpeed and FSDP apply anyway and DeepSpeed requires to match)."""
    import torch

    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16"
    return (recipe.bf16 or launcher) and torch.cuda.is_available()


def _check_saved(folder: Path) -> None:
    """An error if the Trainer saved no weights (DeepSpeed ZeRO-3 gathers them only when told to)."""
    if not any(folder.glob("*.safetensors")):
        raise RuntimeError(
            f"{folder}: no weights were saved; under DeepSpeed ZeRO-3 set stage3_gather_16bit_weights_on_model_save "
            "to true (accelerate config: zero3_save_16bit_model)"
        )


def _remove_checkpoints(out: Path) -> None:
    for checkpoint in (out / TRAINER_DIR).glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest Trainer checkpoint that was fully written (`trainer.complete_checkpoints`)."""
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def _finished(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The metadata of an earlier, complete run with the same settings; None to train (or resume an interrupted
    run with the same settings). An error if `out` holds a run, finished or not, with other settings; a run that
    stopped before its first checkpoint holds nothing to keep, so any settings may start afresh over it."""
    metadata = read_metadata(out)
    if overwrite or not metadata:
        return None
    if not metadata.get("complete") and last_complete_checkpoint(out / TRAINER_DIR) is None:
        return None
    if metadata.get("settings") != settings:
        recorded = metadata.get("settings") or {}
        differ = sorted(key for key in {*recorded, *settings} if recorded.get(key) != settings.get(key))
        raise FileExistsError(f"{out} holds a model trained with other settings ({', '.join(differ)} differ: "
                              "base_weights, the base model's weights; data, the training file's bytes); pass "
                              "--overwrite to replace it")  # fmt: skip
    return metadata if metadata.get("complete") else None


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
        "corpus_solved": corpus_solved(corpus),
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
        overwrite=overwrite,
    )


def corpus_solved(corpus: Path) -> int | None:
    """The solved task questions in a toy world's corpus (its toyworld.json's `pretrain_solved`); None for a
    corpus without one beside it."""
    try:
        return int(read_json(corpus.parent / "toyworld.json")["pretrain_solved"])
    except (ValueError, KeyError, TypeError):  # DataError (absent, unreadable) is a ValueError
        return None


def default_recipe(model_name: str) -> str:
    """The paper's recipe, but for rftlab's toy checkpoints: `toy-finetune` for a base whose corpus held solved
    task questions (it has seen the task), else `toy-sft`."""
    metadata = read_metadata(model_name)
    if not metadata.get("settings", {}).get("preset"):
        return "paper"
    return "toy-finetune" if metadata.get("corpus_solved") else "toy-sft"


def sft(
    model_name: str,
    data: Path,
    out: Path,
    *,
    recipe: Recipe,
    seed: int = 0,
    dtype: str = "float32",
    lora: Lora | None = None,
    validation: Validation | None = None,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning on a problem file (GSM8K-style or RFT data), loss on responses only; of all weights
    in `dtype`, or of LoRA adapters merged into the base at the end (the adapter is kept in `out/adapter`). With
    `validation`, the checkpoint kept is the best on its problems within the budget."""
    from rftlab.models import load_model, load_weights

    settings = {
        "stage": "sft",
        "model": str(model_name),
        "base_weights": model_fingerprint(model_name),
        "recipe": recipe.identity(),
        "seed": seed,
        "data": _sha256(data),
        **({"dtype": dtype} if dtype != "float32" else {}),
        **({"lora": asdict(lora)} if lora else {}),
        **({"validation": _validation_settings(validation)} if validation else {}),
    }
    if (done := _finished(out, settings, overwrite)) is not None:
        return done
    problems = read_problems(data, unique_ids=False)  # before loading the model: a bad file fails at once
    held = _validation_problems(validation, problems) if validation else []
    lora_config = lora.config() if lora else None  # before loading: a missing peft fails at once
    model, tokenizer = load_model(model_name, dtype=dtype)
    parameters = count_parameters(model)
    if lora_config is not None:
        from transformers import set_seed

        set_seed(seed)  # the adapters' initialisation
        model = _peft().get_peft_model(model, lora_config)
    examples = [sft_example(tokenizer, p.query, p.response, recipe.template, recipe.max_length) for p in problems]
    selection = None
    if validation is not None:
        scorer = functools.partial(greedy_accuracy, tokenizer=tokenizer, problems=held, template=recipe.template)
        selection = Selection(
            validation,
            [sft_example(tokenizer, p.query, p.response, recipe.template, recipe.max_length) for p in held],
            scorer if validation.metric == "accuracy" else None,
        )
    base = read_metadata(model_name)
    metadata = {
        "examples": len(examples),
        "data_path": str(data),
        "base": {key: base[key] for key in ("settings", "heldout_loss", "parameters") if key in base},
        "parameters": parameters,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "settings": settings,
        "rftlab_version": __version__,
    }
    return train_causal_lm(
        model, tokenizer, examples, out, recipe, seed, description="sft", show_progress=show_progress,
        group_by_length=True, metadata=metadata, overwrite=overwrite,
        lora_base=(lambda: load_weights(model_name, dtype=dtype)) if lora else None, selection=selection,
    )  # fmt: skip


def _validation_problems(validation: Validation, train: Sequence[Problem]) -> list[Problem]:
    """The validation problems; an error if one of their questions is also a training question."""
    held = read_problems(validation.data)
    seen = {problem.query for problem in train}
    shared = [problem.id for problem in held if problem.query in seen]
    if shared:
        raise ValueError(f"--validation {validation.data}: {len(shared)} of its {len(held)} questions are training "
                         f"questions too (first: {shared[0]}); hold them out of the training data")  # fmt: skip
    return held


def _validation_settings(validation: Validation) -> dict[str, Any]:
    """What of the validation decides the model kept: the problems' bytes, the metric, the interval."""
    return {"data": _sha256(validation.data), "metric": validation.metric, "every": validation.every,
            "count": validation.count}  # fmt: skip


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

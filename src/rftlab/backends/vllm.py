"""The vLLM sampling backend (`rftlab sample --backend vllm`; needs the `vllm` extra and a GPU).

Prompts are token ids (the run's, `models.encode_prompt`), passed as token prompts; each question is one
request of `n=k` paths whose seed is a hash of (seed, problem id), so runs with another `--seed` differ and
a question's paths do not depend on its batch as far as vLLM allows (its numerics still can:
`VLLM_BATCH_INVARIANT=1` makes them batch-invariant). The completions' token ids go back to the run, which
decodes them with the same tokenizer as the HF backend's and cuts them at the engine's `stop` strings (as
vLLM cuts its own text) and after the `#### N` line. vLLM stops at EOS, at the token cap, or at the `stop`
strings; it cannot stop right after the answer line as the HF backend does, so without stop strings a model
that goes on after its answer costs tokens, never text (the cut removes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rftlab.backends.base import VLLM_MISSING, EngineSettings, SamplingSettings
from rftlab.models import load_tokenizer

_SEED_BITS = 62
"""vLLM keeps seeds as int64 and gives the i-th of n paths seed + i: 62 bits leave room for both."""


def request_seed(keys: Sequence[int]) -> int:
    """The seed of a question's request: its first path's key (a hash of seed and problem id), cut to 62 bits."""
    return keys[0] >> (64 - _SEED_BITS)


def _vllm_tokenizer(model_name: str) -> str | None:
    """vLLM's tokenizer for a `.gguf` file: its folder when that holds tokenizer files, else None (vLLM builds
    one from the file); None for other models (vLLM reads the model's own)."""
    path = Path(model_name)
    if path.suffix != ".gguf":
        return None
    has_files = any((path.parent / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    return str(path.parent) if has_files else None


class VLLMBackend:
    """Samples with a `vllm.LLM` engine; one request of n=k paths per question (n=1 when greedy)."""

    decoder = "vllm"

    def __init__(self, model_name: str, dtype: str, engine: EngineSettings, seed: int) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ValueError(VLLM_MISSING) from error
        self.vllm, self.engine, self.stop = vllm, engine, engine.stop
        self.tokenizer = load_tokenizer(model_name)  # the HF backend's: the same prompts and decoding
        self.llm = vllm.LLM(
            model=model_name,
            tokenizer=_vllm_tokenizer(model_name),
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            max_model_len=engine.max_model_len,
            distributed_executor_backend=engine.distributed_executor_backend,
            enforce_eager=engine.enforce_eager,
        )
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
                stop=list(self.engine.stop),
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
    """The registry's loader (`backends.base.load_backend`): vLLM picks its own GPUs, `device` is unused."""
    return VLLMBackend(model_name, dtype, engine or EngineSettings(), seed)

"""vLLM's side of bench_sample_peers.py, run by the vLLM venv's Python (`make test-vllm` builds it).

Reads a JSON job on stdin (model folder, prompts as token ids, k, temperature, new tokens, dtype), samples
n=k paths per prompt with `LLM.generate` (a seed per request, EOS ignored so that every path has the same
length) and prints one JSON line: generated tokens, seconds (the generate call alone, the best of `repeats`
runs after a warm-up; the engine's start-up left out) and vLLM's version.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import vllm

    job = json.load(sys.stdin)
    llm = vllm.LLM(
        model=job["model"],
        dtype=job["dtype"],
        seed=0,
        skip_tokenizer_init=True,
        gpu_memory_utilization=job.get("memory_share", 0.2),
        max_num_batched_tokens=job.get("max_num_batched_tokens", 65536),  # seeded requests on the CPU engine
        max_model_len=job["max_model_len"],
    )

    def run(prompts: list[list[int]]) -> tuple[int, float]:
        settings = {"n": job["k"], "temperature": job["temperature"], "max_tokens": job["max_new_tokens"]}
        params = [
            vllm.SamplingParams(**settings, ignore_eos=True, seed=index, detokenize=False)
            for index in range(len(prompts))
        ]
        requests = [vllm.inputs.TokensPrompt(prompt_token_ids=ids) for ids in prompts]
        start = time.perf_counter()
        results = llm.generate(requests, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(path.token_ids) for result in results for path in result.outputs), seconds

    run(job["prompts"][:2])  # warm-up
    tokens, seconds = min((run(job["prompts"]) for _ in range(job.get("repeats", 1))), key=lambda done: done[1])
    print("peer_vllm: " + json.dumps({"tokens": tokens, "seconds": seconds, "version": vllm.__version__}))


if __name__ == "__main__":  # vLLM spawns worker processes: the guard keeps them from rerunning this
    main()

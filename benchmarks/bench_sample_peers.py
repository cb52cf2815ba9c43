"""Sampling speed against the field's engines, same run: rftlab's default sampler, `model.generate()` with a
dynamic and with a static KV cache, and vLLM (the CPU build, when its venv exists: `make test-vllm`).

Every sampler draws k paths for each of the same prompts at temperature 0.7 (no top-p), `max_new_tokens`
each with EOS ignored, so that all generate the same number of tokens: the toy preset `m` (random
weights) on toy-world questions, and SmolLM2-135M-Instruct (the GGUF de-quantized to a safetensors folder)
on GSM8K train questions in its chat template. Reported: generated tokens/s, the best of --repeats runs
(rftlab and generate() take turns; vLLM's runs follow one engine start-up, which is left out; every
sampler warmed up first), and the share of the matmul peak measured in the same run at that dtype (2 x
parameters FLOP a token). bf16 runs only where the bf16 matmul is faster than fp32 (bf16 units).

    python benchmarks/bench_sample_peers.py [--models toy-m smollm2] [--questions 32] [--k 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench_train import matmul_peak_gflops
from rftlab.backends.base import row_key
from rftlab.backends.hf import HFBackend
from rftlab.decoding import generate_with_keys
from rftlab.models import char_tokenizer, count_parameters, encode_prompt, load_model, load_tokenizer, new_toy_model
from rftlab.toyworld import DEFAULT_CONFIG, make_split

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
TEMPERATURE = 0.7
RESULT = "peer_vllm: "
"""How peer_vllm.py marks its result line (vLLM prints to stdout too)."""


def toy_model(folder: Path, questions: int) -> list[list[int]]:
    """Saves the random toy `m` model in `folder`; the compact prompts of toy-world questions."""
    tokenizer = char_tokenizer()
    new_toy_model("m", tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    train, _ = make_split(questions, 1, seed=0, config=DEFAULT_CONFIG)
    return [encode_prompt(tokenizer, problem["query"], "compact") for problem in train]


def smollm2_model(questions: int) -> tuple[Path, list[list[int]]]:
    """SmolLM2-135M-Instruct as the safetensors copy of its GGUF (what every backend loads); GSM8K chat prompts."""
    from rftlab.models import gguf_folder
    from rftlab.smollm2 import cached_gguf

    folder = gguf_folder(cached_gguf())
    tokenizer = load_tokenizer(folder)
    with GSM8K_TRAIN.open() as lines:
        queries = [json.loads(next(lines))["query"] for _ in range(questions)]
    return folder, [encode_prompt(tokenizer, query, "chat") for query in queries]


def rftlab_run(backend: HFBackend, prompts: list[list[int]], k: int, new_tokens: int) -> Callable[[], int]:
    """One timed run of the backend's own decoder (the one `rftlab sample` runs), EOS ignored: tokens made."""
    rows = [prompt for prompt in prompts for _ in range(k)]
    keys = [row_key(0, str(question), j) for question in range(len(prompts)) for j in range(k)]
    options = {"max_new_tokens": new_tokens, "temperature": TEMPERATURE, "eos_token_id": -1, "pad_token_id": 0}

    def run(rows: list[list[int]] = rows, keys: list[int] = keys) -> int:
        if backend.exact is None:
            return sum(map(len, generate_with_keys(backend.model, rows, keys, **options)))
        return sum(map(len, backend.exact.generate(rows, keys, **options)))

    run(rows[: 2 * k], keys[: 2 * k])  # warm-up
    return run


def generate_run(model, prompts: list[list[int]], k: int, new_tokens: int, pad: int, static: bool) -> Callable[[], int]:
    """One timed run of `model.generate()` sampling k paths a prompt (left-padded batch), EOS ignored."""
    extra = {"cache_implementation": "static"} if static else {}

    def run(prompts: list[list[int]] = prompts) -> int:
        longest = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=TEMPERATURE,
                                 top_k=None, top_p=None, num_return_sequences=k, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=pad, **extra)  # fmt: skip
        return out[:, longest:].numel()

    run(prompts[:2])  # warm-up
    return run


def best_rates(runs: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Tokens/s of each run, the best of `repeats` rounds in which every run takes its turn (a machine that
    slows down for a while slows all of them)."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            tokens = run()
            best[name] = max(best.get(name, 0.0), tokens / (time.perf_counter() - start))
    return best


def vllm_rate(folder: Path, prompts: list[list[int]], k: int, new_tokens: int, dtype: str, repeats: int):
    """Tokens/s of vLLM in its own venv (benchmarks/peer_vllm.py), the best of `repeats` runs, and its version."""
    job = {"model": str(folder), "prompts": prompts, "k": k, "temperature": TEMPERATURE, "dtype": dtype,
           "max_new_tokens": new_tokens, "max_model_len": max(map(len, prompts)) + new_tokens,
           "repeats": repeats}  # fmt: skip
    script = Path(__file__).with_name("peer_vllm.py")
    done = subprocess.run([str(VLLM_PYTHON), str(script)], input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vLLM failed:\n{done.stderr[-3000:]}")
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if not marked:
        raise RuntimeError(f"vLLM printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(marked[-1].removeprefix(RESULT))
    return result["tokens"] / result["seconds"], result["version"]


def bench_model(name: str, folder: Path, prompts: list[list[int]], args, dtype: str, peak: float) -> None:
    model, tokenizer = load_model(folder, dtype=dtype)
    model.eval()
    flops = 2 * count_parameters(model)
    backend = HFBackend(model, tokenizer)
    pad = tokenizer.pad_token_id
    runs = {f"rftlab ({backend.decoder})": rftlab_run(backend, prompts, args.k, args.max_new_tokens)}
    runs["generate(), dynamic cache"] = generate_run(model, prompts, args.k, args.max_new_tokens, pad, False)
    runs["generate(), static cache"] = generate_run(model, prompts, args.k, args.max_new_tokens, pad, True)
    rates = best_rates(runs, args.repeats)
    if VLLM_PYTHON.exists() and not args.no_vllm:
        rate, version = vllm_rate(folder, prompts, args.k, args.max_new_tokens, dtype, args.repeats)
        rates[f"vLLM {version} (CPU build)"] = rate
    peak = max(peak, matmul_peak_gflops(1024, 3, getattr(torch, dtype)))  # the machine's speed drifts
    lengths = [len(p) for p in prompts]
    print(f"\n{name}, {dtype}: {len(prompts)} prompts x k={args.k} ({min(lengths)}-{max(lengths)} prompt tokens), "
          f"{args.max_new_tokens} new tokens each, T={TEMPERATURE}; best of {args.repeats} runs; "
          f"matmul peak {peak:,.0f} GFLOP/s (the better of before and after)")  # fmt: skip
    ours = next(iter(rates.values()))
    for sampler, rate in rates.items():
        share = 100 * flops * rate / 1e9 / peak
        print(f"  {sampler:<34} {rate:9,.0f} tokens/s  {share:5.1f}% of peak  rftlab x{ours / rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("toy-m", "smollm2"), default=["toy-m", "smollm2"])
    parser.add_argument("--questions", type=int, default=32, help="SmolLM2 prompts (the toy takes 2x as many)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each sampler, the best counts")
    parser.add_argument("--no-vllm", action="store_true", help="leave vLLM out even where its venv exists")
    args = parser.parse_args()
    peaks = {dtype: matmul_peak_gflops(1024, 3, getattr(torch, dtype)) for dtype in ("float32", "bfloat16")}
    dtypes = ["float32"] + (["bfloat16"] if peaks["bfloat16"] > peaks["float32"] else [])
    print(f"matmul peak (1024^3, {torch.get_num_threads()} threads): "
          + ", ".join(f"{dtype} {value:,.0f} GFLOP/s" for dtype, value in peaks.items())
          + ("" if len(dtypes) == 2 else "; bf16 is slower here (no bf16 units): fp32 only"))  # fmt: skip
    if not VLLM_PYTHON.exists():
        print(f"vLLM: no {VLLM_PYTHON} (make test-vllm builds it): left out")
    for name in args.models:
        with tempfile.TemporaryDirectory() as scratch:
            if name == "toy-m":
                folder, prompts = Path(scratch), toy_model(Path(scratch), 2 * args.questions)
            else:
                folder, prompts = smollm2_model(args.questions)
            for dtype in dtypes:
                bench_model(name, folder, prompts, args, dtype, peaks[dtype])


if __name__ == "__main__":
    main()

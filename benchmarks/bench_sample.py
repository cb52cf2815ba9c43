"""Speed benchmark: generated tokens/s of rftlab's sampler against `model.generate()`, same run.

Both sample from the default toy preset (randomly initialised, so that no row stops early and both
generate the same number of tokens) on the same toy-world prompts, at temperature 0.7 with no top-k
or top-p, `max_new_tokens` each; `generate()` keeps its defaults otherwise (dynamic KV cache). The
achieved FLOP/s (2 x non-embedding parameters x tokens/s) is set against the fp32 matmul peak
measured in the same run.

    python benchmarks/bench_sample.py [--rows 256] [--max-new-tokens 128] [--dtype float32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench_train import matmul_peak_gflops
from rftlab.backends.base import SamplingSettings, row_key
from rftlab.backends.hf import HFBackend
from rftlab.data import PROMPT_TEMPLATES
from rftlab.models import char_tokenizer, count_parameters, encode_prompt, load_model, new_toy_model
from rftlab.toyworld import DEFAULT_CONFIG, make_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="prompts x k in one batch")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--preset", default="m")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    tokenizer = char_tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        new_toy_model(args.preset, tokenizer, seed=0).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model, tokenizer = load_model(folder, dtype=args.dtype)
    model.eval()
    train, _ = make_split(args.rows // args.k, 1, seed=0, config=DEFAULT_CONFIG)
    queries = [r["query"] for r in train]
    prompts = [PROMPT_TEMPLATES["compact"].format(query=query) for query in queries]
    settings = SamplingSettings(k=args.k, temperature=0.7, max_new_tokens=args.max_new_tokens, batch_size=args.rows)
    keys = [[row_key(0, r["id"], j) for j in range(args.k)] for r in train]
    peak = matmul_peak_gflops()

    backend = HFBackend(model, tokenizer)
    ids = [encode_prompt(tokenizer, query, "compact") for query in queries]
    backend.generate(ids[:2], keys[:2], settings)  # warm-up
    backend.generated_tokens, start = 0, time.perf_counter()
    backend.generate(ids, keys, settings)
    ours = backend.generated_tokens / (time.perf_counter() - start)

    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        model.generate(**tokenizer(prompts[:2], return_tensors="pt", padding=True), max_new_tokens=4, do_sample=True)
        start = time.perf_counter()
        output = model.generate(
            **batch, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.7, top_k=None, top_p=None,
            num_return_sequences=args.k, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    new = output[:, batch["input_ids"].shape[1] :]
    theirs = int(((new != tokenizer.pad_token_id) & (new != tokenizer.eos_token_id)).sum()) / seconds

    flops_per_token = 2 * count_parameters(model, non_embedding=True)
    print(f"preset {args.preset} ({args.dtype}), {args.rows} rows = {len(prompts)} prompts x {args.k}, "
          f"{args.max_new_tokens} new tokens, T=0.7")  # fmt: skip
    print(f"fp32 matmul peak      : {peak:8.1f} GFLOP/s")
    for name, rate in (("model.generate()", theirs), ("rftlab sampler", ours)):
        print(f"{name:<22}: {rate:8,.0f} tokens/s  ({100 * flops_per_token * rate / 1e9 / peak:.1f}% of peak)")
    print(f"ratio rftlab / generate(): {ours / theirs:.2f}  (goal: >= 2)")


if __name__ == "__main__":
    main()

"""Speed benchmark: training tokens/s of rftlab (HF Trainer) against a minimal PyTorch loop, same run.

Both train the default toy preset from the same initial weights on the same SFT examples of the
default toy world, with the same batch size, optimiser and length-grouped batches; throughput counts
the non-padding tokens. Achieved FLOP/s (6 x non-embedding parameters x tokens/s) is set against the
fp32 matmul peak measured in the same run.

    python benchmarks/bench_train.py [--steps 150] [--preset m]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from rftlab.models import char_tokenizer, count_parameters, new_toy_model
from rftlab.toyworld import DEFAULT_CONFIG, make_split
from rftlab.train import IGNORE_INDEX, recipe_with, sft_example, train_causal_lm

BATCH, LEARNING_RATE, WARMUP_STEPS = 16, 3e-3, 5


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the best of several square matmuls at this dtype, after two warm-ups."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    times = []
    for repeat in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        if repeat >= 2:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def length_grouped_batches(examples: list[dict], steps: int, seed: int) -> list[list[dict]]:
    """Shuffled, then sorted by length within groups of 50 batches (as the Trainer's length grouping)."""
    rng, batches = random.Random(seed), []
    while len(batches) < steps:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), 50 * BATCH):
            group = sorted(order[start : start + 50 * BATCH], key=lambda i: -len(examples[i]["input_ids"]))
            batches += [[examples[i] for i in group[j : j + BATCH]] for j in range(0, len(group), BATCH)]
    return batches[:steps]


def plain_loop_tokens_per_second(model, collate, batches: list[list[dict]]) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.1)
    model.train()
    tokens, start = 0, 0.0
    for step, batch in enumerate(batches):
        if step == WARMUP_STEPS:
            tokens, start = 0, time.perf_counter()
        inputs = collate(batch)
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--preset", default="m")
    args = parser.parse_args()
    tokenizer = char_tokenizer()
    train, _ = make_split(2000, 10, seed=0, config=DEFAULT_CONFIG)
    examples = [sft_example(tokenizer, r["query"], r["response"], "compact", 256) for r in train]
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)

    peak = matmul_peak_gflops()
    plain_model = new_toy_model(args.preset, tokenizer, seed=0)
    plain = plain_loop_tokens_per_second(plain_model, collate, length_grouped_batches(examples, args.steps, 0))

    mean_tokens = sum(len(e["input_ids"]) for e in examples) / len(examples)
    recipe = recipe_with("toy-sft", tokens=int(args.steps * BATCH * mean_tokens), global_batch=BATCH,
                         device_batch=BATCH, save_every=10**9, log_every=10**9)  # fmt: skip
    model = new_toy_model(args.preset, tokenizer, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        facts = train_causal_lm(model, tokenizer, examples, Path(folder), recipe, 0, description="bench",
                                show_progress=False, group_by_length=True)  # fmt: skip
    ours = facts["tokens_seen"] / facts["train_seconds"]

    flops_per_token = 6 * count_parameters(model, non_embedding=True)
    print(f"preset {args.preset}: {count_parameters(model):,} parameters; batch {BATCH}, {args.steps} steps, fp32")
    print(f"fp32 matmul peak (2048^3)  : {peak:8.1f} GFLOP/s")
    print(f"plain PyTorch loop         : {plain:8,.0f} tokens/s  ({flops_per_token * plain / 1e9:.1f} GFLOP/s, "
          f"{100 * flops_per_token * plain / 1e9 / peak:.1f}% of peak)")  # fmt: skip
    print(f"rftlab (HF Trainer)        : {ours:8,.0f} tokens/s  ({flops_per_token * ours / 1e9:.1f} GFLOP/s, "
          f"{100 * flops_per_token * ours / 1e9 / peak:.1f}% of peak)")  # fmt: skip
    print(f"ratio rftlab / plain loop  : {ours / plain:.2f}  (goal: >= 0.8)")


if __name__ == "__main__":
    main()

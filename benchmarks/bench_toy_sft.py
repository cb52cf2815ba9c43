"""Quality benchmark: the default toy SFT, from the default pre-trained base, on the default toy world.

Generates the toy world, pre-trains the default base (cached in the work folder), fine-tunes it with
the default toy recipe, then measures greedy accuracy on the test set (by number of steps) and pass@k
on train questions with temperature sampling (plain `model.generate`, until `rftlab eval` exists).

    python benchmarks/bench_toy_sft.py [--workdir DIR] [--seed 0] [--k 4]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from rftlab.answers import extract_gsm8k, same_number
from rftlab.data import PROMPT_TEMPLATES, iter_jsonl, read_problems
from rftlab.models import load_model, read_metadata
from rftlab.reject import equation_key
from rftlab.toyworld import write_toyworld
from rftlab.train import RECIPES, pretrain, sft

MAX_NEW_TOKENS = 128


def generate(model, tokenizer, queries: list[str], k: int, temperature: float, batch: int = 64) -> list[list[str]]:
    """k completions per query (greedy when temperature is 0), cut at EOS."""
    tokenizer.padding_side = "left"
    prompts = [PROMPT_TEMPLATES["compact"].format(query=q) for q in queries]
    outputs: list[list[str]] = []
    model.eval()
    for start in range(0, len(prompts), batch):
        encoded = tokenizer(prompts[start : start + batch], return_tensors="pt", padding=True)
        with torch.inference_mode():
            tokens = model.generate(
                **encoded,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_k=None,
                top_p=None,
                num_return_sequences=k,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(tokens[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        outputs += [texts[i : i + k] for i in range(0, len(texts), k)]
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-toy-sft"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=4, help="samples per train question for pass@k")
    parser.add_argument("--train-questions", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    work = args.workdir
    data = work / "data"
    if not (data / "toyworld.json").exists():
        write_toyworld(data, seed=args.seed)
    base, tuned = work / "base", work / f"sft-{args.seed}"
    pretrain(data / "pretrain.txt", base, preset="m", seed=args.seed)
    sft(str(base), data / "train.jsonl", tuned, recipe=RECIPES["toy-sft"], seed=args.seed)
    base_facts, sft_facts = read_metadata(base), read_metadata(tuned)

    model, tokenizer = load_model(tuned, dtype="float32")
    test = read_problems(data / "test.jsonl")
    steps = {record["id"]: record["steps"] for _, record in iter_jsonl(data / "test.jsonl")}
    start = time.perf_counter()
    greedy = generate(model, tokenizer, [p.query for p in test], k=1, temperature=0.0)
    greedy_seconds = time.perf_counter() - start
    right = [same_number(extract_gsm8k(out[0]), p.answer) for out, p in zip(greedy, test, strict=True)]
    by_steps: dict[int, list[bool]] = defaultdict(list)
    for problem, ok in zip(test, right, strict=True):
        by_steps[steps[problem.id]].append(ok)

    train = read_problems(data / "train.jsonl")[: args.train_questions]
    sampled = generate(model, tokenizer, [p.query for p in train], k=args.k, temperature=0.7)
    correct = [[same_number(extract_gsm8k(s), p.answer) for s in outs] for outs, p in zip(sampled, train, strict=True)]
    distinct = [
        len({equation_key(s) for s, ok in zip(outs, oks, strict=True) if ok} - {None})
        for outs, oks in zip(sampled, correct, strict=True)
    ]

    print(f"base: {base_facts['parameters']:,} parameters, held-out loss {base_facts['heldout_loss']:.4f}, "
          f"{base_facts['tokens_seen']:,} tokens in {base_facts['train_seconds']:.0f} s")  # fmt: skip
    print(f"sft : {sft_facts['tokens_seen']:,} tokens in {sft_facts['train_seconds']:.0f} s "
          f"({sft_facts['tokens_seen'] / sft_facts['train_seconds']:,.0f} tokens/s)")  # fmt: skip
    print(f"greedy test accuracy (maj1@1): {100 * sum(right) / len(right):.1f}% of {len(right)} "
          f"({greedy_seconds:.0f} s)")  # fmt: skip
    for n in sorted(by_steps):
        print(f"  {n} steps: {100 * sum(by_steps[n]) / len(by_steps[n]):5.1f}% of {len(by_steps[n])}")
    n_train = len(train)
    print(f"train questions, k={args.k} at T=0.7: pass@{args.k} {100 * sum(map(any, correct)) / n_train:.1f}%, "
          f"{100 * sum(map(sum, correct)) / (n_train * args.k):.1f}% of samples correct, "
          f"{sum(distinct) / n_train:.2f} distinct correct equation lists per question")  # fmt: skip


if __name__ == "__main__":
    main()

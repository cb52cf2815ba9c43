"""Quality benchmark: the default toy SFT, from the default pre-trained base, on the default toy world.

Generates the toy world, pre-trains the default base and fine-tunes it with the default toy recipe (both
cached in the work folder), then measures greedy accuracy on the test set (by number of steps) and,
with k samples at T=0.7 on train questions, pass@k and the distinct correct equation lists: the
headroom that RFT feeds on.

    python benchmarks/bench_toy_sft.py [--workdir runs/bench-toy-sft] [--seed 0] [--k 4]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from rftlab.data import iter_jsonl, read_problems, write_jsonl
from rftlab.evaluate import evaluate_model, predictions_path
from rftlab.models import read_metadata
from rftlab.reject import reject, statistics
from rftlab.sample import SamplingSettings, run_sampling
from rftlab.toyworld import write_toyworld
from rftlab.train import RECIPES, pretrain, sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-toy-sft"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=4, help="samples per train question for pass@k")
    parser.add_argument("--train-questions", type=int, default=500)
    args = parser.parse_args()
    work, data = args.workdir, args.workdir / "data"
    if not (data / "toyworld.json").exists():
        write_toyworld(data, seed=args.seed)
    base, tuned = work / "base", work / f"sft-{args.seed}"
    pretrain(data / "pretrain.txt", base, preset="m", seed=args.seed)
    sft(str(base), data / "train.jsonl", tuned, recipe=RECIPES["toy-sft"], seed=args.seed)
    base_facts, sft_facts = read_metadata(base), read_metadata(tuned)

    start = time.perf_counter()
    summary = evaluate_model(str(tuned), data / "test.jsonl", work / f"eval-{args.seed}.json", seed=args.seed)
    eval_seconds = time.perf_counter() - start
    steps = {record["id"]: record["steps"] for _, record in iter_jsonl(data / "test.jsonl")}
    by_steps: dict[int, list[bool]] = defaultdict(list)
    for _, prediction in iter_jsonl(predictions_path(work / f"eval-{args.seed}.json")):
        by_steps[steps[prediction["id"]]].append(prediction["correct_first"])

    questions = work / "train-questions.jsonl"
    write_jsonl(questions, [record for _, record in iter_jsonl(data / "train.jsonl")][: args.train_questions])
    samples = work / f"train-samples-{args.seed}.jsonl"
    run_sampling(str(tuned), questions, samples, SamplingSettings(k=args.k, temperature=0.7, seed=args.seed))
    stats = statistics(reject(read_problems(questions), [samples]))

    print(f"base: {base_facts['parameters']:,} parameters, held-out loss {base_facts['heldout_loss']:.4f}, "
          f"{base_facts['tokens_seen']:,} tokens in {base_facts['train_seconds']:.0f} s")  # fmt: skip
    print(f"sft : {sft_facts['tokens_seen']:,} tokens in {sft_facts['train_seconds']:.0f} s "
          f"({sft_facts['tokens_seen'] / sft_facts['train_seconds']:,.0f} tokens/s)")  # fmt: skip
    print(f"greedy test accuracy (maj1@1): {summary['maj1@1']:.1f}% of {summary['n']} ({eval_seconds:.0f} s)")
    for n in sorted(by_steps):
        print(f"  {n} steps: {100 * sum(by_steps[n]) / len(by_steps[n]):5.1f}% of {len(by_steps[n])}")
    print(f"{stats['problems']} train questions, k={args.k} at T=0.7: pass@{args.k} "
          f"{100 * stats['coverage_by_file'][-1]:.1f}%, {100 * stats['correct'] / stats['samples']:.1f}% of paths "
          f"correct, {stats['distinct_per_problem']:.2f} distinct correct equation lists per question")  # fmt: skip


if __name__ == "__main__":
    main()

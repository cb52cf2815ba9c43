"""Quality check: the demo with three seeds; RFT must beat SFT on maj1@1 for each.

Runs (or reuses) `rftlab demo --seed S --out runs/demo-sS` for S = 0, 1, 2 and prints the SFT and RFT
accuracies and the demo's wall time per seed.

    python benchmarks/demo_seeds.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rftlab.pipeline import DemoConfig, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("| seed | SFT maj1@1 | RFT maj1@1 | SFT maj1@4 | RFT maj1@4 | RFT paths | demo minutes |")
    print("|---|---|---|---|---|---|---|")
    wins = 0
    for seed in args.seeds:
        results = run_demo(Path(f"runs/demo-s{seed}"), DemoConfig(seed=seed), quiet=True)
        sft, rft = results["evaluations"]["SFT"], results["evaluations"]["RFT"]
        wins += rft["maj1@1"] > sft["maj1@1"]
        minutes = sum(results["seconds"].values()) / 60
        print(f"| {seed} | {sft['maj1@1']:.1f} | {rft['maj1@1']:.1f} | {sft['maj1@k']:.1f} | {rft['maj1@k']:.1f} | "
              f"{results['rft_examples']:,} | {minutes:.1f} |")  # fmt: skip
    print(f"RFT beats SFT on maj1@1 for {wins} of {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()

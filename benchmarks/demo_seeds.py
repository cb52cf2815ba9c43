"""Quality check: the demo with three seeds; RFT must beat SFT on maj1@1 for each.

Runs `rftlab demo --seed S --out runs/demo-sS` for S = 0, 1, 2 (a finished run's results.json is reused)
and prints the SFT and RFT accuracies and the time of the run that did the work, per seed.

    python benchmarks/demo_seeds.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rftlab.data import read_json
from rftlab.jobs.demo import DemoJob


def demo_results(seed: int) -> dict:
    """The results of a finished demo run with this seed's default settings, else a new (resumed) run."""
    demo = DemoJob(out=Path(f"runs/demo-s{seed}"), seed=seed, quiet=True)
    if (demo.out / "results.json").exists():
        results = read_json(demo.out / "results.json")
        if results["config"] == demo.identity():
            return results
    return demo.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("| seed | SFT maj1@1 | RFT maj1@1 | SFT maj1@4 | RFT maj1@4 | RFT paths | demo minutes |")
    print("|---|---|---|---|---|---|---|")
    wins = 0
    for seed in args.seeds:
        results = demo_results(seed)
        sft, rft = results["evaluations"]["SFT"], results["evaluations"]["RFT"]
        wins += rft["maj1@1"] > sft["maj1@1"]
        minutes = sum(results["seconds"].values()) / 60
        print(f"| {seed} | {sft['maj1@1']:.1f} | {rft['maj1@1']:.1f} | {sft['maj1@k']:.1f} | {rft['maj1@k']:.1f} | "
              f"{results['rft_examples']:,} | {minutes:.1f} |")  # fmt: skip
    print(f"RFT beats SFT on maj1@1 for {wins} of {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()

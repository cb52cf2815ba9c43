"""Quality check: the demo with three seeds, compute-matched, per seed and pooled.

Runs `rftlab demo --seed S --out runs/demo-sS` for S = 0, 1, 2 (a finished run's results.json is reused; each
seed draws its own world, base, training order and samples) and prints, per seed, maj1@1 with its 95% interval
for SFT, RFT and the two compute-matched controls and the verdict; then the same over all seeds pooled (a
two-level bootstrap: seeds, then test problems), the README's three-seed table.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--out runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rftlab.compare import MODELS, compare, greedy_outcomes
from rftlab.data import read_json
from rftlab.evaluate import predictions_path
from rftlab.jobs.demo import DemoJob


def demo_results(seed: int, root: Path) -> tuple[DemoJob, dict]:
    """The results of a finished demo run with this seed's default settings, else a new (resumed) run."""
    demo = DemoJob(out=root / f"demo-s{seed}", seed=seed, quiet=True)
    if (demo.out / "results.json").exists():
        results = read_json(demo.out / "results.json")
        if results["config"] == demo.identity():
            return demo, results
    return demo, demo.run()


def row(label: str, models: dict, verdict: str, minutes: str) -> str:
    cells = [f"{models[name]['maj1@1']:.1f} ({models[name]['maj1@1_ci95'][0]:.1f}-{models[name]['maj1@1_ci95'][1]:.1f})"
             for name in MODELS]  # fmt: skip
    return f"| {label} | {' | '.join(cells)} | {verdict} | {minutes} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    print("| seed | SFT | RFT | SFT at RFT's tokens | RFT at SFT's tokens | verdict | demo minutes |")
    print("|---|---|---|---|---|---|---|")
    outcomes: dict[str, list[list[float]]] = {name: [] for name in MODELS}
    for seed in args.seeds:
        demo, results = demo_results(seed, args.out)
        minutes = f"{sum(results['seconds'].values()) / 60:.1f}"
        print(row(str(seed), results, results["verdict"]["status"], minutes), flush=True)
        for name in MODELS:
            outcomes[name].append(greedy_outcomes(predictions_path(demo.out / "eval" / f"{name}.json")))
    pooled = compare(outcomes)
    print(row("pooled", pooled["models"], pooled["verdict"]["status"], ""))
    for key, contrast in pooled["contrasts"].items():
        low, high = contrast["ci95"]
        print(f"pooled {key}: {contrast['difference']:+.1f} points (95% CI {low:+.1f} to {high:+.1f})")
    print(pooled["verdict"]["text"])


if __name__ == "__main__":
    main()

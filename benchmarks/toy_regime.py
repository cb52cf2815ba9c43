"""Quality check: is the demo's SFT data-limited, as the paper's is? Validation accuracy against epochs for
half, all and twice the demo's train problems, each trained for twice the demo's epochs.

The demo's settings (`rftlab demo` defaults: world, base, recipe, seed) on a world with twice its train
problems; SFT on the first half, the first quarter and all of them (seeded subsets of the larger world's train
set), each for 2x the demo's epochs with the validation curve measured `--count` times. Data-limited: the curve
of the demo's size stops rising before its budget ends, and twice the data reaches higher. Prints one table of
the curves (validation accuracy, %) and one of the best points; writes OUT/regime.json.

    python benchmarks/toy_regime.py [--out runs/regime] [--seed 0]
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from rftlab.data import write_json
from rftlab.jobs.demo import DemoJob
from rftlab.jobs.pretrain import PretrainJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.subset import SubsetJob
from rftlab.jobs.world import WorldJob

SHARES = (Fraction(1, 4), Fraction(1, 2), Fraction(1))
"""Of the larger world's train problems: half, all and twice the demo's."""


def curves(out: Path, seed: int, count: int) -> dict[str, dict]:
    """Each train size's validation curve and best point, trained with the demo's settings for 2x its epochs."""
    demo = DemoJob(seed=seed)
    data = out / "data"
    world = WorldJob(out=data, n_train=2 * demo.n_train, n_valid=demo.n_valid, n_test=demo.n_test, seed=seed)
    if not (data / "valid.jsonl").exists():
        world.run()
    PretrainJob(corpus=data / "pretrain.txt", out=out / "base", preset=demo.preset, tokens=demo.pretrain_tokens,
                seed=seed, quiet=True).run()  # fmt: skip
    found = {}
    for share in SHARES:
        size = int(share * 2 * demo.n_train)
        train = data / "train.jsonl"
        if share < 1:
            train = out / f"train-{size}.jsonl"
            SubsetJob(data=data / "train.jsonl", out=train, fraction=float(share), seed=seed).run()
        facts = SftJob(model=str(out / "base"), data=train, out=out / f"sft-{size}", recipe="toy-sft",
                       epochs=2 * demo.epochs, validation=data / "valid.jsonl", eval_count=count, seed=seed,
                       quiet=True).run()  # fmt: skip
        found[str(size)] = {"tokens_seen": facts["tokens_seen"], **facts["validation"]}
        print(f"{size} problems: best {100 * facts['validation']['best']['accuracy']:.1f}% at epoch "
              f"{facts['validation']['best']['epoch']:.1f}", flush=True)  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/regime"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=16, help="validation measurements per run")
    args = parser.parse_args()
    found = curves(args.out, args.seed, args.count)
    write_json(args.out / "regime.json", found)
    sizes = list(found)
    print("\n| epoch | " + " | ".join(f"{size} problems" for size in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for i, point in enumerate(found[sizes[0]]["curve"]):  # the same epochs for every size (counted over epochs)
        cells = [f"{100 * found[size]['curve'][i]['accuracy']:.1f}" if i < len(found[size]["curve"]) else ""
                 for size in sizes]  # fmt: skip
        print(f"| {point['epoch']:.1f} | " + " | ".join(cells) + " |")
    print("\n| train problems | best validation accuracy | at epoch | tokens to there | budget tokens |")
    print("|---|---|---|---|---|")
    for size in sizes:
        best = found[size]["best"]
        print(f"| {size} | {100 * best['accuracy']:.1f}% | {best['epoch']:.1f} | {best['tokens_seen']:,} | "
              f"{found[size]['tokens_seen']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()

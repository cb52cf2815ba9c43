"""Diagnostics of a finished toy-world study: misnamed RFT paths and arithmetic errors by operand count.

Rejection keeps a path when its answer and every `<<lhs=rhs>>` check (the paper's rule), so a path
that computes the right numbers under the wrong names ("Fay=<<10-9=1>>1" when the question is about
Cy) is kept. For every `reject` cell this prints the selected paths and the share whose step labels
name someone absent from the question; for every `eval` cell, the share of wrong annotations in the
greedy test answers, by the number of operands (two, or three and more).

    python benchmarks/study_paths.py [runs/study-quick]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rftlab.calculator import annotations, check_equation
from rftlab.data import iter_jsonl, read_json
from rftlab.toyworld import NAMES

LABEL_RE = re.compile(r"^([A-Z][a-z]+)(?: cost)?=", re.MULTILINE)
NUMBER_RE = re.compile(r"\d+")


def misnamed(query: str, response: str) -> bool:
    """True when a step is labelled with a person's name that the question does not mention."""
    asked = set(re.findall(r"\b[A-Z][a-z]+\b", query))
    return any(label in NAMES and label not in asked for label in LABEL_RE.findall(response))


def wrong_equations_by_operands(greedy: Path) -> dict[str, tuple[int, float]]:
    """Annotations with two and with three or more operands: (count, share that does not check)."""
    counts = {"2": [0, 0], "3+": [0, 0]}
    for _, row in iter_jsonl(greedy):
        for equation in annotations(row["response"]):
            group = counts["2" if len(NUMBER_RE.findall(equation.split("=")[0])) <= 2 else "3+"]
            group[0] += 1
            group[1] += not check_equation(equation)
    return {name: (total, wrong / max(1, total)) for name, (total, wrong) in counts.items()}


def print_misnamed(study: Path) -> None:
    print(f"{'reject cell':55} {'selected':>9} {'misnamed':>9}")
    for cell in sorted((study / "cells" / "reject").iterdir()):
        if not (cell / "cell.json").exists():
            continue
        paths = [row for _, row in iter_jsonl(cell / "rft.jsonl") if row["source"] != "gold"]
        share = sum(misnamed(row["query"], row["response"]) for row in paths) / max(1, len(paths))
        label = read_json(cell / "cell.json")["label"]
        print(f"{label:55} {len(paths):9,} {100 * share:8.1f}%")


def print_arithmetic(study: Path) -> None:
    print(f"\n{'eval cell (greedy test answers)':55} {'2 operands: wrong':>20} {'3+ operands: wrong':>20}")
    for cell in sorted((study / "cells" / "eval").iterdir()):
        if not (cell / "cell.json").exists():
            continue
        groups = wrong_equations_by_operands(cell / "eval.greedy.jsonl")
        shown = [f"{share * 100:5.1f}% of {total:5,}" for total, share in groups.values()]
        print(f"{read_json(cell / 'cell.json')['label']:55} {shown[0]:>20} {shown[1]:>20}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", type=Path, default=Path("runs/study-quick"), help="study output folder")
    args = parser.parse_args()
    print_misnamed(args.study)
    print_arithmetic(args.study)


if __name__ == "__main__":
    main()

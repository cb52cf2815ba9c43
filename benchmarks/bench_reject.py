"""Benchmark: `rftlab reject` at paper scale against a straightforward Algorithm 1, in one run.

Builds k (default 100) synthetic sample files over the GSM8K train set: perturbed gold solutions
(reworded lines, swapped operands, dropped annotations, wrong annotations, wrong answers), as k
seeded runs of a model would give. Then times the `rftlab reject` command (a subprocess, as users
run it) and a reference implementation written here after the paper's code, checks that both
select exactly the same paths, and prints the ratio and rftlab's peak memory.

    python benchmarks/bench_reject.py [--k 100] [--problems 7473] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from rftlab.calculator import annotations, check_equation

GSM8K_DIR = os.environ.get("RFTLAB_GSM8K_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
GSM8K_TRAIN = Path(GSM8K_DIR) / "train.jsonl"
FILLERS = ["So ", "Then ", "We know that ", "First, ", "Next, ", "This means ", "Thus, ", "Now "]
ENDINGS = [" in total.", " altogether.", " overall.", "!", " as a result."]
BINARY_RE = re.compile(r"<<(\d+(?:\.\d+)?)([+*])(\d+(?:\.\d+)?)=")
ANNOTATION_RE = re.compile(r"<<[^>]*>>")
ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


# Synthetic samples -------------------------------------------------------------------------------


def reword(response: str, rng: random.Random) -> str:
    lines = response.split("\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(max(1, len(lines) - 1))
        if rng.random() < 0.5:
            lines[i] = rng.choice(FILLERS) + lines[i]
        else:
            lines[i] = lines[i].rstrip(".") + rng.choice(ENDINGS)
    return "\n".join(lines)


def swap_operands(response: str, rng: random.Random) -> str:
    matches = list(BINARY_RE.finditer(response))
    if not matches:
        return response
    m = rng.choice(matches)
    return response[: m.start()] + f"<<{m.group(3)}{m.group(2)}{m.group(1)}=" + response[m.end() :]


def drop_annotation(response: str, rng: random.Random) -> str:
    matches = list(ANNOTATION_RE.finditer(response))
    if not matches:
        return response
    m = rng.choice(matches)
    return response[: m.start()] + response[m.end() :]


def corrupt_annotation(response: str, rng: random.Random) -> str:
    matches = list(ANNOTATION_RE.finditer(response))
    if not matches:
        return response
    m = rng.choice(matches)
    return response[: m.end() - 2] + "1" + response[m.end() - 2 :]  # rhs gains a digit


def wrong_answer(response: str, rng: random.Random) -> str:
    return ANSWER_RE.sub(lambda m: f"#### {m.group(1)}{rng.randint(1, 9)}", response, count=1)


PERTURBATIONS = [
    (0.6, reword),
    (0.3, swap_operands),
    (0.12, drop_annotation),
    (0.08, corrupt_annotation),
    (0.3, wrong_answer),
]


def perturbed(response: str, rng: random.Random) -> str:
    for probability, perturb in PERTURBATIONS:
        if rng.random() < probability:
            response = perturb(response, rng)
    return response


def build_samples(problems: list[dict], k: int, workdir: Path) -> list[Path]:
    paths = []
    for seed in range(k):
        rng = random.Random(seed)
        path = workdir / f"samples_{seed:03d}.jsonl"
        with open(path, "w") as handle:
            for index, problem in enumerate(problems):
                record = {"id": str(index), "response": perturbed(problem["response"], rng), "seed": seed}
                handle.write(json.dumps(record) + "\n")
        paths.append(path)
    return paths


# The reference: the paper's loop, written plainly ------------------------------------------------


def reference_answer(text: str) -> float | None:
    match = ANSWER_RE.search(text)
    try:
        return float(match.group(1).replace(",", "")) if match else None
    except ValueError:
        return None


def reference_reject(train: Path, sample_paths: list[Path], out: Path) -> None:
    problems = records(train)
    gold = [reference_answer(p["response"]) for p in problems]
    correct: dict[int, list[tuple[str, str]]] = {i: [] for i in range(len(problems))}
    for path in sample_paths:
        for sample in records(path):
            i = int(sample["id"])
            answer = reference_answer(sample["response"])
            if answer is not None and abs(answer - gold[i]) < 1e-4:
                correct[i].append((sample["response"], sample.get("model") or path.stem))
    with open(out, "w") as handle:
        for i, problem in enumerate(problems):
            kept, keys = [], []
            for text, source in correct[i]:
                found = annotations(text)
                if not all(check_equation(equation) for equation in found):
                    continue
                key = "".join("|".join(found).split())
                if key not in keys:
                    kept.append((text, source))
                    keys.append(key)
                    continue
                slot = keys.index(key)
                now = kept[slot][0]
                now_score = sum(Levenshtein.distance(now, ref) for ref, _ in kept if ref != now)
                q_score = sum(Levenshtein.distance(text, ref) for ref, _ in kept if ref != now)
                if q_score > now_score:
                    kept[slot] = (text, source)
            rows = [(problem["response"], "gold"), *kept]
            for response, source in rows:
                record = {"query": problem["query"], "response": response, "id": str(i), "source": source}
                handle.write(json.dumps(record) + "\n")


# The run -----------------------------------------------------------------------------------------


def run_rftlab(train: Path, sample_paths: list[Path], out: Path, stats: Path) -> tuple[float, float]:
    """Seconds and peak resident memory (MiB) of one `rftlab reject` run."""
    command = [sys.executable, "-m", "rftlab", "reject", "--quiet", "--train", str(train), "--out", str(out)]
    command += ["--stats", str(stats), *map(str, sample_paths)]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"rftlab reject failed with exit code {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def records(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=100, help="samples per problem (one file each)")
    parser.add_argument("--problems", type=int, default=None, help="first N train problems (default: all)")
    parser.add_argument("--workdir", type=Path, help="where the synthetic files go (default: a temporary folder)")
    args = parser.parse_args()
    if not GSM8K_TRAIN.exists():
        raise SystemExit(f"skipped: GSM8K not found at {GSM8K_TRAIN}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-reject-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    problems = records(GSM8K_TRAIN)[: args.problems]
    train = workdir / "train.jsonl"
    train.write_text("".join(json.dumps(p) + "\n" for p in problems))
    start = time.perf_counter()
    sample_paths = build_samples(problems, args.k, workdir)
    print(f"built {len(problems):,} x {args.k} synthetic samples in {time.perf_counter() - start:.1f} s")

    ours, peak_mib = run_rftlab(train, sample_paths, workdir / "rft.jsonl", workdir / "stats.json")
    start = time.perf_counter()
    reference_reject(train, sample_paths, workdir / "reference.jsonl")
    reference = time.perf_counter() - start

    identical = records(workdir / "rft.jsonl") == records(workdir / "reference.jsonl")
    stats = json.loads((workdir / "stats.json").read_text())
    print(
        f"selection: {stats['correct_per_problem']:.1f} correct, {stats['checked_per_problem']:.1f} checked, "
        f"{stats['distinct_per_problem']:.2f} distinct paths per problem"
    )
    print(f"reference Algorithm 1 : {reference:7.2f} s")
    print(f"rftlab reject         : {ours:7.2f} s  (peak memory {peak_mib:,.0f} MiB)")
    print(f"ratio rftlab/reference: {ours / reference:.3f}  (goal: <= 0.5)")
    print(f"identical selection   : {'yes' if identical else 'NO'}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

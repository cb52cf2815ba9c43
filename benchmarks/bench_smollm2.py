"""A real model on real GSM8K through rftlab: SmolLM2-135M-Instruct (Q4_1 GGUF), cross-checked by math-verify.

1. Greedy maj1@1 on the first N test problems, as `rftlab eval --model GGUF --data TEST --template chat
   --extractor flexible` does it (`evaluate_model`).
2. k paths per problem on the first M train problems, as `rftlab sample --model GGUF --data TRAIN -k 4
   --template chat --temperature 0.7 --seed 0` does it (`run_sampling`), scored like `rftlab eval --samples
   SAMPLES --data TRAIN -k 4 --extractor flexible` (`evaluate_sample_files`): pass@k, maj1@k.
   Both runs share one loaded model (its load is timed apart); each reports its wall time and generated
   tokens/s (the tokens the decoder produced, up to EOS or the end of the `#### N` line).
3. Every generated answer is judged by rftlab's flexible and strict extractors (numeric comparison,
   |pred - gold| < 1e-4) and by math-verify (`verify(parse(gold), parse(text))`, gold first); each
   disagreement is put in a reason category found by inspecting the texts.

Writes OUT/summary.json and OUT/report.md (the markdown it prints); the runs' files are under OUT/work,
removed at the start so that every run is timed from scratch. Torch runs 1 thread by default: on this
shared 2-core machine, with other processes running, 2 OpenMP threads made generation 6-13x *slower* than 1
(measured: 5-9 against 53-72 tokens/s); on an idle machine, try --threads 2. Needs the GSM8K copy in
../shared/data/gsm8k (or RFTLAB_GSM8K_DIR, or --gsm8k) and math-verify (`pip install 'rftlab[bench]'`).

    python benchmarks/bench_smollm2.py [--n-eval 100] [--n-sample 50] [-k 4] [--out runs/bench-smollm2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rftlab.answers import _FLEXIBLE_RE as FLEXIBLE_RE  # the flexible extractor's own pattern
from rftlab.answers import extract_flexible, extract_strict, same_number
from rftlab.backends.base import BackendSettings, SamplingSettings, load_backend
from rftlab.data import Problem, iter_samples, read_json, read_problems, write_json
from rftlab.evaluate import evaluate_model, evaluate_sample_files
from rftlab.sample import run_sampling
from rftlab.smollm2 import GGUF_NAME, Unavailable, cache_path, cached_gguf

ROOT = Path(__file__).resolve().parents[1]
GSM8K_DIR = Path(os.environ.get("RFTLAB_GSM8K_DIR") or ROOT.parent / "shared" / "data" / "gsm8k")
TEMPLATE = "chat"

# Why an rftlab extractor and math-verify read a text differently; tried in this order (`classify`).
NO_HASH = "strict: no `#### N` line, so no answer"
HASH_NOT_FINAL = "strict: the number after the first `####` is not the last one (an expression or more text follows)"
MV_NOTHING = "math-verify extracts nothing"
SAME_NUMBER = "same number read, compared otherwise (tolerance 1e-4 against math-verify's rounding)"
PERCENT = "math-verify reads N% as N/100, rftlab as N"
PART_OF_TOKEN = "rftlab reads part of a fraction or a time (1/12 -> 12, 5:00 -> 00)"
MV_EXPRESSION = "math-verify reads an expression (10 * 5 as 50), rftlab a number in it"
MV_ANSWER_MARKER = "math-verify takes the number after 'answer' or \\boxed, rftlab another"
OTHER_NUMBER = "another number of the text: math-verify's pick is not rftlab's (the last, or the one after ####)"
_PLAIN_NUMBER = re.compile(r"[-$\d.,%\s]+")


def first_lines(source: Path, n: int, target: Path) -> Path:
    """The first n problems of a problem file, byte for byte (their ids stay their 0-based line index)."""
    lines = source.read_bytes().splitlines(keepends=True)
    if len(lines) < n:
        sys.exit(f"{source} has {len(lines)} problems, fewer than {n}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines[:n]))
    return target


def mv_answer(parsed: list[Any]) -> str | None:
    """math-verify's extracted answer as text (its string form), or None when it found nothing."""
    if not parsed:
        return None
    return str(parsed[-1]) if isinstance(parsed[-1], str) else str(parsed[0])


def mv_number(parsed: list[Any]) -> float | None:
    """math-verify's answer as a number, when it has a value (72, 1/12, 10 * 5, 25% as 0.25)."""
    value = parsed[0] if parsed else None
    if not getattr(value, "is_number", False):  # a value without free symbols
        return None
    try:
        return float(value.doit())  # doit: "25%" is 25*UnevaluatedExpr(1/100)
    except (TypeError, ValueError):  # complex, say
        return None


def classify(extractor: str, text: str, extracted: str | None, mv_text: str | None, mv_value: float | None) -> str:
    """Why `extractor` and math-verify read `text` differently: one of the categories above."""
    if extracted is None and extractor == "strict":
        return NO_HASH
    if mv_text is None:
        return MV_NOTHING
    if extracted is not None and mv_value is not None and same_number(extracted, repr(mv_value)):
        return SAME_NUMBER  # both read one number, and it is the comparison that differs
    if extracted is not None and mv_value is not None and abs(float(extracted) / 100 - mv_value) < 1e-9:
        return PERCENT
    if extractor == "strict" and text.rfind(mv_text.strip()) > text.find("#### "):
        return HASH_NOT_FINAL
    last = list(FLEXIBLE_RE.finditer(text))
    if extractor == "flexible" and last and re.search(r"[/:]\s*$", text[: last[-1].start()]):
        return PART_OF_TOKEN
    if not _PLAIN_NUMBER.fullmatch(mv_text.strip().rstrip(".")):
        return MV_EXPRESSION
    marker = max(text.lower().rfind("answer"), text.rfind("\\boxed"))
    if marker >= 0 and text.find(mv_text.strip(), marker) >= 0:
        return MV_ANSWER_MARKER
    return OTHER_NUMBER


def cross_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Judges each row's text by rftlab's flexible and strict extractors and by math-verify (and adds the
    answers and verdicts to the rows). Classifies the *verdict* disagreements (right by one, wrong by the
    other) and, apart, the *readings* that differ under the same verdict (mostly both wrong, for a weak model)."""
    from math_verify import parse, verify

    agreement = {name: Counter() for name in ("flexible", "strict")}
    differences = {kind: {name: Counter() for name in agreement} for kind in ("verdict", "reading")}
    examples: list[dict[str, Any]] = []
    for row in rows:
        text, gold = row["response"], row["gold"]
        parsed = parse(text)
        mv_text, mv_value = mv_answer(parsed), mv_number(parsed)
        row |= {"math_verify": mv_text, "correct_math_verify": bool(verify(parse(gold), parsed))}
        for name, extract in (("flexible", extract_flexible), ("strict", extract_strict)):
            extracted = extract(text)
            correct = same_number(extracted, gold)
            row |= {name: extracted, f"correct_{name}": correct}
            agreement[name][correct, row["correct_math_verify"]] += 1
            same_reading = (extracted is None and mv_text is None) or (
                extracted is not None and mv_value is not None and same_number(extracted, repr(mv_value))
            )
            kind = "verdict" if correct != row["correct_math_verify"] else "reading"
            if kind == "reading" and same_reading:
                continue
            category = classify(name, text, extracted, mv_text, mv_value)
            differences[kind][name][category] += 1
            if not any(e["kind"] == kind and e["extractor"] == name and e["category"] == category for e in examples):
                examples.append({"kind": kind, "extractor": name, "category": category, "run": row["run"],
                                 "id": row["id"], "gold": gold, "rftlab": extracted, "rftlab_correct": correct,
                                 "math_verify": mv_text, "math_verify_correct": row["correct_math_verify"],
                                 "tail": text[-200:]})  # fmt: skip
    cells = {(True, True): "both right", (False, False): "both wrong", (True, False): "only rftlab right",
             (False, True): "only math-verify right"}  # fmt: skip
    return {
        "answers": len(rows),
        "agreement": {name: {cells[key]: table[key] for key in cells} for name, table in agreement.items()},
        "disagreements": {
            kind: {name: dict(counter.most_common()) for name, counter in by_name.items()}
            for kind, by_name in differences.items()
        },
        "examples": examples,
    }


def generated_rows(run: str, problems: list[Problem], samples: Path) -> list[dict[str, Any]]:
    gold = {problem.id: problem.answer for problem in problems}
    return [{"run": run, "id": s.id, "gold": gold[s.id], "response": s.response} for s in iter_samples(samples)]


def report(summary: dict[str, Any]) -> str:
    """The markdown account of a summary: scores and speed, then the cross-check."""
    runs, check = summary["runs"], summary["cross_check"]
    ev, sa = runs["eval"], runs["sample"]
    k, flex, strict = sa["k"], sa["flexible"], sa["strict"]
    lines = [
        f"## {GGUF_NAME} on GSM8K through rftlab ({summary['machine']})",
        "",
        f"Model load {summary['load_seconds']:.1f} s (once, for both runs). Load average (1 min) "
        f"{summary['load_average_before']:.2f} before and {summary['load_average_after']:.2f} after: other "
        "processes share this machine, so these tokens/s are lower than on an idle one.",
        "",
        "| run | paths | scores, flexible (strict) | wall s | generated tokens | tokens/s |",
        "|---|---|---|---|---|---|",
        f"| eval: test[:{ev['problems']}], greedy | {ev['paths']} | maj1@1 {ev['flexible']['maj1@1']:.1f}% "
        f"({ev['strict']['maj1@1']:.1f}%) | {ev['seconds']:.1f} | {ev['generated_tokens']:,} | "
        f"{ev['tokens_per_second']:.1f} |",
        f"| sample: train[:{sa['problems']}], k={k}, T=0.7 | {sa['paths']} | pass@{k} {flex['pass@k']:.1f}% "
        f"({strict['pass@k']:.1f}%), maj1@{k} {flex['maj1@k']:.1f}% ({strict['maj1@k']:.1f}%), maj1@1 "
        f"{flex['maj1@1']:.1f}% ({strict['maj1@1']:.1f}%), per path {flex['sample_accuracy']:.1f}% "
        f"({strict['sample_accuracy']:.1f}%) | {sa['seconds']:.1f} | {sa['generated_tokens']:,} | "
        f"{sa['tokens_per_second']:.1f} |",
        "",
        f"### Verdicts against math-verify: {check['answers']} generated answers",
        "",
    ]
    cells = list(next(iter(check["agreement"].values())))
    lines += ["| rftlab extractor | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
    lines += [f"| {name} | " + " | ".join(str(t[c]) for c in cells) + " |" for name, t in check["agreement"].items()]
    for kind, title in (("verdict", "Verdict disagreements"), ("reading", "Same verdict, another answer read")):
        lines += ["", f"### {title}, by reason", "", "| extractor | reason | count |", "|---|---|---|"]
        for name, counts in check["disagreements"][kind].items():
            lines += [f"| {name} | {category} | {count} |" for category, count in counts.items()]
            lines += [] if counts else [f"| {name} | (none) | 0 |"]
    lines += ["", "### One example per reason", ""]
    for e in check["examples"]:
        tail = e["tail"].replace("\n", "⏎ ").replace("`", "'")
        lines.append(
            f"- {e['kind']}, {e['extractor']}, *{e['category']}* ({e['run']}, id {e['id']}): gold {e['gold']}; "
            f"rftlab {e['rftlab']!r} ({'right' if e['rftlab_correct'] else 'wrong'}), math-verify "
            f"{e['math_verify']!r} ({'right' if e['math_verify_correct'] else 'wrong'}); text ends `…{tail}`"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-eval", type=int, default=100, help="first N GSM8K test problems, greedy (100)")
    parser.add_argument("--n-sample", type=int, default=50, help="first M GSM8K train problems, sampled (50)")
    parser.add_argument("-k", type=int, default=4, choices=range(2, 65), metavar="K", help="paths per problem (4)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-smollm2"), help="output folder")
    parser.add_argument("--gguf", type=Path, help=f"the GGUF file (default: the cached one, {cache_path()})")
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_DIR, help=f"GSM8K folder ({GSM8K_DIR})")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per batch (rftlab's default, 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see the note above)")
    parser.add_argument("--rescore", action="store_true", help="redo only the cross-check and report of an earlier "
                        "run with the same --out, -k, --n-eval and --n-sample (its timings are kept)")  # fmt: skip
    args = parser.parse_args()
    try:
        import math_verify  # noqa: F401  (fail now, not after minutes of generation)
    except ImportError:
        sys.exit("the cross-check needs math-verify: pip install 'rftlab[bench]'")
    work = args.out / "work"
    files = {
        "test": work / f"test-first{args.n_eval}.jsonl",
        "train": work / f"train-first{args.n_sample}.jsonl",
        "greedy": work / "eval-test.greedy.jsonl",
        "samples": work / f"samples-train-k{args.k}.jsonl",
    }
    summary = read_json(args.out / "summary.json") if args.rescore else generate(args, files)

    print("cross-check with math-verify ...", file=sys.stderr)
    rows = generated_rows("test greedy", read_problems(files["test"]), files["greedy"])
    rows += generated_rows(f"train k={args.k}", read_problems(files["train"]), files["samples"])
    summary["cross_check"] = cross_check(rows)
    write_json(args.out / "summary.json", summary)
    write_json(work / "cross-check.json", rows)
    text = report(summary)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'report.md'}", file=sys.stderr)


def generate(args: argparse.Namespace, files: dict[str, Path]) -> dict[str, Any]:
    """The two timed runs, from scratch; their summary (without the cross-check)."""
    if not (args.gsm8k / "test.jsonl").exists():
        sys.exit(f"GSM8K not found at {args.gsm8k} (the shared data folder beside the checkout; or --gsm8k)")
    try:
        gguf = args.gguf or cached_gguf()
    except Unavailable as error:
        sys.exit(str(error))
    shutil.rmtree(files["test"].parent, ignore_errors=True)
    test = first_lines(args.gsm8k / "test.jsonl", args.n_eval, files["test"])
    train = first_lines(args.gsm8k / "train.jsonl", args.n_sample, files["train"])
    load_before = os.getloadavg()[0]

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    backend = load_backend(str(gguf), BackendSettings(dtype="float32"), "cpu")
    load_seconds = time.perf_counter() - start
    shared = lambda *_: backend  # noqa: E731  (the one loaded model, for both runs)
    sampling = {"template": TEMPLATE, "max_new_tokens": 256, "batch_size": args.batch_size}

    print(f"eval: greedy on {test.name} ...", file=sys.stderr)
    tokens, start = backend.generated_tokens, time.perf_counter()
    eval_out = files["greedy"].with_name("eval-test.json")  # evaluate_model writes eval-test.greedy.jsonl
    flexible = evaluate_model(str(gguf), test, eval_out, extractor="flexible", sampling=sampling,
                              show_progress=False, make_backend=shared)  # fmt: skip
    eval_run = _timing(backend, tokens, start, problems=args.n_eval, paths=args.n_eval)
    strict = evaluate_sample_files(test, [files["greedy"]], eval_out.with_name("eval-test-strict.json"), "strict")
    eval_run |= {"flexible": flexible, "strict": strict}

    print(f"sample: k={args.k} on {train.name} ...", file=sys.stderr)
    settings = SamplingSettings(k=args.k, temperature=0.7, seed=0, **sampling)
    tokens, start = backend.generated_tokens, time.perf_counter()
    run_sampling(str(gguf), train, files["samples"], settings, show_progress=False, make_backend=shared)
    sample_run = _timing(backend, tokens, start, problems=args.n_sample, paths=args.n_sample * args.k)
    sample_run["k"] = args.k
    for extractor in ("flexible", "strict"):
        scores = train.with_name(f"eval-train-{extractor}.json")
        sample_run[extractor] = evaluate_sample_files(train, [files["samples"]], scores, extractor, args.k)
    return {
        "model": str(gguf),
        "machine": f"{os.cpu_count()} CPU cores, torch {_torch_version()}",
        "load_seconds": round(load_seconds, 2),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "runs": {"eval": eval_run, "sample": sample_run},
        "commands": _commands(gguf, test, train, files["samples"], args.k),
    }


def _timing(backend: Any, tokens_before: int, start: float, *, problems: int, paths: int) -> dict[str, Any]:
    seconds = time.perf_counter() - start
    generated = backend.generated_tokens - tokens_before
    return {"problems": problems, "paths": paths, "seconds": round(seconds, 2), "generated_tokens": generated,
            "tokens_per_second": round(generated / seconds, 2)}  # fmt: skip


def _torch_version() -> str:
    import torch

    return f"{torch.__version__}, {torch.get_num_threads()} thread(s)"


def _commands(gguf: Path, test: Path, train: Path, samples: Path, k: int) -> list[str]:
    """The rftlab commands that these runs are (the benchmark calls their functions with one loaded model)."""
    return [
        f"rftlab eval --model {gguf} --data {test} --out EVAL.json --template {TEMPLATE} --extractor flexible",
        f"rftlab sample --model {gguf} --data {train} --out {samples} -k {k} --template {TEMPLATE} "
        "--temperature 0.7 --seed 0",
        f"rftlab eval --samples {samples} --data {train} --out EVAL.json -k {k} --extractor flexible",
    ]


if __name__ == "__main__":
    main()

"""What rejection keeps, and how often it is wrong: checkers and their error rates on a labelled corpus.

A *checker* is a verifier (`rftlab.verifiers`) with the calculator check on or off (`CHECKERS`): a path it
accepts is one RFT trains on. Its errors are measured on paths whose soundness is known:

- toy-world samples (`toy_corpus`), labelled by the world's solver: a path is sound when its text is one of
  its problem's distinct solutions (`toyworld.distinct_solutions`). An unsound path is of one kind:
  "wrong person" (the solver's equations, a line naming the wrong person), "other equations" (the answer is
  right and every annotation checks, but the list is no solution's), "calculator error" (the answer is right,
  an annotation does not check) or "wrong answer".
- GSM8K gold solutions and perturbations of them (`gsm8k_corpus`): the gold and its answer restated ("#### $N",
  "#### N.00", "The answer is N.", "#### 1,234") are sound; a wrong final answer, and the right answer after an
  annotation made not to check, are not.

False-positive rate: the unsound paths accepted, over the unsound paths; false-negative rate: the sound paths
rejected, over the sound paths; precision: the share of accepted paths that are sound (of what RFT trains on).
Pure Python; math-verify runs in its worker process (`verifiers.MathVerify`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rftlab.answers import extract_gsm8k, same_number
from rftlab.calculator import annotations, equation_key
from rftlab.data import DataError, Problem, iter_samples, read_json, read_problems
from rftlab.toyworld import FORMAT as WORLD_FORMAT
from rftlab.toyworld import ToyProblem, WorldConfig, distinct_solutions, generate_split, generate_validation
from rftlab.verifiers import open_verifier

FORMAT = "rftlab.checker-rates/1"
CHECKERS: dict[str, tuple[str, bool]] = {  # rftlab.jobs.checkers.CHECKER_NAMES repeats the names
    "answer": ("paper", False),
    "paper": ("paper", True),
    "math-verify": ("math-verify", False),
    "math-verify+calculator": ("math-verify", True),
}
"""Checker name: (verifier, calculator check). `paper` is the paper's rule and rftlab's default."""

SOUND = "solver's solution"
_FINAL_RE = re.compile(r"####\s*([^\n]*)\s*$")


class Labelled(NamedTuple):
    """A path with its gold answer, whether it is sound, and its kind."""

    text: str
    gold: str
    sound: bool
    kind: str


def _all_check(text: str) -> bool:
    return equation_key(text) is not None


class Solutions(NamedTuple):
    """A problem's distinct solutions as a path is compared with them: their texts and equation lists."""

    texts: frozenset[str]
    keys: frozenset[str | None]

    @classmethod
    def of(cls, solutions: Sequence[str]) -> Solutions:
        return cls(frozenset(s.strip() for s in solutions), frozenset(equation_key(s, False) for s in solutions))


def toy_kind(text: str, solutions: Solutions, answer: int) -> str:
    """The kind of a toy-world path against its problem's distinct solutions (`SOUND` or an unsound kind)."""
    text = text.strip()
    if text in solutions.texts:
        return SOUND
    if not same_number(extract_gsm8k(text), str(answer)):
        return "wrong answer"
    if not _all_check(text):
        return "calculator error"
    return "wrong person" if equation_key(text, False) in solutions.keys else "other equations"


def world_problems(folder: str | Path) -> tuple[dict[str, ToyProblem], WorldConfig]:
    """The problems of a world folder by record id, and its settings: regenerated from its toyworld.json and
    checked against its train, test and valid files (files that do not match their settings: ValueError)."""
    folder = Path(folder)
    summary = read_json(folder / "toyworld.json")
    if summary.get("format") != WORLD_FORMAT:
        raise ValueError(f"{folder / 'toyworld.json'}: format is {summary.get('format')!r}, not {WORLD_FORMAT}")
    settings = {key: tuple(value) if isinstance(value, list) else value for key, value in summary["config"].items()}
    config, seed = WorldConfig(**settings), summary["seed"]
    train, test = generate_split(summary["train"], summary["test"], seed, config)
    asked = {problem.question("terse") for problem in train + test}
    splits = {"train": train, "test": test, "valid": generate_validation(summary.get("valid", 0), seed, config, asked)}
    problems: dict[str, ToyProblem] = {}
    for split, generated in splits.items():
        if not generated:
            continue
        records = read_problems(folder / f"{split}.jsonl")
        if [record.query for record in records] != [problem.question(config.surface) for problem in generated]:
            raise ValueError(f"{folder / f'{split}.jsonl'}: its questions are not those of its toyworld.json")
        problems.update({record.id: problem for record, problem in zip(records, generated, strict=True)})
    return problems, config


def toy_corpus(world: str | Path, sample_files: Iterable[str | Path]) -> list[Labelled]:
    """The paths of sample files drawn on a toy world's problems, labelled by the world's solver."""
    problems, config = world_problems(world)
    solutions: dict[str, Solutions] = {}
    corpus = []
    for path in sample_files:
        for sample in iter_samples(path):
            problem = problems.get(sample.id)
            if problem is None:
                raise DataError(path, sample.line, f"id {sample.id!r} is no problem of the world {world}")
            if sample.id not in solutions:
                solutions[sample.id] = Solutions.of(distinct_solutions(problem, config.surface))
            kind = toy_kind(sample.response, solutions[sample.id], problem.answer)
            corpus.append(Labelled(sample.response, str(problem.answer), kind == SOUND, kind))
    return corpus


def _restated(response: str, final: str) -> str:
    """The response with its `#### ...` line replaced by `final`."""
    return _FINAL_RE.sub(lambda _: final, response, count=1)


def _plus_one(value: float) -> str:
    """`value + 1` written out in full (`:g` would write 1200001 as 1.2e+06)."""
    return str(int(value) + 1) if value.is_integer() else repr(value + 1)


def _off_annotation(response: str) -> str | None:
    """The response with its first annotation's result made one larger (no longer checking), or None."""
    found = annotations(response)
    if not found or "=" not in found[0]:
        return None
    lhs, rhs = found[0].rsplit("=", 1)
    try:
        wrong = _plus_one(float(rhs.replace(",", "")))
    except ValueError:
        return None
    return response.replace(f"<<{found[0]}>>", f"<<{lhs}={wrong}>>", 1)


def gsm8k_variants(problem: Problem) -> list[Labelled]:
    """A GSM8K gold solution and its perturbations, labelled."""
    answer, number = problem.answer, float(problem.answer)
    restated = {
        "gold": problem.response,
        "answer with $": _restated(problem.response, f"#### ${answer}"),
        "answer as decimal": _restated(problem.response, f"#### {number:.2f}"),
        "answer in words": _restated(problem.response, f"The answer is {answer}."),
    }
    if abs(number) >= 1000 and number == int(number):
        restated["answer with commas"] = _restated(problem.response, f"#### {int(number):,}")
    variants = [Labelled(text, answer, True, kind) for kind, text in restated.items()]
    variants.append(Labelled(_restated(problem.response, f"#### {_plus_one(number)}"), answer, False, "wrong answer"))
    off = _off_annotation(problem.response)
    if off is not None and not _all_check(off):
        variants.append(Labelled(off, answer, False, "calculator error"))
    return variants


def gsm8k_corpus(problems: Sequence[Problem], n: int, seed: int) -> list[Labelled]:
    """The variants of `n` problems drawn with `random.Random(seed)` (all of them when there are fewer)."""
    chosen = random.Random(seed).sample(list(problems), min(n, len(problems)))
    return [variant for problem in chosen for variant in gsm8k_variants(problem)]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def checker_rates(corpus: Sequence[Labelled], verifier: str, calculator: bool) -> dict[str, Any]:
    """One checker's verdicts on the corpus: counts, error rates, precision, and the accepted share per kind."""
    accepted: Counter[str] = Counter()
    with open_verifier(verifier, "gsm8k") as judge:
        for path in corpus:
            if (not calculator or _all_check(path.text)) and judge(path.text, path.gold):
                accepted[path.kind] += 1
        timeouts = judge.timeouts
    kinds = Counter(path.kind for path in corpus)
    sound_kinds = {path.kind for path in corpus if path.sound}
    sound, unsound = sum(kinds[k] for k in sound_kinds), sum(n for k, n in kinds.items() if k not in sound_kinds)
    true_positives = sum(accepted[k] for k in sound_kinds)
    false_positives = sum(accepted.values()) - true_positives
    return {
        "verifier": verifier,
        "calculator_check": calculator,
        "accepted": sum(accepted.values()),
        "false_positives": false_positives,
        "false_negatives": sound - true_positives,
        "false_positive_rate": _share(false_positives, unsound),
        "false_negative_rate": _share(sound - true_positives, sound),
        "precision": _share(true_positives, sum(accepted.values())),
        "accepted_by_kind": {kind: accepted[kind] / kinds[kind] for kind in sorted(kinds)},
        "verifier_timeouts": timeouts,
    }


def corpus_summary(corpus: Sequence[Labelled]) -> dict[str, Any]:
    kinds = Counter(path.kind for path in corpus)
    sound = sum(path.sound for path in corpus)
    return {"paths": len(corpus), "sound": sound, "unsound": len(corpus) - sound,
            "kinds": {kind: kinds[kind] for kind in sorted(kinds)}}  # fmt: skip


def rates(corpora: dict[str, Sequence[Labelled]], checkers: Sequence[str]) -> dict[str, Any]:
    """Every checker's rates on every corpus (name: labelled paths), as `rftlab.checker-rates/1`."""
    unknown = [name for name in checkers if name not in CHECKERS]
    if unknown:
        raise ValueError(f"unknown checker(s) {', '.join(unknown)}; choose from {', '.join(CHECKERS)}")
    return {
        "format": FORMAT,
        "corpora": {
            name: {**corpus_summary(corpus),
                   "checkers": {checker: checker_rates(corpus, *CHECKERS[checker]) for checker in checkers}}
            for name, corpus in corpora.items()
        },
    }  # fmt: skip


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def table(result: dict[str, Any]) -> str:
    """The rates as one text table a corpus."""
    lines = []
    for name, corpus in result["corpora"].items():
        lines.append(f"{name}: {corpus['paths']:,} paths, {corpus['sound']:,} sound, {corpus['unsound']:,} unsound")
        lines.append(f"  {'checker':<24}{'accepted':>10}{'FP rate':>10}{'FN rate':>10}{'precision':>11}")
        for checker, row in corpus["checkers"].items():
            lines.append(f"  {checker:<24}{row['accepted']:>10,}{_percent(row['false_positive_rate']):>10}"
                         f"{_percent(row['false_negative_rate']):>10}{_percent(row['precision']):>11}")  # fmt: skip
    return "\n".join(lines)

"""Rejection sampling: correct, checked, distinct reasoning paths (the paper's Algorithm 1).

A sampled path is *correct* when its final answer equals the gold answer (the paper's rule, or math-verify's:
`rftlab.verifiers`), and *checked* when, in addition, every calculator annotation `<<lhs=rhs>>` checks
(`calculator.check_equation`; the check can be turned off). Among the
checked paths of a problem, taken in sampling order (files in the order given, lines in file
order), the first path of each equation key is kept; a later path with the same key replaces it
when the sum of its character Levenshtein distances to the problem's *other* kept paths is larger
than the kept path's sum. The key (`calculator.equation_key`) is the list of annotations joined by `|`,
all whitespace removed (no annotations: the empty key). Several sample files (e.g. from several models) are
pooled, then selected: the paper's union U13B / U33B. Pure Python: neither torch nor transformers is imported.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from rftlab.answers import DEFAULT_EXTRACTOR
from rftlab.calculator import equation_key
from rftlab.data import DataError, Problem, Progress, iter_samples
from rftlab.verifiers import open_verifier

STATS_FORMAT = "rftlab.reject-stats/1"


class FarthestPaths:
    """Algorithm 1 for one problem: one kept path per key, the one farthest from the others.

    The pairwise distances of the kept paths and each one's sum to the others are maintained as paths
    come and go, so an offer costs one distance per kept path; a text that lost while the kept paths
    stayed the same loses again, so repeated samples cost nothing.
    """

    __slots__ = ("_index", "_losers", "_rows", "_sums", "paths")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._rows: list[array[int]] = []
        self._sums: list[int] = []
        self._losers: set[str] = set()
        self.paths: list[tuple[str, str]] = []
        """Kept (response, source) pairs, in order of their key's first appearance."""

    def offer(self, key: str, text: str, source: str) -> None:
        slot = self._index.get(key)
        if slot is None:
            self._add(key, text, source)
        elif text == self.paths[slot][0] or text in self._losers:
            return
        elif not self._replaces(slot, text, source):
            self._losers.add(text)
            return
        self._losers.clear()

    def _add(self, key: str, text: str, source: str) -> None:
        distances = [Levenshtein.distance(text, kept) for kept, _ in self.paths]
        for row, distance in zip(self._rows, distances, strict=True):
            row.append(distance)
        for slot, distance in enumerate(distances):
            self._sums[slot] += distance
        distances.append(0)
        self._index[key] = len(self.paths)
        self._rows.append(array("l", distances))
        self._sums.append(sum(distances))
        self.paths.append((text, source))

    def _replaces(self, slot: int, text: str, source: str) -> bool:
        """Puts `text` in `slot` when it is farther from the other kept paths; tells whether it did."""
        distances = [
            0 if other == slot else Levenshtein.distance(text, kept) for other, (kept, _) in enumerate(self.paths)
        ]
        total = sum(distances)
        if total <= self._sums[slot]:
            return False
        old_row = self._rows[slot]
        for other, distance in enumerate(distances):
            if other != slot:
                self._sums[other] += distance - old_row[other]
                self._rows[other][slot] = distance
        self._rows[slot] = array("l", distances)
        self._sums[slot] = total
        self.paths[slot] = (text, source)
        return True


class AllPaths:
    """The paper's "no dedup" ablation: every checked path, in sampling order."""

    __slots__ = ("paths",)

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []

    def offer(self, key: str, text: str, source: str) -> None:
        self.paths.append((text, source))


@dataclass
class FileCounts:
    path: str
    samples: int = 0
    correct: int = 0
    checked: int = 0


@dataclass
class Rejection:
    """The selection for each problem, with the counts the statistics are made of."""

    problems: list[Problem]
    selections: list[FarthestPaths | AllPaths]
    dedup: bool
    extractor: str
    verifier: str = "paper"
    check_calculator: bool = True
    verifier_timeouts: int = 0
    """Verdicts the verifier did not reach within its hard timeout (counted wrong)."""
    files: list[FileCounts] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    checked: list[int] = field(default_factory=list)
    first_correct_file: list[int] = field(default_factory=list)
    """Per problem, the 0-based index of the file with its first correct path, or -1."""
    first_correct_sample: list[int] = field(default_factory=list)
    """Per problem, how many of its paths had been read at its first correct one, or 0."""

    def records(self) -> Iterator[dict[str, Any]]:
        """RFT data: for each problem its gold solution (`source: gold`), then its selected paths."""
        for problem, selection in zip(self.problems, self.selections, strict=True):
            yield {"query": problem.query, "response": problem.response, "id": problem.id, "source": "gold"}
            for response, source in selection.paths:
                yield {"query": problem.query, "response": response, "id": problem.id, "source": source}


def reject(
    problems: list[Problem],
    sample_paths: Sequence[str | os.PathLike[str]],
    *,
    dedup: bool = True,
    extractor: str = DEFAULT_EXTRACTOR,
    first_k: int | None = None,
    verifier: str = "paper",
    check_calculator: bool = True,
    show_progress: bool | None = None,
) -> Rejection:
    """Selects the correct, checked (and, with `dedup`, distinct) paths of all sample files, pooled.

    `first_k` reads only the first k paths of each problem in each file (RFT with a smaller k from one
    sampling run: paths are drawn independently, so a prefix is a k-sample). `verifier` decides which answers
    are right (`rftlab.verifiers`: the paper's, or math-verify); `check_calculator=False` keeps a correct path
    whatever its annotations compute. `show_progress=None` shows a progress bar on stderr when it is a terminal.
    """
    if first_k is not None and first_k < 1:
        raise ValueError(f"first_k must be at least 1, got {first_k}")
    n = len(problems)
    selector = FarthestPaths if dedup else AllPaths
    result = Rejection(
        problems,
        [selector() for _ in problems],
        dedup,
        extractor,
        verifier,
        check_calculator,
        samples=[0] * n,
        correct=[0] * n,
        checked=[0] * n,
        first_correct_file=[-1] * n,
        first_correct_sample=[0] * n,
    )
    from tqdm import tqdm

    total_bytes = sum(_file_size(path) for path in sample_paths)
    with tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="reject", file=sys.stderr,
        disable=None if show_progress is None else not show_progress,
    ) as bar, open_verifier(verifier, extractor) as judge:  # fmt: skip
        position = {problem.id: index for index, problem in enumerate(problems)}
        for file_index, path in enumerate(sample_paths):
            result.files.append(_read_sample_file(result, position, file_index, path, judge, bar, first_k))
        result.verifier_timeouts = judge.timeouts
    return result


def _read_sample_file(
    result: Rejection,
    position: dict[str, int],
    file_index: int,
    path: str | os.PathLike[str],
    judge: Callable[[str, str], bool],
    bar: Progress,
    first_k: int | None = None,
) -> FileCounts:
    """Offers the checked paths of one file (the first `first_k` of each problem) to their problems'
    selections; counts what it saw."""
    answers = [problem.answer for problem in result.problems]
    samples, correct, checked = result.samples, result.correct, result.checked
    first_file, first_sample, selections = result.first_correct_file, result.first_correct_sample, result.selections
    counts = FileCounts(str(path))
    default_source = Path(path).stem
    read_in_file = [0] * len(answers)
    for sample in iter_samples(path, bar):
        index = position.get(sample.id)
        if index is None:
            raise DataError(path, sample.line, f"no problem with id {sample.id!r} in the train file")
        read_in_file[index] += 1
        if first_k is not None and read_in_file[index] > first_k:
            continue
        counts.samples += 1
        samples[index] += 1
        if not judge(sample.response, answers[index]):
            continue
        counts.correct += 1
        correct[index] += 1
        if first_file[index] < 0:
            first_file[index], first_sample[index] = file_index, samples[index]
        key = equation_key(sample.response, result.check_calculator)
        if key is None:
            continue
        counts.checked += 1
        checked[index] += 1
        selections[index].offer(key, sample.response, sample.model or default_source)
    return counts


def _file_size(path: str | os.PathLike[str]) -> int:
    try:
        return os.path.getsize(path)
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error.strerror}") from None


def solved_buckets(k: int) -> list[tuple[int, int]]:
    """Histogram buckets of "times solved out of k": 0, five ranges over 1..k-1, then k.

    For k = 100: 0, 1-20, 21-40, 41-60, 61-80, 81-99, 100 (the paper's); empty ranges are dropped.
    """
    if k <= 0:
        return [(0, 0)]
    uppers = [min(round(part * k / 5), k - 1) for part in range(1, 5)] + [k - 1]
    buckets, lower = [(0, 0)], 1
    for upper in uppers:
        if upper >= lower:
            buckets.append((lower, upper))
            lower = upper + 1
    buckets.append((k, k))
    return buckets


def _bucket_label(bucket: tuple[int, int]) -> str:
    low, high = bucket
    return str(low) if low == high else f"{low}-{high}"


def statistics(result: Rejection) -> dict[str, Any]:
    """The paper's analyses of a rejection run, as a JSON-ready dict (docs/formats.md)."""
    n = len(result.problems)
    k = max(result.samples, default=0)
    share = (lambda count: count / n) if n else (lambda count: 0.0)
    selected = [len(selection.paths) for selection in result.selections]
    buckets = solved_buckets(k)
    solved = [0] * len(buckets)
    for count in result.correct:
        solved[next(i for i, (low, high) in enumerate(buckets) if low <= count <= high)] += 1
    return {
        "format": STATS_FORMAT,
        "extractor": result.extractor,
        "verifier": result.verifier,
        "calculator_check": result.check_calculator,
        "verifier_timeouts": result.verifier_timeouts,
        "dedup": result.dedup,
        "problems": n,
        "samples": sum(result.samples),
        "samples_per_problem": k,
        "correct": sum(result.correct),
        "checked": sum(result.checked),
        "selected": sum(selected),
        "correct_per_problem": share(sum(result.correct)),
        "checked_per_problem": share(sum(result.checked)),
        "distinct_per_problem": share(sum(selected)),
        "gold_repeats": _gold_repeats(result),
        "coverage_by_file": [
            share(sum(0 <= first <= f for first in result.first_correct_file)) for f in range(len(result.files))
        ],
        "coverage_by_sample": [
            share(sum(0 < first <= j for first in result.first_correct_sample)) for j in range(1, k + 1)
        ],
        "solved_histogram": {_bucket_label(b): count for b, count in zip(buckets, solved, strict=True)},
        "files": [vars(counts) for counts in result.files],
    }


def _gold_repeats(result: Rejection) -> int:
    """Selected paths whose equation list is the gold solution's: no new reasoning, the gold data again (the
    reference code keeps them; a memorising SFT model samples little else)."""
    repeats = 0
    for problem, selection in zip(result.problems, result.selections, strict=True):
        gold = equation_key(problem.response)
        repeats += sum(gold is not None and equation_key(text) == gold for text, _ in selection.paths)
    return repeats


def summary(stats: dict[str, Any]) -> str:
    """A short human-readable account of `statistics()`."""
    coverage = stats["coverage_by_file"]
    selected = "selected (distinct)" if stats["dedup"] else "selected (no dedup)"
    lines = [
        f"{stats['problems']:,} problems, {stats['samples']:,} sampled paths in {len(stats['files'])} file(s), "
        f"up to {stats['samples_per_problem']} per problem",
        f"  {'correct answer':<19} {stats['correct']:>10,}  ({stats['correct_per_problem']:.2f} per problem)",
        f"  {'+ equations check':<19} {stats['checked']:>10,}  ({stats['checked_per_problem']:.2f} per problem)",
        f"  {selected:<19} {stats['selected']:>10,}  ({stats['distinct_per_problem']:.2f} per problem)",
        f"  {'  the gold equations':<19} {stats['gold_repeats']:>10,}  (the gold solution's equation list again)",
    ]
    if coverage:
        lines.append(
            f"  {'coverage':<19} {100 * coverage[0]:.1f}% after 1 file, {100 * coverage[-1]:.1f}% after {len(coverage)}"
        )
    histogram = ", ".join(f"{label}: {count}" for label, count in stats["solved_histogram"].items())
    lines.append(f"  {'times solved':<19} {histogram}")
    if stats["verifier"] != "paper" or not stats["calculator_check"]:
        unchecked = ", annotations not checked" if not stats["calculator_check"] else ""
        lines.append(f"  {'verifier':<19} {stats['verifier']}{unchecked}; "
                     f"{stats['verifier_timeouts']:,} verdict(s) cut off by the timeout (counted wrong)")  # fmt: skip
    return "\n".join(lines)

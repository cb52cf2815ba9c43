"""Scoring of reasoning paths that already exist: maj1@1, maj1@k, pass@k (pure Python).

For each problem its paths are taken in sampling order (files in the order given, lines in file order) and
each path's final answer is extracted by a named extractor (`rftlab.answers`); a path is correct when its
answer equals the gold answer numerically (`answers.same_number`, |pred - gold| < 1e-4, the paper's rule).

- maj1@1: accuracy of each problem's *first* path (the paper's maj1@1 when that path is the greedy one).
- maj1@k: accuracy of the majority vote over each problem's first k paths (`majority_vote`).
- pass@k: mean over problems of the unbiased estimator of Chen et al. 2021 (`pass_at_k`) from *all* n paths
  of the problem, c of them correct.
- sample accuracy: mean over problems of the share c / n of correct paths.

k defaults to the smallest number of paths a problem has (problems without paths aside), when that is > 1.
A problem without paths is *missing*: it counts as wrong in every metric.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab.answers import ANSWER_TOLERANCE, DEFAULT_EXTRACTOR, get_extractor, parse_number, same_number
from rftlab.backends.base import BackendSettings
from rftlab.data import DataError, Problem, iter_samples, read_problems, write_json, write_jsonl

if TYPE_CHECKING:
    from rftlab.backends.base import Backend

EVAL_FORMAT = "rftlab.eval/1"
PREDICTIONS_SUFFIX = ".predictions.jsonl"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021, 1 - C(n-c, k) / C(n, k), in its stable product form.

    `n` paths of which `c` are correct; requires 0 <= c <= n and 1 <= k <= n (ValueError otherwise).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    failing_all = 1.0
    for size in range(n - c + 1, n + 1):
        failing_all *= 1.0 - k / size
    return 1.0 - failing_all


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The paper's maj1@K vote: the most frequent answer, or None when no answer is valid.

    Invalid answers (None, or not a finite number) are dropped. Answers are grouped by the tolerance that
    decides correctness (`answers.same_number`, |a - b| < 1e-4): each joins the earliest group whose first
    answer is within it, else starts a group, so "72", "72.0" and "72.00001" are one group. A tie between
    groups goes to the group that occurs first in `answers`. The winner is returned as that group's
    first-seen string.
    """
    groups: list[tuple[float, str]] = []  # each group's first value and string, in order of appearance
    votes: list[int] = []
    exact: dict[float, int] = {}  # a value seen before -> its group (no scan)
    for answer in answers:
        if answer is None or (value := parse_number(answer)) is None:
            continue
        group = exact.get(value)
        if group is None:
            near = (i for i, (first, _) in enumerate(groups) if abs(first - value) < ANSWER_TOLERANCE)
            group = exact[value] = next(near, len(groups))
            if group == len(groups):
                groups.append((value, answer))
                votes.append(0)
        votes[group] += 1
    if not votes:
        return None
    return groups[votes.index(max(votes))][1]  # index: the first group of the most votes


@dataclass(frozen=True, slots=True)
class ProblemScore:
    """One problem's extracted answers (None: invalid) in sampling order, and their verdicts."""

    id: str
    gold: str
    answers: list[str | None]
    vote: str | None
    """The majority vote over the first k paths (the first path's answer without k)."""
    c: int
    """How many of the paths are correct."""

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def first(self) -> str | None:
        return self.answers[0] if self.answers else None

    @property
    def correct_first(self) -> bool:
        return same_number(self.first, self.gold)

    @property
    def correct_vote(self) -> bool:
        return same_number(self.vote, self.gold)

    def record(self) -> dict[str, Any]:
        """The problem's line in the predictions JSONL."""
        return {
            "id": self.id,
            "gold": self.gold,
            "answers": self.answers,
            "first": self.first,
            "vote": self.vote,
            "correct_first": self.correct_first,
            "correct_vote": self.correct_vote,
            "n": self.n,
            "c": self.c,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The scores of all problems, in problem order; shares are in [0, 1]."""

    scores: list[ProblemScore]
    extractor: str
    k: int | None

    def _mean(self, values: Iterable[float]) -> float:
        return sum(values) / len(self.scores) if self.scores else 0.0

    @property
    def maj1_at_1(self) -> float:
        return self._mean(score.correct_first for score in self.scores)

    @property
    def maj1_at_k(self) -> float:
        return self._mean(score.correct_vote for score in self.scores)

    @property
    def mean_pass_at_k(self) -> float:
        """Mean unbiased pass@k from all paths (k = 1 without k: then it equals the sample accuracy)."""
        k = self.k or 1
        return self._mean(pass_at_k(score.n, score.c, k) if score.n else 0.0 for score in self.scores)

    @property
    def sample_accuracy(self) -> float:
        return self._mean(score.c / score.n if score.n else 0.0 for score in self.scores)

    @property
    def missing(self) -> list[str]:
        """The ids of the problems without paths."""
        return [score.id for score in self.scores if not score.n]

    def summary(self, predictions: str) -> dict[str, Any]:
        """The evaluation JSON (percentages, 2 decimals); `predictions` names the predictions file."""
        summary: dict[str, Any] = {
            "format": EVAL_FORMAT,
            "maj1@1": _percent(self.maj1_at_1),
            "n": len(self.scores),
            "extractor": self.extractor,
        }
        if self.k is not None and self.k > 1:
            summary |= {"k": self.k, "maj1@k": _percent(self.maj1_at_k), "pass@k": _percent(self.mean_pass_at_k)}
        summary |= {
            "sample_accuracy": _percent(self.sample_accuracy),
            "missing": len(self.missing),
            "predictions": predictions,
        }
        return summary

    def predictions(self) -> Iterator[dict[str, Any]]:
        """The per-problem records of the predictions JSONL, in problem order."""
        return (score.record() for score in self.scores)


def _percent(share: float) -> float:
    return round(100 * share, 2)


def default_k(counts: Sequence[int]) -> int | None:
    """The smallest positive number of paths, when it is > 1; else None (no maj1@k, no pass@k)."""
    smallest = min((count for count in counts if count), default=0)
    return smallest if smallest > 1 else None


def score_answers(
    problems: Sequence[Problem],
    answers: Mapping[str, Sequence[str | None]],
    extractor: str = DEFAULT_EXTRACTOR,
    k: int | None = None,
) -> Evaluation:
    """Scores answers already extracted (by `extractor`, recorded as given): problem id -> answers in order.

    ValueError for an id that is no problem's, k < 1, or a problem with paths but fewer than k.
    """
    known = {problem.id for problem in problems}
    unknown = next((problem_id for problem_id in answers if problem_id not in known), None)
    if unknown is not None:
        raise ValueError(f"answers for {unknown!r}, which is no problem's id")
    found = [list(answers.get(problem.id, ())) for problem in problems]
    if k is None:
        k = default_k([len(paths) for paths in found])
    elif k < 1:
        raise ValueError(f"k must be at least 1 (got {k})")
    return Evaluation(
        [_score_problem(problem, paths, k) for problem, paths in zip(problems, found, strict=True)], extractor, k
    )


def _score_problem(problem: Problem, answers: list[str | None], k: int | None) -> ProblemScore:
    if answers and k is not None and len(answers) < k:
        raise ValueError(f"problem {problem.id!r} has {len(answers)} paths, fewer than k={k}")
    c = sum(same_number(answer, problem.answer) for answer in answers)
    return ProblemScore(problem.id, problem.answer, answers, majority_vote(answers[: k or 1]), c)


def score(
    problems: Sequence[Problem],
    paths: Mapping[str, Sequence[str]],
    extractor: str = DEFAULT_EXTRACTOR,
    k: int | None = None,
) -> Evaluation:
    """Scores reasoning paths (problem id -> completions in sampling order); see `score_answers`."""
    extract = get_extractor(extractor)
    answers = {problem_id: [extract(path) for path in texts] for problem_id, texts in paths.items()}
    return score_answers(problems, answers, extractor, k)


def predictions_path(out: str | os.PathLike[str]) -> Path:
    """Where the predictions JSONL goes beside the evaluation JSON: EVAL.json -> EVAL.predictions.jsonl."""
    return Path(out).with_suffix(PREDICTIONS_SUFFIX)


def read_answers(
    problems: Sequence[Problem], sample_files: Sequence[str | os.PathLike[str]], extractor: str = DEFAULT_EXTRACTOR
) -> dict[str, list[str | None]]:
    """Each problem's extracted answers from sample files read in order; DataError on a sample of an unknown id."""
    extract = get_extractor(extractor)
    answers: dict[str, list[str | None]] = {problem.id: [] for problem in problems}
    for path in sample_files:
        for sample in iter_samples(path):
            found = answers.get(sample.id)
            if found is None:
                raise DataError(path, sample.line, f"no problem with id {sample.id!r} in the data file")
            found.append(extract(sample.response))
    return answers


def evaluate_sample_files(
    data: str | os.PathLike[str],
    sample_files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    extractor: str = DEFAULT_EXTRACTOR,
    k: int | None = None,
) -> dict[str, Any]:
    """Scores the paths of sample files against the problems of `data`; writes `out` and its predictions.

    Writes the predictions JSONL (`predictions_path(out)`) first, then the evaluation JSON, each atomically;
    returns the evaluation JSON's content.
    """
    problems = read_problems(data)
    evaluation = score_answers(problems, read_answers(problems, sample_files, extractor), extractor, k)
    predictions = predictions_path(out)
    write_jsonl(predictions, evaluation.predictions())
    summary = evaluation.summary(predictions.name)
    write_json(out, summary)
    return summary


def summary_table(summary: Mapping[str, Any]) -> str:
    """A short human-readable account of an evaluation JSON."""
    rows = [("maj1@1", f"{summary['maj1@1']:.2f}%")]
    if "k" in summary:
        k = summary["k"]
        rows += [(f"maj1@{k}", f"{summary['maj1@k']:.2f}%"), (f"pass@{k}", f"{summary['pass@k']:.2f}%")]
    rows.append(("sample accuracy", f"{summary['sample_accuracy']:.2f}%"))
    if summary["missing"]:
        rows.append(("missing", f"{summary['missing']:,} of {summary['n']:,} (no paths; counted wrong)"))
    lines = [f"{summary['n']:,} problems, extractor {summary['extractor']}"]
    lines += [f"  {name:<16} {value}" for name, value in rows]
    return "\n".join(lines)


def demonstrations(shots: int, source: str | os.PathLike[str] | None) -> tuple[tuple[str, str], ...]:
    """The first `shots` problems of a train file as (question, solution) pairs for few-shot prompts."""
    if shots <= 0:
        return ()
    if source is None:
        raise ValueError("few-shot evaluation needs a file of solved problems to take the examples from")
    problems = read_problems(source, unique_ids=False)
    if len(problems) < shots:
        raise ValueError(f"{source}: {len(problems)} problem(s), fewer than the {shots} shots asked for")
    return tuple((problem.query, problem.response) for problem in problems[:shots])


def evaluate_model(
    model: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    k: int | None = None,
    temperature: float = 0.7,
    seed: int = 0,
    extractor: str = DEFAULT_EXTRACTOR,
    sampling: dict[str, Any] | None = None,
    shots: int = 0,
    shots_from: str | os.PathLike[str] | None = None,
    backend: BackendSettings = BackendSettings(),
    show_progress: bool | None = None,
    make_backend: Callable[[str, str, str], Backend] | None = None,
) -> dict[str, Any]:
    """`rftlab eval --model`: greedy maj1@1 and, with k, maj1@k and pass@k from k samples at `temperature`.

    The paths go beside `out` (EVAL.greedy.jsonl, EVAL.samples.jsonl) through the sampler, so an
    interrupted evaluation resumes; `sampling` passes further SamplingSettings fields (batch size, template).
    `make_backend(model, dtype, device)` loads the model (default `backends.base.load_backend` with `backend`),
    once for both runs. With `shots`, the first `shots` problems of `shots_from` (a train file) are shown
    before every question as solved examples: in-context learning, the paper's ICL rows.
    """
    from rftlab.backends.base import SamplingSettings, backend_factory
    from rftlab.sample import run_sampling

    out, problems = Path(out), read_problems(data)
    loaded = functools.cache(make_backend or backend_factory(backend, seed))
    sample = functools.partial(  # the greedy and the sampled run share one loaded model
        run_sampling, model, Path(data), backend=backend, show_progress=show_progress, make_backend=loaded
    )
    extra = {**(sampling or {}), "shots": demonstrations(shots, shots_from)}
    greedy_file = out.with_suffix(".greedy.jsonl")
    sample(greedy_file, SamplingSettings(k=1, temperature=0.0, seed=seed, **extra))
    greedy = score_answers(problems, read_answers(problems, [greedy_file], extractor), extractor)
    records = list(greedy.predictions())
    summary = greedy.summary(predictions_path(out).name)
    summary.update({"model": str(model), "greedy_samples": greedy_file.name})
    if shots:
        summary.update({"shots": shots, "shots_from": str(shots_from)})
    if k is not None and k > 1:
        sampled_file = out.with_suffix(".samples.jsonl")
        settings = SamplingSettings(k=k, temperature=temperature, seed=seed, **extra)
        sample(sampled_file, settings)
        sampled = score_answers(problems, read_answers(problems, [sampled_file], extractor), extractor, k)
        sampled_summary = sampled.summary(predictions_path(out).name)
        summary.update({key: sampled_summary[key] for key in ("k", "maj1@k", "pass@k", "sample_accuracy")})
        summary.update({"temperature": temperature, "samples": sampled_file.name})
        for record, sampled_record in zip(records, sampled.predictions(), strict=True):
            record["samples"] = {key: sampled_record[key] for key in ("answers", "vote", "correct_vote", "n", "c")}
    write_jsonl(predictions_path(out), records)
    write_json(out, summary)
    return summary

"""Forecasts of what more samples would give: coverage and distinct correct paths at large k from small k.

A path is *correct* by the rejection rule (`rftlab.reject`): its answer is right and every calculator
annotation checks. From each problem's first n paths:

- **Coverage at K** (the share of problems with a correct path among their first K): each problem's rate
  of correct paths is drawn from a Beta(alpha, beta) fitted by maximum likelihood to the per-problem counts
  (a beta-binomial); a problem already solved is covered, an unsolved one with the posterior chance that
  one of its next K - n paths is correct. A heavy-tailed spread of rates near zero is what makes the
  aggregate coverage grow as a power law in K (Schaeffer et al. 2025; Kazdan et al. 2025).
- **Distinct correct paths per problem at K** (distinct equation lists, the paper's de-duplication key):
  each problem's correct paths fall into equation lists as a Pitman-Yor process (concentration theta,
  discount d: new lists keep appearing, at a rate that falls as a power of the paths seen), fitted by
  maximum likelihood to the problems' observed partitions; the expected number of new lists among the
  next paths, given those seen, is the closed form of Favaro, Lijoi and Pruenster (2009), averaged over
  the beta-binomial number of correct paths to come.

Intervals resample the problems (both fits again on each resample) and add the spread that the future
paths themselves would have (each problem's variance, summed). Pure numpy/scipy: no torch.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

from rftlab.answers import DEFAULT_EXTRACTOR, Extractor, get_extractor, same_number
from rftlab.calculator import equation_key
from rftlab.data import DataError, Problem, iter_samples

FORMAT = "rftlab.forecast/1"
WRONG, UNCHECKED = -2, -1
"""Outcome codes of a path that is not correct; a correct path's code is its equation list's index."""


@dataclass(frozen=True)
class Draws:
    """Each problem's paths in sampling order, as outcome codes (`WRONG`, `UNCHECKED`, or a list's index)."""

    outcomes: list[array]

    def fewest(self) -> int:
        """The fewest paths any problem has."""
        return min((len(codes) for codes in self.outcomes), default=0)

    def partitions(self, n: int) -> list[list[int]]:
        """Per problem, how many of its first n paths fall in each equation list (lists in order of appearance)."""
        return [list(Counter(code for code in codes[:n] if code >= 0).values()) for codes in self.outcomes]

    def observed(self, k: int) -> dict[str, float] | None:
        """Coverage (%) and mean distinct correct paths over each problem's first k paths; None if one has fewer."""
        if self.fewest() < k:
            return None
        distinct = [len({code for code in codes[:k] if code >= 0}) for codes in self.outcomes]
        return {"coverage": 100 * float(np.mean([d > 0 for d in distinct])), "distinct_paths": float(np.mean(distinct))}


def read_draws(
    problems: Sequence[Problem], sample_paths: Sequence[str | os.PathLike[str]], extractor: str = DEFAULT_EXTRACTOR
) -> Draws:
    """Every path of the sample files (pooled, in order) as an outcome code for its problem."""
    extract, position = get_extractor(extractor), {problem.id: index for index, problem in enumerate(problems)}
    outcomes = [array("i") for _ in problems]
    lists: list[dict[str, int]] = [{} for _ in problems]
    for path in sample_paths:
        for sample in iter_samples(path):
            index = position.get(sample.id)
            if index is None:
                raise DataError(path, sample.line, f"no problem with id {sample.id!r} in the train file")
            outcomes[index].append(_outcome(sample.response, problems[index].answer, lists[index], extract))
    return Draws(outcomes)


def _outcome(response: str, answer: str, lists: dict[str, int], extract: Extractor) -> int:
    if not same_number(extract(response), answer):
        return WRONG
    key = equation_key(response)
    return UNCHECKED if key is None else lists.setdefault(key, len(lists))


# --- the fits ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profiles:
    """The problems grouped by what the fits see of them: how their n paths fall into equation lists.

    `lists[g]` is group g's list sizes (largest first), `trials[g]` its n; `weights[g]` how many problems."""

    lists: list[tuple[int, ...]]
    trials: np.ndarray
    weights: np.ndarray
    group: np.ndarray
    """Each problem's group."""

    @classmethod
    def of(cls, partitions: Sequence[Sequence[int]], trials: Sequence[int]) -> Profiles:
        index: dict[tuple[tuple[int, ...], int], int] = {}
        group = [index.setdefault((tuple(sorted(counts, reverse=True)), int(n)), len(index))
                 for counts, n in zip(partitions, trials, strict=True)]  # fmt: skip
        keys = list(index)
        return cls([lists for lists, _ in keys], np.array([n for _, n in keys]),
                   np.bincount(group, minlength=len(keys)).astype(float), np.array(group))  # fmt: skip

    def correct(self) -> np.ndarray:
        return np.array([sum(lists) for lists in self.lists])

    def resampled(self, rng: np.random.Generator) -> Profiles:
        """The same groups, weighted by a bootstrap resample of the problems."""
        picked = self.group[rng.integers(0, len(self.group), len(self.group))]
        weights = np.bincount(picked, minlength=len(self.lists)).astype(float)
        return Profiles(self.lists, self.trials, weights, self.group)


@dataclass(frozen=True)
class BetaBinomial:
    """Per-problem rates of correct paths ~ Beta(alpha, beta)."""

    alpha: float
    beta: float

    @classmethod
    def fit(cls, correct: np.ndarray, trials: np.ndarray, weights: np.ndarray) -> BetaBinomial:
        """Maximum likelihood over (log alpha, log beta)."""

        def loss(params: np.ndarray) -> float:
            a, b = np.exp(params)
            return -float(np.sum(weights * (special.betaln(correct + a, trials - correct + b) - special.betaln(a, b))))

        found = optimize.minimize(loss, np.zeros(2), method="L-BFGS-B", bounds=[(-9.0, 9.0)] * 2)
        return cls(*map(float, np.exp(found.x)))

    def chance_unsolved(self, correct: np.ndarray, trials: np.ndarray, more: np.ndarray) -> np.ndarray:
        """Posterior chance that none of `more` further paths is correct."""
        a, b = self.alpha + correct, self.beta + trials - correct
        return np.exp(special.betaln(a, b + more) - special.betaln(a, b))

    def future(self, correct: int, trials: int, more: int) -> np.ndarray:
        """The posterior distribution of correct paths among `more` further ones (index: how many)."""
        m = np.arange(more + 1)
        a, b = self.alpha + correct, self.beta + trials - correct
        log_choose = special.gammaln(more + 1) - special.gammaln(m + 1) - special.gammaln(more - m + 1)
        return np.exp(log_choose + special.betaln(m + a, more - m + b) - special.betaln(a, b))


@dataclass(frozen=True)
class PitmanYor:
    """A problem's correct paths fall into equation lists as a Pitman-Yor process (theta >= 0, 0 <= d < 1)."""

    theta: float
    discount: float

    @classmethod
    def fit(cls, lists: Sequence[tuple[int, ...]], weights: np.ndarray) -> PitmanYor:
        """Maximum likelihood of the observed partitions (their exchangeable partition probabilities)."""
        used = [(sizes, weight) for sizes, weight in zip(lists, weights, strict=True) if sizes and weight]
        if not used:
            return cls(1.0, 0.0)
        w = np.array([weight for _, weight in used])
        tables = np.array([len(sizes) for sizes, _ in used])
        paths = np.array([sum(sizes) for sizes, _ in used])
        later = np.arange(1, tables.max())  # l = 1 .. j-1 for the largest j
        opened = ((later[None, :] < tables[:, None]) * w[:, None]).sum(axis=0)  # weight of problems with a table l+1
        sizes = np.concatenate([np.asarray(s, dtype=float) for s, _ in used])
        size_weights = np.concatenate([np.full(len(s), weight) for s, weight in used])

        def loss(params: np.ndarray) -> float:
            theta, d = math.exp(params[0]), special.expit(params[1])
            new_tables = np.sum(opened * np.log(theta + later * d))
            seating = np.sum(size_weights * (special.gammaln(sizes - d) - special.gammaln(1 - d)))
            normaliser = np.sum(w * (special.gammaln(theta + paths) - special.gammaln(theta + 1)))
            return -float(new_tables + seating - normaliser)

        found = optimize.minimize(loss, np.array([0.0, -2.0]), method="L-BFGS-B", bounds=[(-9.0, 7.0), (-12.0, 6.0)])
        return cls(float(math.exp(found.x[0])), float(special.expit(found.x[1])))

    def new_lists(self, lists: int, paths: int, more: np.ndarray) -> np.ndarray:
        """Expected new equation lists among `more` further correct paths, given `lists` seen in `paths`."""
        more = np.asarray(more, dtype=float)
        if paths == 0:  # the first path opens a list; the rest follow from one list of one path
            return np.where(more >= 1, 1 + self.new_lists(1, 1, np.maximum(more - 1, 0)), 0.0)
        theta, d = self.theta, self.discount
        if d < 1e-9:  # the Dirichlet process
            return theta * (special.digamma(theta + paths + more) - special.digamma(theta + paths))
        rising = (special.gammaln(theta + paths + d + more) - special.gammaln(theta + paths + d)
                  - special.gammaln(theta + paths + more) + special.gammaln(theta + paths))  # fmt: skip
        return (lists + theta / d) * np.expm1(rising)


# --- forecasts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fits:
    rates: BetaBinomial
    lists: PitmanYor

    @classmethod
    def of(cls, profiles: Profiles) -> Fits:
        rates = BetaBinomial.fit(profiles.correct(), profiles.trials, profiles.weights)
        return cls(rates, PitmanYor.fit(profiles.lists, profiles.weights))

    def predict(self, profiles: Profiles, k: int) -> dict[str, np.ndarray]:
        """Per group: the chance of coverage at k and the expected distinct correct paths, with variances."""
        correct, trials = profiles.correct(), profiles.trials
        unsolved = np.where(correct > 0, 0.0, self.rates.chance_unsolved(correct, trials, k - trials))
        mean, variance = np.empty(len(trials)), np.empty(len(trials))
        for group, sizes in enumerate(profiles.lists):
            chances = self.rates.future(int(correct[group]), int(trials[group]), int(k - trials[group]))
            new = self.lists.new_lists(len(sizes), int(correct[group]), np.arange(len(chances)))
            expected = float(chances @ new)
            mean[group] = len(sizes) + expected
            variance[group] = float(chances @ (new - expected) ** 2) + expected  # the lists themselves: ~ Poisson
        return {"coverage": 1 - unsolved, "coverage_var": unsolved * (1 - unsolved),
                "distinct_paths": mean, "distinct_paths_var": variance}  # fmt: skip


TARGETS = {"coverage": 100.0, "distinct_paths": 1.0}
"""What is forecast, and the scale it is reported in (coverage in percent)."""


def forecast(
    draws: Draws,
    ks: Sequence[int],
    *,
    fit_k: int | None = None,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Coverage and distinct correct paths at each k in `ks`, from each problem's first `fit_k` paths (default:
    as many as every problem has), with bootstrap intervals, and what was observed where every problem has k."""
    fit_k = fit_k or draws.fewest()
    if not draws.outcomes or fit_k < 1:
        raise ValueError("no paths to fit: every problem needs at least one")
    if too_few := [k for k in ks if k <= fit_k]:
        raise ValueError(f"--k must exceed the paths fitted per problem ({fit_k}), got {too_few[0]}")
    profiles = Profiles.of(draws.partitions(fit_k), [min(len(codes), fit_k) for codes in draws.outcomes])
    fits, rng = Fits.of(profiles), np.random.default_rng(seed)
    resampled = [profiles.resampled(rng) for _ in range(resamples)]
    refits = [Fits.of(again) for again in resampled]
    entries = []
    for k in ks:
        point, spread = fits.predict(profiles, k), {target: [] for target in TARGETS}
        for again, refit in zip(resampled, refits, strict=True):
            values, total = refit.predict(again, k), float(np.sum(again.weights))
            for target in TARGETS:
                noise = math.sqrt(float(again.weights @ values[f"{target}_var"])) * float(rng.standard_normal())
                spread[target].append((float(again.weights @ values[target]) + noise) / total)
        observed = draws.observed(k)
        for target, scale in TARGETS.items():
            low, high = np.percentile(np.array(spread[target]) * scale, [50 * (1 - level), 50 * (1 + level)])
            predicted = float(profiles.weights @ point[target]) / float(np.sum(profiles.weights)) * scale
            seen = None if observed is None else observed[target]
            entries.append(_entry(target, fit_k, k, predicted, (float(low), float(high)), seen))
    return {
        "format": FORMAT,
        "problems": len(draws.outcomes),
        "fit_k": fit_k,
        "fit": {"beta_binomial": vars(fits.rates), "pitman_yor": vars(fits.lists)},
        "resamples": resamples,
        "seed": seed,
        "level": level,
        "forecast": entries,
    }


def _entry(
    target: str, fit_k: int, k: int, predicted: float, interval: tuple[float, float], observed: float | None
) -> dict[str, Any]:
    entry = {"target": target, "fit_k": fit_k, "k": k, "predicted": round(predicted, 4),
             "interval": [round(interval[0], 4), round(interval[1], 4)]}  # fmt: skip
    if observed is not None:
        error = predicted - observed
        entry |= {"observed": round(observed, 4), "error": round(error, 4),
                  "covered": interval[0] <= observed <= interval[1]}  # fmt: skip
        if target == "distinct_paths" and observed:
            entry["relative_error"] = round(error / observed, 4)
    return entry


def table(result: dict[str, Any]) -> str:
    """The forecast as a text table: one row per target and k."""
    rows = [f"fitted on the first {result['fit_k']} paths of {result['problems']:,} problems; "
            f"{round(100 * result['level'])}% intervals",
            f"{'target':<15} {'k':>5} {'predicted':>10} {'interval':>19} {'observed':>9} {'error':>8}"]  # fmt: skip
    for entry in result["forecast"]:
        low, high = entry["interval"]
        seen = f"{entry['observed']:9.2f}" if "observed" in entry else f"{'-':>9}"
        error = f"{entry['error']:+8.2f}" if "error" in entry else f"{'-':>8}"
        rows.append(f"{entry['target']:<15} {entry['k']:>5} {entry['predicted']:10.2f} "
                    f"{f'{low:.2f} to {high:.2f}':>19} {seen} {error}")  # fmt: skip
    return "\n".join(rows)

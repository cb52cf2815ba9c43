"""Fits and statistics for the scaling studies (Yuan et al. 2023, §3 and §4).

- `linear_fit`: ordinary least squares with r, R², p value and 95% intervals on slope and intercept.
- `log_linear_data_fit`: accuracy against log2(data amount); the slope is points per doubling [P §3.2].
- `predictor_comparison`: accuracy against pre-training loss and against log10(parameter count), and
  which of the two correlates more strongly; the paper argues loss is the better predictor [P §3.1].
- `gain_fit`: RFT gain (RFT - SFT) against SFT accuracy; weaker models gain more, so the slope is negative.
- `bootstrap_ci`: percent accuracy with a confidence interval from resampling seeds and test problems.
- `bootstrap_fit`: a confidence interval on a fit's slope from resampling the test problems of every point.
- `bootstrap_contrast`, `bootstrap_difference`: a weighted sum (e.g. a difference) of accuracies of models scored
  on the same test problems, with a paired bootstrap interval.
- `describe_fit`: one sentence built from a fit's numbers.

Other relations (accuracy against distinct reasoning paths per question, against RFT k) use `linear_fit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class LinearFit:
    """An OLS fit y = intercept + slope·x. Intervals are two-sided at `level` (t distribution, n - 2 df)."""

    slope: float
    intercept: float
    r: float
    r2: float
    p_value: float
    n: int
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PredictorComparison:
    """Accuracy fitted against pre-training loss and against log10(parameter count)."""

    loss_fit: LinearFit
    size_fit: LinearFit
    better: str
    """`"loss"` or `"size"`: the predictor with the larger |r|."""
    margin: float
    """|r| of the better predictor minus |r| of the other (>= 0)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapFit:
    """A fit on per-point mean scores, with a percentile bootstrap interval on its slope."""

    fit: LinearFit
    slope_low: float
    slope_high: float
    resamples: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def linear_fit(x: ArrayLike, y: ArrayLike, *, level: float = 0.95) -> LinearFit:
    """Least-squares line through (x, y), via `scipy.stats.linregress`.

    Needs at least 3 points (so the intervals have a degree of freedom) and x not all equal. When y is
    constant the slope is 0 and r, R² are reported as 0 (no association) with p = 1.
    """
    _check_level(level)
    xs, ys = _vector(x, "x"), _vector(y, "y")
    if xs.size != ys.size:
        raise ValueError(f"x and y differ in length ({xs.size} != {ys.size})")
    if xs.size < 3:
        raise ValueError(f"a linear fit needs at least 3 points, got {xs.size}")
    if np.ptp(xs) == 0:
        raise ValueError("x is constant; the slope is undefined")
    n = int(xs.size)
    if np.ptp(ys) == 0:
        y0 = float(ys[0])
        return LinearFit(0.0, y0, 0.0, 0.0, 1.0, n, (0.0, 0.0), (y0, y0), level)
    result = stats.linregress(xs, ys)
    t = float(stats.t.ppf(0.5 + level / 2, n - 2))
    slope, intercept, r = float(result.slope), float(result.intercept), float(result.rvalue)
    slope_half, intercept_half = t * float(result.stderr), t * float(result.intercept_stderr)
    return LinearFit(
        slope=slope,
        intercept=intercept,
        r=r,
        r2=r * r,
        p_value=float(result.pvalue),
        n=n,
        slope_ci=(slope - slope_half, slope + slope_half),
        intercept_ci=(intercept - intercept_half, intercept + intercept_half),
        level=level,
    )


def log_linear_data_fit(amounts: ArrayLike, accuracies: ArrayLike, base: float = 2) -> LinearFit:
    """Accuracy against log_base(data amount) [P §3.2: "when the data amount doubles, the performance
    increases by a unit"].

    With the default base 2 the slope is accuracy points per doubling of data and the intercept is the
    accuracy at amount 1 (so pass fractions of the full set to read it as the full-data accuracy).
    """
    xs = _vector(amounts, "amounts")
    if np.any(xs <= 0):
        raise ValueError("data amounts must be positive")
    if base <= 0 or base == 1:
        raise ValueError(f"log base must be positive and not 1, got {base}")
    return linear_fit(np.log(xs) / math.log(base), accuracies)


def predictor_comparison(accuracies: ArrayLike, losses: ArrayLike, parameters: ArrayLike) -> PredictorComparison:
    """Fit accuracy against pre-training loss and against log10(parameter count) over the same models.

    The predictor whose fit has the larger |r| is `better` [P §3.1: loss, not size, tracks accuracy;
    LLaMA2-7B beats LLaMA-13B]. Ties go to loss.
    """
    sizes = _vector(parameters, "parameters")
    if np.any(sizes <= 0):
        raise ValueError("parameter counts must be positive")
    loss_fit = linear_fit(losses, accuracies)
    size_fit = linear_fit(np.log10(sizes), accuracies)
    loss_r, size_r = abs(loss_fit.r), abs(size_fit.r)
    better = "loss" if loss_r >= size_r else "size"
    return PredictorComparison(loss_fit, size_fit, better, abs(loss_r - size_r))


def gain_fit(sft_accuracies: ArrayLike, rft_accuracies: ArrayLike) -> LinearFit:
    """RFT gain (rft - sft) against SFT accuracy, one point per base model; the paper's finding that
    weaker models gain more shows as a negative slope [P §1, §3.3]."""
    sft, rft = _vector(sft_accuracies, "sft_accuracies"), _vector(rft_accuracies, "rft_accuracies")
    if sft.size != rft.size:
        raise ValueError(f"sft and rft accuracies differ in length ({sft.size} != {rft.size})")
    return linear_fit(sft, rft - sft)


def _score_matrix(scores: ArrayLike, name: str) -> np.ndarray:
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[np.newaxis, :]
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, problems) or (problems,) array, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or np.any(matrix > 1):
        raise ValueError(f"{name} must hold scores in [0, 1]")
    return matrix


def _score_stack(scores: ArrayLike) -> np.ndarray:
    """(points, seeds, problems) scores, from that shape or (points, problems)."""
    matrices = np.asarray(scores, dtype=float)
    if matrices.ndim == 2:
        matrices = matrices[:, np.newaxis, :]
    if matrices.ndim != 3:
        raise ValueError(f"scores must be (points, seeds, problems) or (points, problems), got {matrices.shape}")
    for matrix in matrices:
        _score_matrix(matrix, "scores")
    return matrices


def _draw_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how often each of n items is drawn in n draws with replacement, per resample (a uniform
    multinomial; counting drawn indices is several times faster than `rng.multinomial` for large n)."""
    drawn = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, np.newaxis]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n)


@functools.lru_cache(maxsize=4)
def _bootstrap_counts(seed: int, n_seeds: int, n_problems: int, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """The draw counts of seed rows and of problem columns for every resample: the same for the same arguments,
    so they are computed once (read-only) for the many intervals of one study."""
    rng = np.random.default_rng(seed)
    rows, columns = _draw_counts(rng, n_seeds, resamples), _draw_counts(rng, n_problems, resamples)
    rows.flags.writeable = columns.flags.writeable = False
    return rows, columns


def _resampled_means(matrices: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` two-level bootstrap draws of `matrices` (points, seeds, problems): seed rows,
    then problem columns, drawn with replacement and shared by all points. Returns (resamples, points).

    The mean over a resampled matrix is (row counts)ᵀ·M·(column counts) / (seeds·problems), so the draws
    are multinomial counts and no resampled matrix is built.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    _, n_seeds, n_problems = matrices.shape
    row_counts, column_counts = _bootstrap_counts(seed, n_seeds, n_problems, resamples)
    totals = np.einsum("bs,ksp,bp->bk", row_counts, matrices, column_counts)
    return totals / (n_seeds * n_problems)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    return float(low), float(high)


def bootstrap_ci(
    correct: ArrayLike, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Percent accuracy and its percentile bootstrap interval: `(mean, low, high)`.

    `correct` is (seeds, problems) of 0/1 or per-problem scores in [0, 1] (a 1-D array is one seed).
    Each resample draws seed rows, then problem columns, with replacement. Deterministic for a given seed.
    """
    _check_level(level)
    matrix = _score_matrix(correct, "correct")
    means = 100 * _resampled_means(matrix[np.newaxis], resamples, seed)[:, 0]
    low, high = _percentiles(means, level)
    return 100 * float(matrix.mean()), low, high


def bootstrap_fit(
    x: ArrayLike,
    scores: ArrayLike,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapFit:
    """Fit percent accuracy against x, with a bootstrap interval on the slope from the test problems.

    `scores` is (points, seeds, problems) or (points, problems): every point scored on the same test
    problems. Each resample draws seeds and problems once and applies the draw to every point (paired),
    then refits. Transform x first (e.g. log2 of data amounts for points per doubling).
    """
    _check_level(level)
    matrices = _score_stack(scores)
    xs = _vector(x, "x")
    if xs.size != matrices.shape[0]:
        raise ValueError(f"x has {xs.size} points but scores has {matrices.shape[0]}")
    fit = linear_fit(xs, 100 * matrices.mean(axis=(1, 2)), level=level)
    ys = 100 * _resampled_means(matrices, resamples, seed)
    centred = xs - xs.mean()
    slopes = (ys - ys.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    low, high = _percentiles(slopes, level)
    return BootstrapFit(fit, low, high, resamples, level)


def bootstrap_contrast(
    scores: ArrayLike, weights: ArrayLike, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """A weighted sum of percent accuracies, sum(w·accuracy), and its paired percentile bootstrap interval:
    `(value, low, high)`.

    `scores` is (models, seeds, problems) or (models, problems): every model scored on the same test problems
    (and seeds). Each resample draws seeds and problems once for all models, so what they share (a problem's
    difficulty) cancels. Weights (1, -1) give a difference; (1, -1, -1, 1) a difference of two gains.
    """
    _check_level(level)
    matrices = _score_stack(scores)
    w = _vector(weights, "weights")
    if w.size != matrices.shape[0]:
        raise ValueError(f"weights has {w.size} entries but scores has {matrices.shape[0]} models")
    value = 100 * float(w @ matrices.mean(axis=(1, 2)))
    low, high = _percentiles(100 * _resampled_means(matrices, resamples, seed) @ w, level)
    return value, low, high


def bootstrap_difference(
    a: ArrayLike, b: ArrayLike, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Percent accuracy of model a minus model b, `(difference, low, high)`, both (seeds, problems) or
    (problems,) on the same test problems; the interval is paired (one draw of seeds and problems for both)."""
    first, second = _score_matrix(a, "a"), _score_matrix(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"a and b differ in shape ({first.shape} != {second.shape})")
    return bootstrap_contrast(np.stack([first, second]), [1.0, -1.0], resamples=resamples, level=level, seed=seed)


def bootstrap_gain_fit(
    sft_scores: ArrayLike, rft_scores: ArrayLike, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> BootstrapFit:
    """`gain_fit` with a percentile bootstrap interval on its slope: `sft_scores` and `rft_scores` are (bases,
    seeds, problems), every model scored on the same test problems. Each resample draws seeds and problems once
    for all models and refits the gains against the resampled SFT accuracies (both sides carry the noise)."""
    _check_level(level)
    sft, rft = _score_stack(sft_scores), _score_stack(rft_scores)
    if sft.shape != rft.shape:
        raise ValueError(f"sft and rft scores differ in shape ({sft.shape} != {rft.shape})")
    fit = gain_fit(100 * sft.mean(axis=(1, 2)), 100 * rft.mean(axis=(1, 2)))
    means = 100 * _resampled_means(np.concatenate([sft, rft]), resamples, seed)
    x, gains = means[:, : len(sft)], means[:, len(sft) :] - means[:, : len(sft)]
    x_centred = x - x.mean(axis=1, keepdims=True)
    slopes = (x_centred * (gains - gains.mean(axis=1, keepdims=True))).sum(axis=1) / (x_centred**2).sum(axis=1)
    low, high = _percentiles(slopes, level)
    return BootstrapFit(fit, low, high, resamples, level)


def bootstrap_extrapolation(
    x: ArrayLike, scores: ArrayLike, x_new: float, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The OLS line of percent accuracy against x, read at `x_new`, and its percentile bootstrap interval:
    `(predicted, low, high)`. `scores` is (points, seeds, problems); each resample draws seeds and problems once
    for every point (paired) and refits."""
    _check_level(level)
    matrices = _score_stack(scores)
    xs = _vector(x, "x")
    if xs.size != matrices.shape[0] or xs.size < 2 or xs.min() == xs.max():
        raise ValueError(f"need 2 or more distinct x, one per point ({xs.size} x, {matrices.shape[0]} points)")
    centred = xs - xs.mean()

    def read(ys: np.ndarray) -> np.ndarray:
        slopes = (ys - ys.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred)
        return ys.mean(axis=-1) + slopes * (x_new - xs.mean())

    predicted = float(read(100 * matrices.mean(axis=(1, 2))))
    low, high = _percentiles(read(100 * _resampled_means(matrices, resamples, seed)), level)
    return predicted, low, high


def describe_fit(fit: LinearFit, x_name: str, y_name: str, unit: str, *, digits: int = 1) -> str:
    """One sentence from the fit's numbers, e.g. "accuracy rises 6.2 points per doubling of data
    (slope 95% CI 5.1 to 7.3; R² = 0.97, n = 6)"."""
    slope = round(fit.slope, digits)
    if slope > 0:
        trend = f"rises {slope:.{digits}f} {unit} per {x_name}"
    elif slope < 0:
        trend = f"falls {-slope:.{digits}f} {unit} per {x_name}"
    else:
        trend = f"is flat ({0:.{digits}f} {unit} per {x_name})"
    low, high = fit.slope_ci
    interval = f"slope {100 * fit.level:g}% CI {low:.{digits}f} to {high:.{digits}f}"
    return f"{y_name} {trend} ({interval}; R² = {fit.r2:.2f}, n = {fit.n})"

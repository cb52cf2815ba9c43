from __future__ import annotations

import json

import numpy as np
import pytest

from rftlab.scaling import (
    LinearFit,
    bootstrap_ci,
    bootstrap_contrast,
    bootstrap_difference,
    bootstrap_extrapolation,
    bootstrap_fit,
    bootstrap_gain_fit,
    describe_fit,
    gain_fit,
    linear_fit,
    log_linear_data_fit,
    predictor_comparison,
)


def test_linear_fit_recovers_known_line_and_ci_covers_truth() -> None:
    rng = np.random.default_rng(1)
    x = np.linspace(0, 10, 40)
    y = 3.0 - 2.0 * x + rng.normal(0, 0.5, x.size)
    fit = linear_fit(x, y)
    assert fit.slope == pytest.approx(-2.0, abs=0.1)
    assert fit.intercept == pytest.approx(3.0, abs=0.4)
    assert fit.slope_ci[0] < -2.0 < fit.slope_ci[1]
    assert fit.intercept_ci[0] < 3.0 < fit.intercept_ci[1]
    assert fit.r < -0.99
    assert fit.r2 == pytest.approx(fit.r**2)
    assert fit.p_value < 1e-10
    assert fit.n == 40


def test_linear_fit_exact_data() -> None:
    fit = linear_fit([1, 2, 3, 4], [5, 7, 9, 11])
    assert (fit.slope, fit.intercept) == pytest.approx((2.0, 3.0))
    assert fit.r2 == pytest.approx(1.0)
    assert fit.slope_ci == pytest.approx((2.0, 2.0))


def test_linear_fit_interval_matches_t_quantile() -> None:
    # Residuals (1, -2, 1) about y = x: slope 1, stderr = sqrt(6 / 1 / 2) = sqrt(3), t(0.975, 1) = 12.706.
    fit = linear_fit([0, 1, 2], [1, -1, 3])
    assert fit.slope == pytest.approx(1.0)
    half = 12.7062047 * np.sqrt(3.0)
    assert fit.slope_ci == pytest.approx((1.0 - half, 1.0 + half), rel=1e-6)


def test_linear_fit_constant_y_is_flat() -> None:
    fit = linear_fit([1, 2, 3], [4, 4, 4])
    assert (fit.slope, fit.intercept, fit.r, fit.r2, fit.p_value) == (0.0, 4.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1, 2], [1, 2], "at least 3 points"),
        ([2, 2, 2], [1, 2, 3], "x is constant"),
        ([1, 2, 3], [1, 2], "differ in length"),
        ([1, 2, np.nan], [1, 2, 3], "finite"),
        ([[1, 2, 3]], [1, 2, 3], "one-dimensional"),
    ],
)
def test_linear_fit_rejects_bad_input(x: list, y: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        linear_fit(x, y)


def test_log_linear_data_fit_points_per_doubling() -> None:
    rng = np.random.default_rng(0)
    amounts = 7473 / 2.0 ** np.arange(6)
    accuracies = 30 + 6 * np.log2(amounts) + rng.normal(0, 0.3, amounts.size)
    fit = log_linear_data_fit(amounts, accuracies)
    assert fit.slope == pytest.approx(6.0, abs=0.3)
    assert fit.intercept == pytest.approx(30.0, abs=4.0)
    assert fit.slope_ci[0] < 6.0 < fit.slope_ci[1]
    assert fit.r2 > 0.99


def test_log_linear_data_fit_base_and_errors() -> None:
    fractions = [1 / 8, 1 / 4, 1 / 2, 1]
    accuracies = [50 + 6 * np.log2(f) for f in fractions]
    assert log_linear_data_fit(fractions, accuracies).intercept == pytest.approx(50.0)
    assert log_linear_data_fit(fractions, accuracies, base=4).slope == pytest.approx(12.0)
    with pytest.raises(ValueError, match="positive"):
        log_linear_data_fit([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="base"):
        log_linear_data_fit([1, 2, 4], [1, 2, 3], base=1)


def test_log_linear_data_fit_on_paper_table() -> None:
    # Reference §2.2: LLaMA-7B best of the two epoch settings at 1/8..1, derived slope 6.2 per doubling.
    fit = log_linear_data_fit([1 / 8, 1 / 4, 1 / 2, 1], [17.9, 22.7, 30.9, 35.9])
    assert fit.slope == pytest.approx(6.2, abs=0.05)


def _models() -> tuple[np.ndarray, np.ndarray]:
    """Eight models whose loss and log10(size) are only loosely related (r = -0.52)."""
    losses = np.linspace(1.5, 1.8, 8)
    log_sizes = np.linspace(9.8, 10.8, 8)[[5, 7, 2, 6, 0, 4, 1, 3]]
    assert np.corrcoef(losses, log_sizes)[0, 1] == pytest.approx(-0.524, abs=1e-3)
    return losses, log_sizes


def test_predictor_comparison_prefers_loss_when_accuracy_follows_loss() -> None:
    rng = np.random.default_rng(2)
    losses, log_sizes = _models()
    accuracies = 200 - 93 * losses + rng.normal(0, 0.3, losses.size)
    result = predictor_comparison(accuracies, losses, 10**log_sizes)
    assert result.better == "loss"
    assert result.loss_fit.r < -0.98
    assert result.loss_fit.slope == pytest.approx(-93, abs=5)
    assert result.margin == pytest.approx(abs(result.loss_fit.r) - abs(result.size_fit.r))
    assert result.margin > 0.3


def test_predictor_comparison_prefers_size_when_accuracy_follows_size() -> None:
    rng = np.random.default_rng(2)
    losses, log_sizes = _models()
    accuracies = -150 + 20 * log_sizes + rng.normal(0, 0.3, losses.size)
    result = predictor_comparison(accuracies, losses, 10**log_sizes)
    assert result.better == "size"
    assert result.size_fit.slope == pytest.approx(20, abs=1)
    assert result.margin > 0.3


def test_predictor_comparison_rejects_nonpositive_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        predictor_comparison([1, 2, 3], [1.5, 1.6, 1.7], [7e9, 0, 13e9])


def test_predictor_comparison_on_paper_models() -> None:
    # Reference §2.4: SFT accuracy of the seven LLaMA models against loss gives 204.5 - 93.0·loss, r = -0.99.
    accuracies = [35.9, 41.6, 43.0, 50.0, 54.6, 59.3, 63.2]
    losses = [1.8, 1.75, 1.73, 1.68, 1.62, 1.57, 1.50]
    result = predictor_comparison(accuracies, losses, [7e9, 7e9, 13e9, 13e9, 33e9, 65e9, 70e9])
    assert (result.loss_fit.intercept, result.loss_fit.slope) == pytest.approx((204.5, -93.0), abs=0.05)
    assert result.loss_fit.r == pytest.approx(-0.99, abs=0.005)
    assert result.better == "loss"


def test_gain_fit_recovers_negative_slope() -> None:
    rng = np.random.default_rng(3)
    sft = np.array([35.9, 41.6, 43.0, 50.0, 54.6, 59.3])
    rft = sft + (30 - 0.5 * sft) + rng.normal(0, 0.2, sft.size)
    fit = gain_fit(sft, rft)
    assert fit.slope == pytest.approx(-0.5, abs=0.05)
    assert fit.intercept == pytest.approx(30, abs=2.5)
    assert fit.slope_ci[1] < 0
    with pytest.raises(ValueError, match="differ in length"):
        gain_fit([1, 2, 3], [1, 2])


def test_bootstrap_ci_contains_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(4)
    correct = (rng.random((3, 200)) < 0.4).astype(float)
    mean, low, high = bootstrap_ci(correct, seed=7)
    assert mean == pytest.approx(100 * correct.mean())
    assert low < mean < high
    assert bootstrap_ci(correct, seed=7) == (mean, low, high)
    assert bootstrap_ci(correct, seed=8) != (mean, low, high)


def test_bootstrap_ci_width_matches_binomial_and_shrinks_with_problems() -> None:
    rng = np.random.default_rng(5)
    small = (rng.random(100) < 0.5).astype(float)
    large = (rng.random(1600) < 0.5).astype(float)
    _, low_s, high_s = bootstrap_ci(small)
    _, low_l, high_l = bootstrap_ci(large)
    # Normal-approximation width 2·1.96·sqrt(p(1-p)/n): ~19.6 points at n = 100, ~4.9 at n = 1600.
    assert high_s - low_s == pytest.approx(19.6, rel=0.15)
    assert high_l - low_l == pytest.approx(4.9, rel=0.15)


def test_bootstrap_ci_seed_variation_widens_interval() -> None:
    rng = np.random.default_rng(6)
    problems = rng.random(300) < 0.5
    same = np.tile(problems, (4, 1)).astype(float)
    # Seeds at very different accuracy levels on the same problems: seed resampling must add width.
    varied = np.stack([problems & (rng.random(300) < keep) for keep in (0.2, 0.5, 0.8, 1.0)]).astype(float)
    _, low_same, high_same = bootstrap_ci(same)
    _, low_varied, high_varied = bootstrap_ci(varied)
    assert (high_varied - low_varied) > 1.5 * (high_same - low_same) * varied.mean() / same.mean()


def test_bootstrap_ci_constant_data() -> None:
    assert bootstrap_ci(np.full((2, 50), 0.25)) == pytest.approx((25.0, 25.0, 25.0))
    assert bootstrap_ci(np.ones(10)) == pytest.approx((100.0, 100.0, 100.0))


@pytest.mark.parametrize(
    ("correct", "kwargs", "message"),
    [
        ([], {}, "non-empty"),
        (np.zeros((2, 2, 2)), {}, "non-empty"),
        ([0, 1, 2], {}, r"\[0, 1\]"),
        ([0, 1, 1], {"resamples": 0}, "resamples"),
        ([0, 1, 1], {"level": 1.0}, "level"),
    ],
)
def test_bootstrap_ci_rejects_bad_input(correct: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(correct, **kwargs)


def test_bootstrap_fit_slope_interval_covers_truth() -> None:
    rng = np.random.default_rng(8)
    x = np.arange(5.0)
    rates = (30 + 6 * x) / 100
    scores = (rng.random((5, 2, 400)) < rates[:, None, None]).astype(float)
    result = bootstrap_fit(x, scores, resamples=1000)
    assert result.fit.slope == pytest.approx(6.0, abs=1.0)
    assert result.slope_low < 6.0 < result.slope_high
    assert result.slope_low < result.fit.slope < result.slope_high
    assert bootstrap_fit(x, scores, resamples=1000) == result
    with pytest.raises(ValueError, match="points"):
        bootstrap_fit(x[:4], scores)


def test_bootstrap_fit_is_paired_across_points() -> None:
    # Point k scores each problem as half its base score plus 0.1·k: under any draw shared by all points
    # the slope is exactly 10 points, so the interval collapses; independent draws per point would not.
    rng = np.random.default_rng(9)
    base = (rng.random((2, 200)) < 0.5).astype(float)
    scores = np.stack([0.5 * base + 0.1 * k for k in range(5)])
    result = bootstrap_fit(np.arange(5.0), scores, resamples=500)
    assert result.fit.slope == pytest.approx(10.0)
    assert (result.slope_low, result.slope_high) == pytest.approx((10.0, 10.0))


def test_bootstrap_difference_is_paired() -> None:
    # b is a plus 20 more problems right: a shared draw moves both alike, so the interval is far narrower
    # than that of two independent accuracies, and it excludes 0.
    rng = np.random.default_rng(10)
    a = (rng.random(400) < 0.4).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:20]] = 1
    value, low, high = bootstrap_difference(b, a, seed=3)
    assert value == pytest.approx(5.0)
    assert 0 < low < value < high
    widths = [high_ - low_ for _, low_, high_ in (bootstrap_ci(a), bootstrap_ci(b))]
    assert high - low < 0.5 * float(np.hypot(*widths))
    assert bootstrap_difference(a, a) == (0.0, 0.0, 0.0)
    assert bootstrap_difference(b, a, seed=3) == (value, low, high)
    with pytest.raises(ValueError, match="differ in shape"):
        bootstrap_difference(a, a[:10])


def test_bootstrap_contrast_difference_of_gains() -> None:
    rng = np.random.default_rng(11)
    scores = (rng.random((4, 1, 300)) < [[[0.7]], [[0.5]], [[0.45]], [[0.4]]]).astype(float)
    means = 100 * scores.mean(axis=(1, 2))
    value, low, high = bootstrap_contrast(scores, [1, -1, -1, 1])
    assert value == pytest.approx(means[0] - means[1] - means[2] + means[3])
    assert low < value < high
    assert bootstrap_contrast(scores[:2], [1, -1]) == bootstrap_difference(scores[0], scores[1])
    with pytest.raises(ValueError, match="weights has 2 entries"):
        bootstrap_contrast(scores, [1, -1])


def test_describe_fit_sentences_follow_numbers() -> None:
    rising = linear_fit([-3, -2, -1, 0], [17.9, 22.7, 30.9, 35.9])
    text = describe_fit(rising, "doubling of data", "accuracy", "points")
    assert text.startswith(f"accuracy rises {rising.slope:.1f} points per doubling of data (slope 95% CI ")
    assert f"R² = {rising.r2:.2f}, n = 4" in text
    falling = linear_fit([1.6, 1.7, 1.8], [55.0, 45.0, 36.0])
    assert describe_fit(falling, "unit of loss", "accuracy", "points").startswith("accuracy falls 95.0 points")
    flat = LinearFit(0.01, 5.0, 0.1, 0.01, 0.9, 5, (-1.0, 1.0), (4.0, 6.0))
    assert "is flat (0.0 points per k)" in describe_fit(flat, "k", "accuracy", "points")


def test_results_serialise_to_json() -> None:
    comparison = predictor_comparison([30, 40, 52, 55], [1.8, 1.7, 1.6, 1.55], [7e9, 13e9, 33e9, 65e9])
    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["better"] in {"loss", "size"}
    assert set(data["loss_fit"]) >= {"slope", "intercept", "r", "r2", "n", "slope_ci", "intercept_ci", "p_value"}


def test_bootstrap_gain_fit_pairs_each_base_and_its_rft_model_in_every_resample():
    rng = np.random.default_rng(0)
    rates = [(0.2, 0.4), (0.4, 0.44), (0.6, 0.62)]  # weaker bases gain more: 20, 4 and 2 points, not in a line
    sft = np.stack([(rng.random((3, 2000)) < s).astype(float) for s, _ in rates])
    rft = np.stack([(rng.random((3, 2000)) < r).astype(float) for _, r in rates])
    boot = bootstrap_gain_fit(sft, rft, resamples=500)
    assert boot.fit.slope == pytest.approx(gain_fit(100 * sft.mean(axis=(1, 2)), 100 * rft.mean(axis=(1, 2))).slope)
    assert boot.slope_low < boot.fit.slope < boot.slope_high < 0  # decided by the test problems, not by n = 3
    assert boot.fit.slope_ci[1] > 0  # which the t interval over three bases cannot do
    flat = bootstrap_gain_fit(sft, sft, resamples=200)
    assert flat.fit.slope == 0 and flat.slope_low == flat.slope_high == 0
    with pytest.raises(ValueError, match="differ in shape"):
        bootstrap_gain_fit(sft, rft[:2])


def test_bootstrap_extrapolation_reads_the_paired_line_beyond_its_points():
    rng = np.random.default_rng(1)
    scores = np.stack([(rng.random((2, 3000)) < p).astype(float) for p in (0.3, 0.4)])  # +10 points per unit of x
    predicted, low, high = bootstrap_extrapolation([1.0, 2.0], scores, 4.0, resamples=400)
    means = 100 * scores.mean(axis=(1, 2))
    assert predicted == pytest.approx(means[1] + 2 * (means[1] - means[0]))
    assert low < 60 < high and high - low < 20  # the truth, 30 + 10·3; two seeds and a long reach: wide
    with pytest.raises(ValueError, match="need 2 or more distinct x"):
        bootstrap_extrapolation([1.0, 1.0], scores, 4.0)

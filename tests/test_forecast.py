"""Forecasts of coverage and distinct correct paths at large k: exact formulas, known answers, the command."""

import json
from array import array

import numpy as np
import pytest

from conftest import write_lines
from rftlab.cli import main
from rftlab.data import Problem
from rftlab.forecast import UNCHECKED, WRONG, BetaBinomial, Draws, PitmanYor, forecast, read_draws


def simulate(n_problems, k, a, b, theta, d, seed):
    """Problems with rates ~ Beta(a, b) whose correct paths seat in equation lists by a Pitman-Yor(theta, d)."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for rate in rng.beta(a, b, n_problems):
        codes, sizes = array("i"), []
        for _ in range(k):
            if rng.random() >= rate:
                codes.append(WRONG)
                continue
            seen = sum(sizes)
            if not seen or rng.random() < (theta + d * len(sizes)) / (theta + seen):
                sizes.append(1)
                codes.append(len(sizes) - 1)
            else:
                table = rng.choice(len(sizes), p=(np.array(sizes) - d) / (seen - d * len(sizes)))
                sizes[table] += 1
                codes.append(int(table))
        outcomes.append(codes)
    return Draws(outcomes)


def expected_lists(theta, d, lists, paths, more):
    """E[lists] after `more` paths by the exact recursion: a new list comes with chance (theta + d K) / (theta + n)."""
    expected = float(lists)
    for n in range(paths, paths + more):
        expected += (theta + d * expected) / (theta + n) if n else 1.0
    return expected - lists


@pytest.mark.parametrize("theta, d", [(1.0, 0.3), (0.2, 0.7), (2.5, 0.0)])
@pytest.mark.parametrize("lists, paths", [(0, 0), (1, 1), (2, 5), (4, 9)])
def test_new_lists_is_the_exact_expectation(theta, d, lists, paths):
    more = np.arange(0, 60)
    found = PitmanYor(theta, d).new_lists(lists, paths, more)
    assert found == pytest.approx([expected_lists(theta, d, lists, paths, m) for m in more], rel=1e-9, abs=1e-12)


def test_beta_binomial_posterior_chances_are_exact():
    uniform = BetaBinomial(1.0, 1.0)  # a uniform rate: no success in n leaves P(none in K) = (n + 1) / (K + 1)
    assert uniform.chance_unsolved(np.array([0]), np.array([4]), np.array([16]))[0] == pytest.approx(5 / 21)
    future = BetaBinomial(0.4, 1.3).future(correct=2, trials=5, more=7)
    assert future.sum() == pytest.approx(1.0)
    assert future @ np.arange(8) == pytest.approx(7 * (0.4 + 2) / (0.4 + 1.3 + 5))


@pytest.mark.parametrize("a, b, theta, d", [(0.3, 0.6, 1.0, 0.3), (0.2, 1.5, 0.5, 0.5)])
def test_forecasts_from_eight_paths_meet_the_goals_on_known_worlds(a, b, theta, d):
    draws = simulate(1500, 64, a, b, theta, d, seed=3)
    result = forecast(draws, [32, 64], fit_k=8, resamples=60, seed=0)
    fitted = result["fit"]
    assert fitted["beta_binomial"]["alpha"] == pytest.approx(a, rel=0.25)
    assert fitted["beta_binomial"]["beta"] == pytest.approx(b, rel=0.25)
    assert fitted["pitman_yor"]["discount"] == pytest.approx(d, abs=0.15)
    for entry in result["forecast"]:
        assert entry["covered"], entry
        if entry["target"] == "coverage":
            assert abs(entry["error"]) < 3, entry
        else:
            assert abs(entry["relative_error"]) < 0.1, entry


def test_a_model_without_new_lists_is_not_forecast_to_find_them():
    """Every correct path repeats one list (a memorised solution): distinct paths stay at coverage."""
    rng = np.random.default_rng(0)
    rates = rng.beta(1, 1, 800)
    draws = Draws([array("i", [0 if rng.random() < rate else WRONG for _ in range(40)]) for rate in rates])
    result = forecast(draws, [40], fit_k=8, resamples=30)
    coverage, paths = result["forecast"]
    assert result["fit"]["pitman_yor"]["theta"] < 1e-3
    assert paths["predicted"] == pytest.approx(coverage["predicted"] / 100, abs=0.01)
    assert paths["error"] == pytest.approx(coverage["error"] / 100, abs=0.01)


def test_read_draws_codes_each_path_by_the_rejection_rule(tmp_path):
    problems = [Problem("a", "q", "<<1+1=2>>2\n#### 2", "2"), Problem("b", "q", "<<3*1=3>>3\n#### 3", "3")]
    samples = write_lines(tmp_path / "s.jsonl", [
        {"id": "a", "response": "<<1+1=2>>2\n#### 2"},
        {"id": "b", "response": "#### 4"},
        {"id": "a", "response": "<<1+1=3>>2\n#### 2"},  # right answer, wrong annotation
        {"id": "a", "response": "<<2*1=2>>2\n#### 2"},
        {"id": "a", "response": "<< 1+1 = 2>>2, so\n#### 2"},  # the first list again
    ])  # fmt: skip
    draws = read_draws(problems, [samples])
    assert [list(codes) for codes in draws.outcomes] == [[0, UNCHECKED, 1, 0], [WRONG]]
    assert draws.partitions(4) == [[2, 1], []]
    assert draws.observed(1) == {"coverage": 50.0, "distinct_paths": 0.5}
    assert draws.observed(2) is None  # b has one path


def test_forecast_command_reports_observed_values_and_refuses_a_k_it_has(tmp_path, capsys):
    draws = simulate(300, 16, 0.5, 0.8, 1.0, 0.3, seed=1)
    train = write_lines(tmp_path / "train.jsonl", [
        {"id": str(i), "query": f"q{i}", "response": "#### 9"} for i in range(300)])  # fmt: skip
    lines = []
    for i, codes in enumerate(draws.outcomes):
        for code in codes:
            response = "#### 8" if code == WRONG else f"<<{code}+9={code + 9}>>{code + 9}\n<<9-0=9>>9\n#### 9"
            lines.append({"id": str(i), "response": response})
    samples = write_lines(tmp_path / "samples.jsonl", lines)
    out = tmp_path / "forecast.json"
    command = ["forecast", str(samples), "--train", str(train)]
    assert main([*command, "--k", "16", "12", "--fit-k", "4", "--resamples", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["format"] == "rftlab.forecast/1" and result["fit_k"] == 4
    assert [(e["target"], e["k"]) for e in result["forecast"]] == [
        ("coverage", 12), ("distinct_paths", 12), ("coverage", 16), ("distinct_paths", 16)]  # fmt: skip
    observed = draws.observed(16)
    assert result["forecast"][2]["observed"] == pytest.approx(observed["coverage"], abs=1e-4)
    assert result["forecast"][3]["observed"] == pytest.approx(observed["distinct_paths"], abs=1e-4)
    assert "distinct_paths" in capsys.readouterr().out
    assert main([*command, "--k", "4", "--fit-k", "4"]) == 2
    assert "--k must exceed the paths fitted per problem (4), got 4" in capsys.readouterr().err

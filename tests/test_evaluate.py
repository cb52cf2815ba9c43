import json
from fractions import Fraction
from itertools import combinations
from math import comb, isclose

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import write_lines
from rftlab.answers import same_number
from rftlab.data import DataError, Problem
from rftlab.evaluate import (
    evaluate_sample_files,
    majority_vote,
    pass_at_k,
    predictions_path,
    score,
    summary_table,
)


def problem(problem_id, answer):
    return Problem(problem_id, f"question {problem_id}", f"solution\n#### {answer}", answer)


def brute_force_pass_at_k(n, c, k):
    """Share of the k-subsets of n paths (the first c correct) that hold a correct path."""
    subsets = list(combinations(range(n), k))
    return sum(any(path < c for path in subset) for subset in subsets) / len(subsets)


@st.composite
def n_c_k(draw):
    n = draw(st.integers(1, 9))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@given(n_c_k())
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_path(case):
    n, c, k = case
    assert isclose(pass_at_k(n, c, k), brute_force_pass_at_k(n, c, k), abs_tol=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct path is drawn
    assert pass_at_k(10, 0, 10) == 0.0
    assert isclose(pass_at_k(10, 3, 1), 0.3)
    assert isclose(pass_at_k(4, 2, 2), 5 / 6)


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    exact = 1 - Fraction(comb(1500, 100), comb(2000, 100))
    assert isclose(pass_at_k(2000, 500, 100), float(exact), rel_tol=1e-12)
    assert isclose(pass_at_k(2000, 1, 1), 1 / 2000, rel_tol=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 0, 4), (3, 1, 0), (3, 4, 2), (3, -1, 2)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_majority_vote_breaks_ties_by_earliest_first_occurrence():
    assert majority_vote(["5", "10", "10", "5"]) == "5"
    assert majority_vote(["10", "5", "5", "10"]) == "10"
    assert majority_vote(["1", "2", "2", "3", "3", "3"]) == "3"


def test_majority_vote_ignores_invalid_answers():
    assert majority_vote([None, None, "7", None]) == "7"
    assert majority_vote([None, "bad", "8", "x", "8", "9"]) == "8"
    assert majority_vote([None, None]) is None
    assert majority_vote(["abc"]) is None
    assert majority_vote([]) is None


def test_majority_vote_groups_by_numeric_value():
    assert majority_vote(["3", "72.0", "3", "72", "72.000"]) == "72.0"  # the winning group's first string
    assert majority_vote(["1", "72", "72.0000001"]) == "72"


def test_majority_vote_groups_answers_the_correctness_rule_calls_equal():
    assert same_number("72.00001", "72")
    assert majority_vote(["72", "1", "72.00001", "1"]) == "72"  # one group of two votes, seen before "1"
    assert majority_vote(["1", "72.00001", "72", "1"]) == "1"  # a tie of two groups: the first seen wins
    assert majority_vote(["5", "72.00001", "72"]) == "72.00001"  # the group's first-seen string
    assert majority_vote(["72", "72.0002", "72.0002", "9"]) == "72.0002"  # 2e-4 apart: two groups
    assert majority_vote(["72", "72.00009", "72.00018", "72.00018", "72.00018"]) == "72.00018"  # no chains


# One path per problem, gold 72; verdicts per extractor (gsm8k, strict, flexible):
CRAFTED = {
    "after": "#### 72\nor maybe 3",  # the first `####` vs the last number: T, T, F
    "dots": "So 72..\n#### 72..",  # `72..` is no float; the harness strips one dot: F, T, T
    "prose": "The answer is 72.",  # no `####`: F, F, T
}


@pytest.mark.parametrize(
    ("extractor", "verdicts"),
    [("gsm8k", [True, False, False]), ("strict", [True, True, False]), ("flexible", [False, True, True])],
)
def test_score_by_extractor(extractor, verdicts):
    problems = [problem(problem_id, "72") for problem_id in CRAFTED]
    evaluation = score(problems, {key: [text] for key, text in CRAFTED.items()}, extractor)
    assert [record["correct_first"] for record in evaluation.predictions()] == verdicts
    summary = evaluation.summary("p.jsonl")
    assert summary["maj1@1"] == round(100 * sum(verdicts) / 3, 2)
    assert summary["extractor"] == extractor
    assert "k" not in summary and "pass@k" not in summary  # one path per problem: no k


def test_score_rejects_an_unknown_extractor():
    with pytest.raises(ValueError, match="unknown extractor"):
        score([problem("a", "1")], {"a": ["#### 1"]}, "nope")


def paths_of_two_problems_and_a_missing_one():
    problems = [problem("p0", "10"), problem("p1", "7"), problem("p2", "1")]
    paths = {
        "p0": ["#### 5", "#### 10", "#### 10", "#### 5"],  # n=4, c=2
        "p1": ["#### 7", "no answer", "#### 3", "#### 3", "#### 7.0"],  # n=5, c=2
    }
    return problems, paths


def test_score_with_k_two():
    evaluation = score(*paths_of_two_problems_and_a_missing_one(), k=2)
    assert evaluation.summary("EVAL.predictions.jsonl") == {
        "format": "rftlab.eval/1",
        "maj1@1": 33.33,  # p1's first path
        "n": 3,
        "extractor": "gsm8k",
        "k": 2,
        "maj1@k": 33.33,  # p0: 5 vs 10 tie goes to 5; p1: 7 (the invalid answer dropped)
        "pass@k": 51.11,  # (1 - 1/6 + 1 - 3/10 + 0) / 3
        "sample_accuracy": 30.0,  # (2/4 + 2/5 + 0) / 3
        "missing": 1,
        "predictions": "EVAL.predictions.jsonl",
    }
    assert evaluation.missing == ["p2"]


def test_score_defaults_k_to_the_fewest_paths_of_a_problem_with_paths():
    evaluation = score(*paths_of_two_problems_and_a_missing_one())
    summary = evaluation.summary("p.jsonl")
    assert evaluation.k == 4
    assert (summary["maj1@k"], summary["pass@k"]) == (0.0, 66.67)  # p1 votes 3 over its first 4 paths
    records = {record["id"]: record for record in evaluation.predictions()}
    assert records["p1"] == {
        "id": "p1",
        "gold": "7",
        "answers": ["7", None, "3", "3", "7.0"],
        "first": "7",
        "vote": "3",
        "correct_first": True,
        "correct_vote": False,
        "n": 5,
        "c": 2,
    }
    assert records["p2"] == {
        "id": "p2",
        "gold": "1",
        "answers": [],
        "first": None,
        "vote": None,
        "correct_first": False,
        "correct_vote": False,
        "n": 0,
        "c": 0,
    }


def test_score_without_k_votes_the_first_path_only():
    problems, paths = paths_of_two_problems_and_a_missing_one()
    evaluation = score(problems, paths, k=1)
    assert [record["vote"] for record in evaluation.predictions()] == ["5", "7", None]
    assert "maj1@k" not in evaluation.summary("p.jsonl")


def test_score_rejects_k_beyond_a_problems_paths_and_unknown_ids():
    problems, paths = paths_of_two_problems_and_a_missing_one()
    with pytest.raises(ValueError, match="'p0' has 4 paths, fewer than k=5"):
        score(problems, paths, k=5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        score(problems, paths, k=0)
    with pytest.raises(ValueError, match="'zz'"):
        score(problems, {**paths, "zz": ["#### 1"]})


def test_score_of_no_problems_is_zero():
    assert score([], {}).summary("p.jsonl")["maj1@1"] == 0.0


def sample(problem_id, answer):
    return {"id": problem_id, "response": f"so\n#### {answer}"}


def eval_files(tmp_path):
    gold = [{"question": "q", "answer": "s\n#### 1,000"}, {"query": "r", "response": "#### 2"}]  # ids "0", "1"
    data = write_lines(tmp_path / "test.jsonl", gold)
    first = write_lines(tmp_path / "a.jsonl", [sample("0", "1,000"), sample("1", "3")])
    second = write_lines(tmp_path / "b.jsonl", [sample("0", "999"), sample(1, "2")])
    return data, [first, second]


def test_evaluate_sample_files_writes_the_summary_and_predictions_beside_it(tmp_path):
    data, samples = eval_files(tmp_path)
    out = tmp_path / "out" / "EVAL.json"
    summary = evaluate_sample_files(data, samples, out)
    assert predictions_path(out) == tmp_path / "out" / "EVAL.predictions.jsonl"
    assert sorted(path.name for path in out.parent.iterdir()) == ["EVAL.json", "EVAL.predictions.jsonl"]
    assert json.loads(out.read_text()) == summary
    assert summary == {
        "format": "rftlab.eval/1",
        "maj1@1": 50.0,
        "n": 2,
        "extractor": "gsm8k",
        "k": 2,
        "maj1@k": 50.0,  # problem 0: 1000 vs 999 tie, 1000 first; problem 1: 3 vs 2 tie, 3 first
        "pass@k": 100.0,
        "sample_accuracy": 50.0,
        "missing": 0,
        "predictions": "EVAL.predictions.jsonl",
    }
    records = [json.loads(line) for line in predictions_path(out).read_text().splitlines()]
    assert [(r["id"], r["gold"], r["answers"], r["vote"], r["n"], r["c"]) for r in records] == [
        ("0", "1000", ["1000", "999"], "1000", 2, 1),
        ("1", "2", ["3", "2"], "3", 2, 1),
    ]
    assert "missing" not in summary_table(summary)


def test_evaluate_sample_files_names_file_and_line_of_an_unknown_id_and_writes_nothing(tmp_path):
    data, samples = eval_files(tmp_path)
    bad = write_lines(tmp_path / "bad.jsonl", [sample("0", "1"), "", sample("7", "1")])
    out = tmp_path / "EVAL.json"
    out.write_text("previous\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: no problem with id '7'"):
        evaluate_sample_files(data, [*samples, bad], out)
    assert out.read_text() == "previous\n"
    assert not predictions_path(out).exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_summary_table_reads_k_and_missing():
    table = summary_table(score(*paths_of_two_problems_and_a_missing_one(), k=2).summary("p.jsonl"))
    assert table.splitlines() == [
        "3 problems, extractor gsm8k",
        "  maj1@1           33.33%",
        "  maj1@2           33.33%",
        "  pass@2           51.11%",
        "  sample accuracy  30.00%",
        "  missing          1 of 3 (no paths; counted wrong)",
    ]

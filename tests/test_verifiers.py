"""The answer verifiers: the paper's rule, and math-verify in a worker process under a hard timeout."""

import json
import time

import pytest

from rftlab.reject import reject, statistics
from rftlab.verifiers import MathVerify, PaperVerifier, open_verifier

pytest.importorskip("math_verify")

HANGS = "The answer is $9^{9^{9^{9}}}$"  # sympy evaluates the tower: math-verify never returns


def test_math_verify_compares_symbolically_where_the_paper_compares_numbers():
    paper = PaperVerifier("gsm8k")
    with MathVerify() as math_verify:
        cases = [("So 9 + 9 = 18.\n#### 18", "18"), ("#### 17", "18"), ("The answer is $\\frac{1}{2}$.", "0.5")]
        assert [math_verify(text, gold) for text, gold in cases] == [True, False, True]
        assert [paper(text, gold) for text, gold in cases] == [True, False, False]  # no "####": no answer
        assert math_verify.timeouts == 0


def test_a_verdict_that_hangs_is_cut_off_counted_wrong_and_the_next_one_gets_a_fresh_worker():
    with MathVerify(timeout=1.0) as math_verify:
        assert math_verify("#### 18", "18") is True  # the worker has started: its start-up is not a verdict's time
        start = time.perf_counter()
        assert math_verify(HANGS, "3") is False
        assert time.perf_counter() - start < 5 and math_verify.timeouts == 1
        assert math_verify("#### 18", "18") is True


def test_a_worker_that_dies_costs_one_verdict_and_is_replaced():
    with MathVerify() as math_verify:
        assert math_verify("#### 18", "18") is True
        math_verify._process.kill()
        math_verify._process.join()
        assert math_verify("#### 18", "18") is False and math_verify.timeouts == 1
        assert math_verify("#### 18", "18") is True and math_verify.timeouts == 1


def test_open_verifier_refuses_an_unknown_name_and_a_timeout_that_is_not_positive():
    with pytest.raises(ValueError, match="unknown verifier 'judge'"):
        open_verifier("judge", "gsm8k")
    with pytest.raises(ValueError, match="timeout must be positive"):
        MathVerify(timeout=0)


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reject_with_math_verify_and_without_the_calculator_check(tmp_path):
    from rftlab.data import read_problems

    train = write(tmp_path / "train.jsonl", [{"id": "p0", "query": "Half of 1?", "response": "<<1/2=0.5>>\n#### 0.5"}])
    samples = write(tmp_path / "s.jsonl", [
        {"id": "p0", "response": "<<1/2=0.5>>\n#### 0.5"},
        {"id": "p0", "response": "<<1/2=0.7>>\n#### 0.5"},  # the right answer, a wrong annotation
        {"id": "p0", "response": "<<1/2=0.5>> so it is $\\frac{1}{2}$"},  # math-verify reads it, the paper does not
    ])  # fmt: skip
    problems = read_problems(train)
    counts = {}
    for verifier in ("paper", "math-verify"):
        for check in (True, False):
            stats = statistics(reject(problems, [samples], verifier=verifier, check_calculator=check))
            counts[verifier, check] = (stats["correct"], stats["checked"], stats["selected"])
            assert (stats["verifier"], stats["calculator_check"], stats["verifier_timeouts"]) == (verifier, check, 0)
    assert counts == {
        ("paper", True): (2, 1, 1),
        ("paper", False): (2, 2, 2),
        ("math-verify", True): (3, 2, 1),  # the third path has the first one's equations
        ("math-verify", False): (3, 3, 2),
    }

"""benchmarks/bench_smollm2.py's cross-check with math-verify, on written texts (no model)."""

from __future__ import annotations

import pytest

import bench_smollm2 as bench
from rftlab.answers import extract_flexible, extract_strict


@pytest.mark.parametrize(
    ("extractor", "text", "mv_text", "mv_value", "category"),
    [
        ("strict", "So she earns 18 dollars.", "18", 18.0, bench.NO_HASH),
        ("strict", "#### 15 * 15 = 225", "225", 225.0, bench.HASH_NOT_FINAL),
        ("flexible", "I cannot tell.", None, None, bench.MV_NOTHING),
        ("flexible", "so 25% of them", "25", 0.25, bench.PERCENT),
        ("flexible", "She sold 1 / 2 of it", "1 / 2", 0.5, bench.PART_OF_TOKEN),
        ("flexible", "from 1:00 PM to 5:00", "5", 5.0, bench.PART_OF_TOKEN),
        ("flexible", "So, 10 * 5 =", "10 * 5", None, bench.MV_EXPRESSION),
        ("flexible", "So, the answer is 120 of 9", "120", 120.0, bench.MV_ANSWER_MARKER),
        ("flexible", "It is 7. Add 2 more", "7", 7.0, bench.OTHER_NUMBER),
    ],
)
def test_classify_names_the_reason(extractor, text, mv_text, mv_value, category):
    extracted = (extract_strict if extractor == "strict" else extract_flexible)(text)
    assert bench.classify(extractor, text, extracted, mv_text, mv_value) == category


def test_cross_check_counts_verdicts_and_readings():
    pytest.importorskip("math_verify", reason="the cross-check needs math-verify (pip install 'rftlab[bench]')")
    rows = [
        {"run": "t", "id": "0", "gold": "72", "response": "48 + 24 = 72 clips.\n#### 72"},
        {"run": "t", "id": "1", "gold": "10", "response": "She earned 10 dollars."},  # no ####: strict wrong
        {"run": "t", "id": "2", "gold": "5", "response": "So, the answer is 5 apples, plus 2 pears."},
    ]
    check = bench.cross_check(rows)
    assert check["answers"] == 3
    assert check["agreement"]["flexible"]["both right"] == 2
    assert check["agreement"]["flexible"]["only math-verify right"] == 1  # flexible reads the trailing 2
    assert check["disagreements"]["verdict"]["flexible"] == {bench.MV_ANSWER_MARKER: 1}
    assert check["disagreements"]["verdict"]["strict"] == {bench.NO_HASH: 2}
    assert rows[2]["math_verify"] == "5" and rows[2]["flexible"] == "2"
    assert {(e["kind"], e["extractor"], e["category"]) for e in check["examples"]} == {
        ("verdict", "flexible", bench.MV_ANSWER_MARKER),
        ("verdict", "strict", bench.NO_HASH),
    }

import pytest

from rftlab.answers import extract_answer, get_extractor, same_number


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("so 48+24=72\n#### 72", "72"),
        ("#### 1,600", "1600"),
        ("#### -5", "-5"),
        ("#### 3.5", "3.5"),
        ("#### 72.", "72."),
        ("#### 5\n#### 6", "5"),  # several: the first
        ("no marker, 72", None),
        ("####72", None),  # the space is part of the rule
        ("#### $5", None),
        ("#### .", None),
        ("#### 1.2.3", None),
        ("#### -", None),
        ("\0#### 5", None),  # text after NUL is ignored, as in the reference code
        ("", None),
    ],
)
def test_gsm8k_extractor(completion, expected):
    assert extract_answer(completion, "gsm8k") == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("#### 72.", "72"),
        ("#### 1,000", "1000"),
        ("#### 5 then #### 6", "5"),
        ("The answer is 72", None),
        ("#### $5", None),
    ],
)
def test_strict_extractor(completion, expected):
    assert extract_answer(completion, "strict") == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("The answer is $29.00.", "29.00"),
        ("2 apples and 3 pears", "3"),
        ("it drops to -7", "-7"),
        ("#### 1,234,567", "1234567"),
        ("x is 5.", "5"),
        ("no numbers here", None),
        ("wait...", None),  # a dots-only run is not a number
    ],
)
def test_flexible_extractor(completion, expected):
    assert extract_answer(completion, "flexible") == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("72", "72", True),
        ("72.0", "72", True),
        ("72.00001", "72", True),
        ("72.001", "72", False),
        ("-3", "3", False),
        ("29.00", "29", True),
        (None, "72", False),
        ("nan", "72", False),
        ("inf", "inf", False),
    ],
)
def test_numeric_comparison(prediction, gold, expected):
    assert same_number(prediction, gold) is expected


def test_extractors_differ_where_the_harness_does():
    completion = "Half of 10 is 5.\n#### 5\nBonus: 7"
    assert [extract_answer(completion, name) for name in ("gsm8k", "strict", "flexible")] == ["5", "5", "7"]


def test_unknown_extractor_names_the_choices():
    with pytest.raises(ValueError, match="gsm8k"):
        get_extractor("lenient")

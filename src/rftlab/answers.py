"""Final-answer extraction and numeric comparison (pure Python).

Extractors are named and selectable; each takes a completion and returns the answer as a numeric
string (commas and `$` removed) or None when no valid number is found:

- `gsm8k`: the paper's rule: the first `#### N` (regex `#### (-?[0-9.,]+)`), commas stripped,
  valid when it reads as a float; text after a NUL character is ignored, as in the reference code.
- `strict`: lm-evaluation-harness's GSM8K strict-match: the first `#### N`, then its normalisation
  (strip `,` and `$` and one trailing `.`).
- `flexible`: lm-evaluation-harness's flexible-extract: the *last* match of
  `(-?[$0-9.,]{2,})|(-?[0-9]+)` in the completion, with the same normalisation.

All extractors are compared numerically (|pred - gold| < 1e-4, the paper's evaluation rule), where the
harness compares strings; so `$29.00` and `29` agree here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

ANSWER_TOLERANCE = 1e-4

_HASH_ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def parse_number(text: str) -> float | None:
    """The finite float a numeric answer string denotes, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _valid(answer: str) -> str | None:
    return answer if parse_number(answer) is not None else None


def _harness_normalise(answer: str) -> str:
    """lm-evaluation-harness's `regexes_to_ignore` for GSM8K: `,`, `$` and a trailing `.`."""
    answer = answer.replace(",", "").replace("$", "")
    return answer[:-1] if answer.endswith(".") else answer


def extract_gsm8k(completion: str) -> str | None:
    """The paper's extractor: first `#### N`, commas stripped."""
    completion = completion.split("\0", 1)[0]
    match = _HASH_ANSWER_RE.search(completion)
    return _valid(match.group(1).replace(",", "")) if match else None


def extract_strict(completion: str) -> str | None:
    """lm-evaluation-harness strict-match: first `#### N`, normalised."""
    match = _HASH_ANSWER_RE.search(completion)
    return _valid(_harness_normalise(match.group(1))) if match else None


def extract_flexible(completion: str) -> str | None:
    """lm-evaluation-harness flexible-extract: the last number-like run, normalised."""
    matches = _FLEXIBLE_RE.findall(completion)
    if not matches:
        return None
    last = next((group for group in matches[-1] if group), "")
    return _valid(_harness_normalise(last))


Extractor = Callable[[str], str | None]
EXTRACTORS: dict[str, Extractor] = {
    "gsm8k": extract_gsm8k,
    "strict": extract_strict,
    "flexible": extract_flexible,
}
DEFAULT_EXTRACTOR = "gsm8k"


def get_extractor(name: str) -> Extractor:
    """The extractor called `name`; ValueError names the valid choices otherwise."""
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}") from None


def extract_answer(completion: str, extractor: str = DEFAULT_EXTRACTOR) -> str | None:
    """The final answer of a completion by the named extractor, or None when there is none."""
    return get_extractor(extractor)(completion)


def same_number(prediction: str | None, gold: str) -> bool:
    """Whether an extracted prediction equals the gold answer numerically (tolerance 1e-4)."""
    if prediction is None:
        return False
    predicted, expected = parse_number(prediction), parse_number(gold)
    if predicted is None or expected is None:
        return False
    return abs(predicted - expected) < ANSWER_TOLERANCE

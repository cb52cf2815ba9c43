"""A safe calculator for the `<<lhs=rhs>>` annotations of GSM8K-style solutions.

Model output is untrusted, so nothing here calls `eval` or `exec`. An expression is parsed by
Python's own parser (`ast.parse`, which builds a tree and runs nothing), the tree is checked to hold
only numbers and arithmetic (`+ - * / // % **`, unary `+ -`, parentheses), and it is evaluated
iteratively with Python's own number semantics, so results equal what plain arithmetic gives.
The work is bounded: long inputs, deep nesting and integers past `MAX_INT_BITS` bits (`9**9**9**9`)
are invalid, decided in microseconds. Anything else (names, calls, attributes, brackets, comparisons,
strings, complex numbers) is an invalid expression. Invalid is a result, never an exception.
`equation_key` is a path's list of annotations: what rejection de-duplicates by and budgets count.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable

MAX_CHARS = 1000
"""Longest expression or equation considered; longer ones are invalid."""
MAX_INT_BITS = 4096
"""Largest integer magnitude (in bits) of a literal or an intermediate result."""
CHECK_TOLERANCE = 1e-3
"""An equation checks when |lhs - rhs| is below this, as in the paper's code."""

Number = int | float

# What number literals and arithmetic are written with: no quotes, so no strings and their warnings.
_WHITESPACE_RE = re.compile(r"\s+")
_ARITHMETIC_CHARS_RE = re.compile(r"[0-9a-fA-FxXoOjJ_.+\-*/%()\s]*")

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class _Invalid(Exception):
    """Raised internally when an expression is not bounded arithmetic."""


def annotations(text: str) -> list[str]:
    """The calculator annotations `<<...>>` of a solution, inside text only, in order: what the regex
    `<<([^>]*)>>` finds (the paper's), in one linear pass. The regex backtracks: text with many `<<` and
    no `>>` costs it quadratic time. Here every start between a `<<` and the first `>` after it shares
    that `>`, so when no second `>` follows it, the search goes on after it."""
    found: list[str] = []
    start = text.find("<<")
    while start != -1:
        end = text.find(">", start + 2)
        if end == -1:
            break
        if text.startswith(">", end + 1):
            found.append(text[start + 2 : end])
            start = text.find("<<", end + 2)
        else:
            start = text.find("<<", end + 1)
    return found


def evaluate(expression: str) -> Number | None:
    """The value of an arithmetic expression, or None when it is invalid or out of bounds."""
    if len(expression) > MAX_CHARS or not _ARITHMETIC_CHARS_RE.fullmatch(expression):
        return None
    try:
        # Python strips leading spaces and tabs of a source string it evaluates; ast.parse does not.
        tree = ast.parse(expression.lstrip(" \t"), mode="eval")
    except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        return None
    try:
        return _evaluate(tree.body)
    except (_Invalid, ArithmeticError, ValueError):
        return None


def check_equation(equation: str) -> bool:
    """The paper's check of one annotation `lhs=rhs`: the value of lhs is within 1e-3 of rhs.

    As in the reference code, the text is split at every `=` and the first two parts are compared,
    and rhs is read with `float()`.
    """
    if "=" not in equation or len(equation) > MAX_CHARS:
        return False
    lhs, rhs = equation.split("=")[:2]
    value = evaluate(lhs)
    if value is None:
        return False
    try:
        return abs(float(value) - float(rhs)) < CHECK_TOLERANCE
    except (ValueError, OverflowError):
        return False


def equation_key(text: str, check: bool = True) -> str | None:
    """The de-duplication key of a path (its annotations joined by `|`, without white space), or None when
    one of its annotations does not check (`check`)."""
    return _key_of_annotations(tuple(annotations(text)), check)


_check_cached = functools.lru_cache(maxsize=1 << 20)(check_equation)


@functools.lru_cache(maxsize=1 << 20)
def _key_of_annotations(found: tuple[str, ...], check: bool) -> str | None:
    """Paths share equation lists (and equations) far more often than not: both checks are cached."""
    if check and not all(_check_cached(equation) for equation in found):
        return None
    return _WHITESPACE_RE.sub("", "|".join(found))


def _evaluate(root: ast.expr) -> Number:
    """Evaluates an arithmetic tree without recursion (post-order over an explicit stack)."""
    pending: list[ast.expr] = [root]
    order: list[ast.expr] = []
    while pending:
        node = pending.pop()
        order.append(node)
        if isinstance(node, ast.BinOp):
            pending.append(node.left)
            pending.append(node.right)
        elif isinstance(node, ast.UnaryOp):
            pending.append(node.operand)
    values: list[Number] = []
    for node in reversed(order):
        if isinstance(node, ast.BinOp):
            right = values.pop()
            values.append(_binary(node.op, values.pop(), right))
        elif isinstance(node, ast.UnaryOp):
            values.append(_unary(node.op, values.pop()))
        else:
            values.append(_literal(node))
    return values[0]


def _literal(node: ast.expr) -> Number:
    if not isinstance(node, ast.Constant) or type(node.value) not in (int, float):
        raise _Invalid(type(node).__name__)  # names, calls, bools, strings, complex, ...
    return _bounded(node.value)


def _unary(op: ast.unaryop, value: Number) -> Number:
    function = _UNARY.get(type(op))
    if function is None:
        raise _Invalid(type(op).__name__)
    return function(value)


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    function = _BINARY.get(type(op))
    if function is None:
        raise _Invalid(type(op).__name__)
    if function is operator.pow:
        _check_power_size(left, right)
    return _bounded(function(left, right))


def _check_power_size(base: Number, exponent: Number) -> None:
    """Refuses integer powers whose result would exceed the size bound, before computing them."""
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and exponent > 0 and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
        raise _Invalid("power too large")


def _bounded(value: Number | complex) -> Number:
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise _Invalid("integer too large")
        return value
    if isinstance(value, float):
        return value
    raise _Invalid(type(value).__name__)  # e.g. complex from (-8) ** 0.5

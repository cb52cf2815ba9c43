"""Answer verifiers: whether a sampled completion's final answer is the gold one.

- `paper` (the default): the final answer extracted by an extractor (`rftlab.answers`), compared as a number.
- `math-verify`: Hugging Face's math-verify, parsing the whole completion and the gold answer and comparing them
  symbolically. Its parser runs in a worker process, one verdict at a time under a hard timeout: a parse that
  hangs (the field's known failure) is killed with its process and counts as wrong; a fresh worker takes over.

Pure Python here; multiprocessing is imported when a math-verify verifier opens (not on the command line's
start-up path), math-verify (with sympy) in the worker only.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from rftlab.answers import get_extractor, same_number

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

VERIFIERS = ("paper", "math-verify")
HARD_TIMEOUT = 5.0
"""Seconds one math-verify verdict may take before its worker is killed (math-verify's own default is 5)."""
STARTUP_TIMEOUT = 300.0
"""Seconds a worker may take to import math-verify and give a first verdict (not counted in a verdict's time)."""


def _math_verify_worker(connection: Connection) -> None:
    """Verdicts for (gold, completion) pairs received on `connection`, until it closes."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # not a warning a verdict that its timeouts are off
    verify(parse("$1$", parsing_timeout=None), parse("#### 1", parsing_timeout=None), timeout_seconds=None)
    connection.send("ready")  # imported and warmed up (the first verdict builds math-verify's parsers)
    while True:
        try:
            gold, completion = connection.recv()
        except EOFError:
            return
        try:  # math-verify's own signal-based timeouts are off: the parent's hard timeout bounds the call
            verdict = bool(verify(parse(gold, parsing_timeout=None), parse(completion, parsing_timeout=None),
                                  timeout_seconds=None))  # fmt: skip
        except Exception:  # an unparsable text is a wrong answer, not a failed run
            verdict = False
        connection.send(verdict)


class MathVerify:
    """math-verify's verdicts from a worker process, each within `timeout` seconds (else wrong, worker replaced).
    The clock starts once the worker has imported math-verify and given a first verdict. Use as a context
    manager; `timeouts` counts the verdicts cut off (by the timeout, or by a worker that died)."""

    def __init__(self, timeout: float = HARD_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"the verifier's timeout must be positive, got {timeout}")
        if importlib.util.find_spec("math_verify") is None:
            raise ModuleNotFoundError("the math-verify verifier needs math-verify: pip install 'rftlab[verify]'")
        self.timeout = timeout
        self.timeouts = 0
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch's threads
        self._process: Any = None
        self._connection: Connection | None = None

    def __enter__(self) -> MathVerify:
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop()

    def __call__(self, completion: str, gold: str) -> bool:
        connection = self._worker()
        try:
            connection.send((gold, completion))
            if connection.poll(self.timeout):
                return bool(connection.recv())
        except (EOFError, OSError):  # the worker died (e.g. out of memory): the verdict is cut off as by the clock
            pass
        self.timeouts += 1
        self._stop()
        return False

    def _worker(self) -> Connection:
        if self._connection is None:
            parent, child = self._context.Pipe()
            self._process = self._context.Process(target=_math_verify_worker, args=(child,), daemon=True)
            self._process.start()
            child.close()
            self._connection = parent
            if not parent.poll(STARTUP_TIMEOUT) or parent.recv() != "ready":
                self._stop()
                raise RuntimeError(f"math-verify's worker did not start within {STARTUP_TIMEOUT:g} s")
        return self._connection

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._process.kill()
            self._process.join()
            self._connection = self._process = None


class PaperVerifier:
    """The paper's rule: the extracted final answer equals the gold answer as a number."""

    timeouts = 0

    def __init__(self, extractor: str) -> None:
        self.extract = get_extractor(extractor)

    def __enter__(self) -> PaperVerifier:
        return self

    def __exit__(self, *exception: object) -> None:
        pass

    def __call__(self, completion: str, gold: str) -> bool:
        return same_number(self.extract(completion), gold)


def open_verifier(name: str, extractor: str, timeout: float = HARD_TIMEOUT) -> PaperVerifier | MathVerify:
    """The verifier of that name (`VERIFIERS`); math-verify ignores the extractor (it parses the whole text)."""
    if name == "paper":
        return PaperVerifier(extractor)
    if name == "math-verify":
        return MathVerify(timeout)
    raise ValueError(f"unknown verifier {name!r}; choose from {', '.join(VERIFIERS)}")

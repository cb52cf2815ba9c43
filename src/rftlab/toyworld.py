"""Ledger world: a generated GSM8K-style task with several distinct correct solutions per problem.

A problem names 2-4 people. Person 1 is given a count; each later person is given one or is defined
from an earlier person (`+k`, `-k`, `*k`). The question asks for the total count, or for the total
cost at a unit price. Solutions carry GSM8K calculator annotations (`<<7+3=10>>10`, integer `+ - *`
only) and end with `#### N`, so `calculator.check_equation`, `answers.extract_gsm8k` and
`calculator.equation_key` work on them unchanged.

Distinct correct paths (distinct equation lists) come from three choices, a `Strategy`: the order of
the derivation steps (any topological order), one n-ary sum versus a chain of pairwise sums (operands
in any order), and, for cost, sum-then-multiply versus multiply-each-then-sum. Each gold solution
uses one randomly drawn strategy; `WorldConfig(canonical=True)` always uses the fixed one (the
ablation without path diversity). Everything is drawn from `random.Random` streams named by the
seed, so a seed reproduces its files exactly. Pure Python.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Any, NamedTuple

from rftlab.data import PROMPT_TEMPLATES, atomic_folder, atomic_writer, write_json, write_jsonl

FORMAT = "rftlab.toyworld/1"
"""The prompt format of SFT data, used here for the solved documents of the pre-training corpus."""
NAMES = ("Ann", "Bob", "Cy", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo")
ITEMS = {plural: plural.removesuffix("s") for plural in ("apples", "pens", "cards", "books", "eggs", "shells", "stamps",
                                                         "marbles")}  # fmt: skip
"""Item nouns, plural to singular: shown in verbose text, and in terse text when there are distractors."""
SURFACES = ("terse", "verbose")
TEST_BUCKETS = 8
"""A problem belongs to the test split when the hash of its structure key is 0 modulo this."""
DEFAULT_CORPUS_DOCS = 20_000
"""About 2M characters of pre-training text."""
DRILL_SHARE, STATEMENT_SHARE = 0.2, 0.3
"""Shares of the pre-training documents; the rest are solved problems of other question families."""

_TIMES_WORDS = {2: "twice", 3: "three times"}
_SENTENCE_END_RE = re.compile(r"[.?!] ")
_TERSE_LABELS = {"derive": "{name}", "share": "{name} cost", "partial": "Sum", "partial_cost": "Sum", "total": "Total",
                 "cost": "Cost", "difference": "Difference"}  # fmt: skip
_VERBOSE_LINES = {
    "derive": "{name} has {calc} {noun}.",
    "share": "{name}'s {items} cost {calc} dollars.",
    "partial": "So far that is {calc} {noun}.",
    "partial_cost": "So far that is {calc} dollars.",
    "total": "Altogether they have {calc} {noun}.",
    "cost": "All the {items} cost {calc} dollars.",
    "difference": "{name} has {calc} more {noun} than {other}.",
}
_ASKS = {
    "total": ("How many{items} in all?", "How many{items} do they have altogether?"),
    "cost": (
        "Each{item} costs {price}. What is the total cost?",
        "Each{item} costs {price} dollars. How much do all the{items} cost?",
    ),
    "single": ("How many{items} does {name} have?",) * 2,
    "difference": ("How many more{items} does {name} have than {other}?",) * 2,
}
"""Question sentences by family: (terse, verbose)."""


@dataclass(frozen=True)
class WorldConfig:
    """The knobs of the world; the defaults give a GSM8K-like mix of 1-4 step problems.

    Two or three people by default: a 0.8M-parameter model learns them to a middling accuracy in minutes
    (four-person problems stay near zero at that budget, which leaves RFT nothing to sample).
    """

    people: tuple[int, ...] = (2, 3)
    """Number of people, drawn uniformly from this tuple (repeat a value to weight it)."""
    max_leaf: int = 12
    cost_share: float = 0.3
    distractors: int = 0
    """Most facts per problem that the answer does not use (each problem draws 0..this)."""
    surface: str = "terse"
    canonical: bool = False
    min_leaf: int = 2
    given_share: float = 1 / 3
    """Chance that a later person is given a count rather than defined from an earlier one."""
    add_range: tuple[int, int] = (1, 9)
    times_range: tuple[int, int] = (2, 3)
    times_max_base: int = 15
    """`*k` is only drawn when the referenced count is at most this."""
    price_range: tuple[int, int] = (2, 3)

    def __post_init__(self) -> None:
        problems = [
            (self.surface not in SURFACES, f"surface must be one of {', '.join(SURFACES)}"),
            (not self.people or not all(2 <= n <= len(NAMES) for n in self.people), f"people must be 2..{len(NAMES)}"),
            (not 1 <= self.min_leaf <= self.max_leaf, "need 1 <= min_leaf <= max_leaf"),
            (not 0 <= self.cost_share <= 1 or not 0 <= self.given_share <= 1, "shares must be in [0, 1]"),
            (self.distractors < 0, "distractors must be >= 0"),
            (not 1 <= self.add_range[0] <= self.add_range[1], "add_range must be (low, high) with 1 <= low"),
            (not 2 <= self.times_range[0] <= self.times_range[1], "times_range must be (low, high) with 2 <= low"),
            (not 1 <= self.price_range[0] <= self.price_range[1], "price_range must be (low, high) with 1 <= low"),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(f"WorldConfig: {message}")


DEFAULT_CONFIG = WorldConfig()


@dataclass(frozen=True)
class Derivation:
    """A count defined as an earlier person's count `op` k."""

    source: int
    op: str
    """"+", "-" or "*"."""
    k: int

    def apply(self, base: int) -> int:
        return base + self.k if self.op == "+" else base - self.k if self.op == "-" else base * self.k

    def expression(self, base: int) -> str:
        return f"{base}{self.op}{self.k}"


@dataclass(frozen=True)
class Distractor:
    """A fact the answer does not use: `name` has `count` of another item, told before person `position`."""

    position: int
    name: str
    count: int
    item: str


@dataclass(frozen=True)
class Strategy:
    """One way to solve a problem; the choices that make its equation list."""

    order: tuple[int, ...]
    """The derived people, in the order of their steps (topological: a source comes first)."""
    operands: tuple[int, ...]
    """All people, in the order they are summed (and, with `distribute`, priced)."""
    chain: bool = False
    """A chain of pairwise running sums instead of one n-ary sum."""
    distribute: bool = False
    """Cost only: price times each person's count, then the sum of those."""


class _Step(NamedTuple):
    role: str
    expression: str
    value: int
    person: int | None = None
    other: int | None = None

    @property
    def equation(self) -> str:
        return f"{self.expression}={self.value}"


@dataclass(frozen=True)
class ToyProblem:
    """A ledger-world problem: who has what, how it is defined, and what is asked."""

    names: tuple[str, ...]
    values: tuple[int, ...]
    definitions: tuple[Derivation | None, ...]
    """Per person, its derivation, or None when the count is given."""
    kind: str
    price: int
    """The unit price of a "cost" question; 0 for "total"."""
    item: str
    distractors: tuple[Distractor, ...] = ()

    @property
    def answer(self) -> int:
        return sum(self.values) * (self.price if self.kind == "cost" else 1)

    @property
    def derived(self) -> tuple[int, ...]:
        """The people whose counts are derived, in person order."""
        return tuple(person for person, definition in enumerate(self.definitions) if definition is not None)

    @property
    def steps(self) -> int:
        """Reasoning steps (annotations) of the canonical solution."""
        return len(self.derived) + 1 + (self.kind == "cost")

    @property
    def structure_key(self) -> str:
        """A canonical string of everything in the problem; equal problems have equal keys and vice versa."""
        people = ",".join(
            f"{name}={value if d is None else f'{self.names[d.source]}{d.op}{d.k}'}"
            for name, value, d in zip(self.names, self.values, self.definitions, strict=True)
        )
        noise = ",".join(f"{d.name}:{d.count}:{d.item}@{d.position}" for d in self.distractors)
        return f"{self.kind}|{self.price}|{self.item}|{people}|{noise}"

    def question(self, surface: str = "terse") -> str:
        """The problem statement: facts in person order (distractors among them), then the question."""
        return _statement(self, self.kind, surface)

    def canonical_strategy(self) -> Strategy:
        """Derivations in person order, one n-ary sum in person order, sum then multiply."""
        return Strategy(self.derived, tuple(range(len(self.names))))

    def draw_strategy(self, rng: random.Random) -> Strategy:
        """A random strategy: derivations drawn among the ready ones, operands uniformly ordered, each form 1/2."""
        operands = tuple(rng.sample(range(len(self.names)), len(self.names)))
        distribute = self.kind == "cost" and rng.random() < 0.5
        return Strategy(_random_order(self, rng), operands, rng.random() < 0.5, distribute)

    def solution(self, strategy: Strategy | random.Random | None = None, surface: str = "terse") -> str:
        """The worked solution by `strategy`, by one drawn from a `Random`, or (None) the canonical one."""
        if strategy is None:
            strategy = self.canonical_strategy()
        elif isinstance(strategy, random.Random):
            strategy = self.draw_strategy(strategy)
        _check_strategy(self, strategy)
        steps = _derivation_steps(self, strategy.order) + _tail_steps(self, strategy)
        return _render(self, steps, self.answer, surface)


# --- generation --------------------------------------------------------------------------------


def generate_problem(rng: random.Random, config: WorldConfig = DEFAULT_CONFIG) -> ToyProblem:
    """One problem drawn from the world of `config` (all randomness from `rng`)."""
    n = rng.choice(config.people)
    names = tuple(rng.sample(NAMES, n))
    values = [rng.randint(config.min_leaf, config.max_leaf)]
    definitions: list[Derivation | None] = [None]
    for _ in range(1, n):
        definition = None if rng.random() < config.given_share else _draw_derivation(rng, values, config)
        definitions.append(definition)
        if definition is None:
            values.append(rng.randint(config.min_leaf, config.max_leaf))
        else:
            values.append(definition.apply(values[definition.source]))
    kind = "cost" if rng.random() < config.cost_share else "total"
    price = rng.randint(*config.price_range) if kind == "cost" else 0
    item = rng.choice(tuple(ITEMS))
    distractors = tuple(_draw_distractor(rng, n, item, config) for _ in range(rng.randint(0, config.distractors)))
    return ToyProblem(names, tuple(values), tuple(definitions), kind, price, item, distractors)


def _draw_derivation(rng: random.Random, values: list[int], config: WorldConfig) -> Derivation:
    source = rng.randrange(len(values))
    base = values[source]
    ops = ["+"]
    if base - config.add_range[0] >= 1:
        ops.append("-")
    if base <= config.times_max_base:
        ops.append("*")
    op = rng.choice(ops)
    if op == "*":
        return Derivation(source, op, rng.randint(*config.times_range))
    high = config.add_range[1] if op == "+" else min(config.add_range[1], base - 1)
    return Derivation(source, op, rng.randint(config.add_range[0], high))


def _draw_distractor(rng: random.Random, n: int, item: str, config: WorldConfig) -> Distractor:
    other_item = rng.choice([other for other in ITEMS if other != item])
    return Distractor(rng.randint(0, n), rng.choice(NAMES), rng.randint(config.min_leaf, config.max_leaf), other_item)


# --- text --------------------------------------------------------------------------------------


def _noun(item: str, count: int) -> str:
    return ITEMS[item] if count == 1 else item


def _shows_items(problem: ToyProblem, surface: str) -> bool:
    """Verbose text always names the item; terse text only when distractors mention other items."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    return surface == "verbose" or bool(problem.distractors)


def _fact(problem: ToyProblem, person: int, surface: str) -> str:
    name, value, definition = problem.names[person], problem.values[person], problem.definitions[person]
    if definition is None:
        return f"{name} has {value}{' ' + _noun(problem.item, value) if _shows_items(problem, surface) else ''}."
    source, k = problem.names[definition.source], definition.k
    verbose = surface == "verbose"
    if definition.op == "*":
        times = _TIMES_WORDS.get(k, f"{k} times") if verbose else f"{k} times"
        return f"{name} has {times} as many{' ' + problem.item if verbose else ''} as {source}."
    more = "more" if definition.op == "+" else "fewer"
    return f"{name} has {k} {more}{' ' + _noun(problem.item, k) if verbose else ''} than {source}."


def _statement(problem: ToyProblem, family: str, surface: str, name: str = "", other: str = "") -> str:
    """The facts of a problem followed by the question of `family` ("total", "cost", "single", "difference")."""
    shown = _shows_items(problem, surface)
    sentences = []
    for position in range(len(problem.names) + 1):
        sentences += [
            f"{d.name} has {d.count} {_noun(d.item, d.count)}." for d in problem.distractors if d.position == position
        ]
        if position < len(problem.names):
            sentences.append(_fact(problem, position, surface))
    ask = _ASKS[family][surface == "verbose"].format(
        items=f" {problem.item}" if shown else "",
        item=f" {ITEMS[problem.item]}" if shown else "",
        price=problem.price,
        name=name,
        other=other,
    )
    return " ".join([*sentences, ask])


def _render(problem: ToyProblem, steps: list[_Step], answer: int, surface: str) -> str:
    """One line per step, then `#### answer`."""
    lines = []
    for step in steps:
        name = "" if step.person is None else problem.names[step.person]
        other = "" if step.other is None else problem.names[step.other]
        if surface == "verbose":
            calc = f"{step.expression}=<<{step.equation}>>{step.value}"
            noun, items = _noun(problem.item, step.value), problem.item
            lines.append(_VERBOSE_LINES[step.role].format(name=name, other=other, calc=calc, noun=noun, items=items))
        elif surface == "terse":
            lines.append(f"{_TERSE_LABELS[step.role].format(name=name)}=<<{step.equation}>>{step.value}")
        else:
            raise ValueError(f"unknown surface {surface!r}; choose one of {', '.join(SURFACES)}")
    return "\n".join([*lines, f"#### {answer}"])


# --- solutions ---------------------------------------------------------------------------------


def _check_strategy(problem: ToyProblem, strategy: Strategy) -> None:
    """ValueError unless the strategy orders the problem's derivations topologically and sums everyone."""
    position = {person: index for index, person in enumerate(strategy.order)}
    topological = sorted(strategy.order) == list(problem.derived) and all(
        position.get(problem.definitions[person].source, -1) < index for person, index in position.items()
    )
    if not topological or sorted(strategy.operands) != list(range(len(problem.names))):
        raise ValueError(f"{strategy} is not a strategy for derived people {problem.derived} of {len(problem.names)}")


def _derivation_steps(problem: ToyProblem, order: tuple[int, ...]) -> list[_Step]:
    steps = []
    for person in order:
        definition = problem.definitions[person]
        expression = definition.expression(problem.values[definition.source])
        steps.append(_Step("derive", expression, problem.values[person], person))
    return steps


def _tail_steps(problem: ToyProblem, strategy: Strategy) -> list[_Step]:
    """The summing (and pricing) steps after the derivations."""
    values, price = problem.values, problem.price
    if problem.kind == "cost" and strategy.distribute:
        shares = [_Step("share", f"{values[p]}*{price}", values[p] * price, p) for p in strategy.operands]
        return shares + _sum_steps([share.value for share in shares], strategy.chain, "partial_cost", "cost")
    steps = _sum_steps([values[p] for p in strategy.operands], strategy.chain, "partial", "total")
    if problem.kind == "cost":
        steps.append(_Step("cost", f"{steps[-1].value}*{price}", steps[-1].value * price))
    return steps


def _sum_steps(terms: list[int], chain: bool, partial_role: str, final_role: str) -> list[_Step]:
    if not chain or len(terms) < 3:
        return [_Step(final_role, "+".join(map(str, terms)), sum(terms))]
    steps, running = [], terms[0]
    for index, term in enumerate(terms[1:], start=2):
        steps.append(_Step(final_role if index == len(terms) else partial_role, f"{running}+{term}", running + term))
        running += term
    return steps


def _random_order(problem: ToyProblem, rng: random.Random) -> tuple[int, ...]:
    """A topological order of the derivations, each step drawn among those whose source is known."""
    order, remaining = [], list(problem.derived)
    while remaining:
        ready = [p for p in remaining if problem.definitions[p].source not in remaining]
        order.append(rng.choice(ready))
        remaining.remove(order[-1])
    return tuple(order)


def _topological_orders(problem: ToyProblem, remaining: tuple[int, ...] | None = None) -> Iterator[tuple[int, ...]]:
    """All topological orders of the derivations, in lexicographic order."""
    remaining = problem.derived if remaining is None else remaining
    if not remaining:
        yield ()
        return
    for person in remaining:
        if problem.definitions[person].source not in remaining:
            rest = tuple(p for p in remaining if p != person)
            yield from ((person, *order) for order in _topological_orders(problem, rest))


def _distinct_parts(problem: ToyProblem) -> tuple[list[tuple[int, ...]], list[tuple[tuple[int, ...], bool, bool]]]:
    """The derivation orders and the tail choices, each first of its equation list.

    A solution's equation list is its derivations' list followed by its tail's, and the derivations'
    list has a fixed length, so distinct pairs of parts are exactly the distinct equation lists.
    """
    orders: dict[tuple[str, ...], tuple[int, ...]] = {}
    for order in _topological_orders(problem):
        orders.setdefault(tuple(step.equation for step in _derivation_steps(problem, order)), order)
    tails: dict[tuple[str, ...], tuple[tuple[int, ...], bool, bool]] = {}
    distributions = (False, True) if problem.kind == "cost" else (False,)
    permutations = itertools.permutations(range(len(problem.names)))
    for distribute, chain, operands in itertools.product(distributions, (False, True), permutations):
        strategy = Strategy((), operands, chain, distribute)
        tails.setdefault(tuple(step.equation for step in _tail_steps(problem, strategy)), (operands, chain, distribute))
    return list(orders.values()), list(tails.values())


def count_distinct_solutions(problem: ToyProblem) -> int:
    """How many correct solutions with distinct equation lists (`calculator.equation_key`) the problem has."""
    orders, tails = _distinct_parts(problem)
    return len(orders) * len(tails)


def distinct_solutions(problem: ToyProblem, surface: str = "terse", limit: int | None = None) -> list[str]:
    """One solution per distinct equation list, the canonical one first, in a fixed order."""
    orders, tails = _distinct_parts(problem)
    strategies = (Strategy(order, *tail) for order, tail in itertools.product(orders, tails))
    return [problem.solution(strategy, surface) for strategy in itertools.islice(strategies, limit)]


# --- splits ------------------------------------------------------------------------------------


def split_of(problem: ToyProblem) -> str:
    """ "test" or "train", by a hash of the structure key."""
    digest = hashlib.sha256(problem.structure_key.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else "train"


def generate_split(
    n_train: int, n_test: int, seed: int, config: WorldConfig = DEFAULT_CONFIG
) -> tuple[list[ToyProblem], list[ToyProblem]]:
    """Train and test problems from `random.Random(seed)`, disjoint by `split_of`, no question twice.

    Questions are de-duplicated by their terse text (which omits the item noun), so both surfaces and
    the canonical switch give the same problems for a seed.
    """
    rng = random.Random(seed)
    splits: dict[str, list[ToyProblem]] = {"train": [], "test": []}
    wanted = {"train": n_train, "test": n_test}
    seen: set[str] = set()
    max_draws = 50 * (n_train + n_test) + 10_000
    for _ in range(max_draws):
        if len(splits["train"]) >= n_train and len(splits["test"]) >= n_test:
            return splits["train"], splits["test"]
        problem = generate_problem(rng, config)
        split, question = split_of(problem), problem.question("terse")
        if len(splits[split]) < wanted[split] and question not in seen:
            seen.add(question)
            splits[split].append(problem)
    raise ValueError(f"the world of {config} has too few distinct problems for {n_train} + {n_test}")


def generate_validation(n_valid: int, seed: int, config: WorldConfig, exclude: Collection[str]) -> list[ToyProblem]:
    """Validation problems: of the train split's kind (`split_of`), none of whose terse questions is in `exclude`
    (the train and test questions), from a stream of their own, so train and test do not depend on `n_valid`."""
    rng, seen, problems = random.Random(f"rftlab.toyworld.valid:{seed}"), set(exclude), []
    for _ in range(50 * n_valid + 10_000):
        if len(problems) >= n_valid:
            return problems
        problem = generate_problem(rng, config)
        question = problem.question("terse")
        if split_of(problem) == "train" and question not in seen:
            seen.add(question)
            problems.append(problem)
    raise ValueError(f"the world of {config} has too few distinct problems for {n_valid} validation problems more")


def _records(split: str, problems: list[ToyProblem], config: WorldConfig, rng: random.Random) -> list[dict[str, Any]]:
    width = max(4, len(str(len(problems))))
    return [
        {
            "id": f"{split}-{number:0{width}d}",
            "query": problem.question(config.surface),
            "response": problem.solution(None if config.canonical else rng, config.surface),
            "steps": problem.steps,
            "kind": problem.kind,
            "people": len(problem.names),
        }
        for number, problem in enumerate(problems, start=1)
    ]


def _split_records(
    train: list[ToyProblem], test: list[ToyProblem], seed: int, config: WorldConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of both splits; gold strategies come from their own stream, so problems do not depend on them."""
    rng = random.Random(f"rftlab.toyworld.strategies:{seed}")
    return _records("train", train, config, rng), _records("test", test, config, rng)


def make_split(
    n_train: int, n_test: int, seed: int, config: WorldConfig = DEFAULT_CONFIG
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and test records `{id, query, response, steps, kind, people}` (see `generate_split`)."""
    return _split_records(*generate_split(n_train, n_test, seed, config), seed, config)


# --- pre-training corpus -----------------------------------------------------------------------


def _drill_line(rng: random.Random, top: int, config: WorldConfig) -> str:
    shape = rng.choice(("+", "-", "*", "sum"))
    if shape == "-":
        a = rng.randint(2, top)
        b = rng.randint(1, a - 1)
        expression, value = f"{a}-{b}", a - b
    elif shape == "*":
        a = rng.randint(1, 2 * top)
        factors = (*config.times_range, *config.price_range)
        k = rng.randint(min(factors), max(factors))
        expression, value = f"{a}*{k}", a * k
    else:
        terms = [rng.randint(1, top) for _ in range(2 if shape == "+" else rng.randint(3, 4))]
        expression, value = "+".join(map(str, terms)), sum(terms)
    return f"<<{expression}={value}>>{value}"


def _drill_doc(rng: random.Random, config: WorldConfig) -> str:
    """4-8 annotation lines over the world's number range."""
    top = 3 * (config.max_leaf + config.add_range[1])
    return "\n".join(_drill_line(rng, top, config) for _ in range(rng.randint(4, 8)))


def _leaks(problem: ToyProblem, exclude: Collection[str], config: WorldConfig) -> bool:
    """Whether the problem's facts, under any question and surface, hold an excluded question.

    A question asked of the last facts of a longer statement is inside it ("Bob has 3. Ann has 7. Dan has
    12. How many in all?" holds "Ann has 7. Dan has 12. How many in all?"), so every sentence-start suffix
    of the statement is checked.
    """
    prices = range(config.price_range[0], config.price_range[1] + 1)
    variants = [replace(problem, kind="total", price=0), *(replace(problem, kind="cost", price=p) for p in prices)]
    for text in (variant.question(surface) for variant in variants for surface in SURFACES):
        starts = [0, *(match.end() for match in _SENTENCE_END_RE.finditer(text))]
        if any(text[start:] in exclude for start in starts):
            return True
    return False


def _fresh_problem(rng: random.Random, config: WorldConfig, exclude: Collection[str]) -> ToyProblem:
    for _ in range(10_000):
        problem = generate_problem(rng, config)
        if not _leaks(problem, exclude, config):
            return problem
    raise ValueError("no problem outside `exclude` found in 10,000 draws")


def _needed_steps(problem: ToyProblem, people: tuple[int, ...]) -> list[_Step]:
    """The derivation steps that the counts of `people` need, in person order."""
    needed, pending = set(), list(people)
    while pending:
        definition = problem.definitions[person := pending.pop()]
        if definition is not None and person not in needed:
            needed.add(person)
            pending.append(definition.source)
    return _derivation_steps(problem, tuple(sorted(needed)))


def _other_family_doc(problem: ToyProblem, rng: random.Random, surface: str) -> str | None:
    """A solved "How many does X have?" or "How many more does X have than Y?" question, or None."""
    names, values = problem.names, problem.values
    if rng.random() < 0.5:
        if not problem.derived:
            return None
        person = rng.choice(problem.derived)
        query = _statement(problem, "single", surface, name=names[person])
        steps, answer = _needed_steps(problem, (person,)), values[person]
    else:
        pairs = [(a, b) for a, b in itertools.permutations(range(len(names)), 2) if values[a] > values[b]]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        query = _statement(problem, "difference", surface, name=names[a], other=names[b])
        answer = values[a] - values[b]
        steps = [*_needed_steps(problem, (a, b)), _Step("difference", f"{values[a]}-{values[b]}", answer, a, b)]
    return PROMPT_TEMPLATES["compact"].format(query=query) + _render(problem, steps, answer, surface)


def pretraining_corpus(
    seed: int, config: WorldConfig, exclude: Collection[str], n_docs: int = DEFAULT_CORPUS_DOCS, n_solved: int = 0
) -> list[str]:
    """Documents from the world that never state an excluded question's facts (pass train + test queries).

    About `DRILL_SHARE` are arithmetic drills, `STATEMENT_SHARE` unsolved problem statements, and the rest
    solved single-person and difference questions in the SFT format (the `compact` prompt template + solution).
    `n_solved` more, spread among them, are solved total and cost questions (fresh problems, one drawn strategy
    each; canonical in a canonical world): a base that has seen the task, as a web-trained model has seen math.
    """
    rng = random.Random(f"rftlab.toyworld.pretrain:{seed}")
    docs: list[str] = []
    while len(docs) < n_docs:
        draw = rng.random()
        if draw < DRILL_SHARE:
            docs.append(_drill_doc(rng, config))
            continue
        problem = _fresh_problem(rng, config, exclude)
        doc = problem.question(config.surface) if draw < DRILL_SHARE + STATEMENT_SHARE else None
        doc = doc or _other_family_doc(problem, rng, config.surface)
        if doc is not None:
            docs.append(doc)
    return _with_solved(docs, seed, config, exclude, n_solved)


def _with_solved(docs: list[str], seed: int, config: WorldConfig, exclude: Collection[str], n_solved: int) -> list[str]:
    """`docs` with `n_solved` solved total and cost questions inserted at drawn places."""
    rng, mixed = random.Random(f"rftlab.toyworld.pretrain-solved:{seed}"), list(docs)
    for _ in range(n_solved):
        problem = _fresh_problem(rng, config, exclude)
        prompt = PROMPT_TEMPLATES["compact"].format(query=problem.question(config.surface))
        solution = problem.solution(None if config.canonical else rng, config.surface)
        mixed.insert(rng.randint(0, len(mixed)), prompt + solution)
    return mixed


# --- files -------------------------------------------------------------------------------------


def _mean_by(groups: Iterable[tuple[int, float]]) -> dict[str, float]:
    by: dict[int, list[float]] = {}
    for group, value in groups:
        by.setdefault(group, []).append(value)
    return {str(group): round(fmean(by[group]), 3) for group in sorted(by)}


def _summary(train: list[ToyProblem], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Lengths, steps and path diversity of the train split."""
    distinct = [count_distinct_solutions(problem) for problem in train]
    steps = Counter(problem.steps for problem in train)
    return {
        "mean_query_chars": round(fmean(len(r["query"]) for r in records), 1) if records else 0.0,
        "mean_response_chars": round(fmean(len(r["response"]) for r in records), 1) if records else 0.0,
        "share_by_steps": {str(s): round(steps[s] / len(train), 3) for s in sorted(steps)},
        "mean_distinct_solutions_by_people": _mean_by(zip((len(p.names) for p in train), distinct, strict=True)),
        "mean_distinct_solutions_by_steps": _mean_by(zip((p.steps for p in train), distinct, strict=True)),
    }


def write_toyworld(
    out_dir: str | os.PathLike[str],
    n_train: int = 4000,
    n_test: int = 500,
    seed: int = 0,
    config: WorldConfig = DEFAULT_CONFIG,
    corpus_docs: int = DEFAULT_CORPUS_DOCS,
    n_valid: int = 0,
    corpus_solved: int = 0,
) -> dict[str, Any]:
    """Writes train.jsonl, test.jsonl, pretrain.txt (documents, one blank line apart), toyworld.json and, with
    `n_valid`, valid.jsonl: problems held out from training for checkpoint selection (`generate_validation`).
    `corpus_solved`: solved questions of the task's families added to the corpus (`pretraining_corpus`).

    Returns the summary that toyworld.json also holds: counts, lengths, steps and path diversity.
    """
    out = Path(out_dir)
    train_problems, test_problems = generate_split(n_train, n_test, seed, config)
    train, test = _split_records(train_problems, test_problems, seed, config)
    asked = {problem.question("terse") for problem in train_problems + test_problems}
    valid_problems = generate_validation(n_valid, seed, config, asked) if n_valid else []
    valid = _records("valid", valid_problems, config, random.Random(f"rftlab.toyworld.valid-strategies:{seed}"))
    held = {record["query"] for record in train + test + valid}
    docs = pretraining_corpus(seed, config, held, corpus_docs, corpus_solved)
    text = "\n\n".join(docs) + "\n"
    summary = {
        "format": FORMAT,
        "seed": seed,
        "train": len(train),
        "test": len(test),
        **({"valid": len(valid)} if valid else {}),
        "pretrain_docs": len(docs),
        "pretrain_solved": corpus_solved,
        "pretrain_chars": len(text),
        **_summary(train_problems, train),
    }
    with atomic_folder(out) as folder:  # a run killed part-way leaves no half world
        write_jsonl(folder / "train.jsonl", train)
        write_jsonl(folder / "test.jsonl", test)
        if valid:
            write_jsonl(folder / "valid.jsonl", valid)
        with atomic_writer(folder / "pretrain.txt") as handle:
            handle.write(text.encode())
        write_json(folder / "toyworld.json", {**summary, "config": asdict(config)})
    return summary

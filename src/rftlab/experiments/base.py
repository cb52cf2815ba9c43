"""What every experiment family shares: study-file checks, the planner contract, the role of a run, the interface.

A family is a module (registered in `rftlab.experiments.FAMILIES`) with the members of `Family`: it checks its
section of the study file, asks for samples, plans its cells through the planner, stamps each evaluated run
with its `Role`, analyses the runs it planned into a typed result, and writes that result's findings, report
blocks and figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Protocol

Json = dict[str, Any]


class StudyError(ValueError):
    """A study that cannot be planned (bad configuration) or whose cell failed."""


# Study-file checks: errors name the file and the entry ------------------------------------------


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StudyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise StudyError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def known_keys(spec: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")


def base_names(value: Any, config: Config, where: str) -> list[str]:
    """Base names (`all` or absent: every base); an unknown name is an error."""
    if value in (None, "all"):
        return [base.name for base in config.bases]
    names = [str(name) for name in as_list(value, where)]
    for name in names:
        config.base(name)
    return names


def integer(value: Any, where: str, least: int = 0) -> int:
    """A whole number of at least `least` (not a bool, a float or text: `2.5` is not read as 2)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudyError(f"{where}: expected a whole number, got {value!r}")
    if value < least:
        raise StudyError(f"{where}: must be >= {least}, got {value}")
    return value


def number(value: Any, where: str) -> float:
    """A finite number (not a bool or text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StudyError(f"{where}: expected a number, got {value!r}")
    return float(value)


def k_list(value: Any, where: str) -> list[int]:
    ks = [integer(k, where, least=1) for k in as_list(value if value is not None else [], where)]
    return sorted(set(ks))


def fraction(value: Any, where: str) -> float:
    """A data fraction in (0, 1], given as a number or a ratio such as 1/8."""
    try:
        share = float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        raise StudyError(f"{where}: fractions: {value!r} is not a number or a ratio like 1/8") from None
    if not 0 < share <= 1:
        raise StudyError(f"{where}: fractions: {value!r} is not in (0, 1]")
    return share


# The planner contract (rftlab.study.Planner) ----------------------------------------------------


class Cell(Protocol):
    label: str
    key: str
    kind: str


class Config(Protocol):
    """The parts of rftlab.study.StudyConfig the families read."""

    source: str
    data: dict[str, Any]
    train: dict[str, Any]
    bases: tuple[Any, ...]
    experiments: dict[str, Any]

    def base(self, name: str) -> Any: ...


class Planner(Protocol):
    """Builds the cells of one seed; the families plan through these methods only."""

    config: Config
    seed: int
    epochs: float | None

    def world(self, canonical: bool = False) -> Cell: ...
    def base(self, name: str) -> Cell: ...
    def subset(self, fraction: float) -> Cell | None: ...
    def sft(self, base: str, fraction: float = 1.0, epochs: float | None = None, canonical: bool = False,
            tokens_of: Cell | None = None) -> Cell: ...  # fmt: skip
    def request_samples(self, model: Cell, k: int) -> None: ...
    def samples(self, model: Cell, source: str, world: Cell) -> Cell: ...
    def budget(self, samples: Cell, world: Cell, round_k: int, until_correct: int, max_k: int) -> Cell: ...
    def rejection(self, samples: list[Cell], world: Cell, k: int, dedup: bool, label: str, verifier: str = "paper",
                  check_calculator: bool = True) -> Cell: ...  # fmt: skip
    def rft(self, base: str, selection: Cell, label: str, tokens_of: Cell | None = None) -> Cell: ...
    def evaluate(self, model: Cell, family: str, record: Json) -> None: ...


# Roles ------------------------------------------------------------------------------------------

VARIANTS = ("sft", "canonical sft", "sft at rft tokens", "rft", "no dedup", "canonical", "equal tokens", "union",
            "budget", "checker")  # fmt: skip
"""What a run is: SFT in the default or canonical world, or for the tokens of RFT at its k (a control); RFT on
its own SFT model's paths (de-duplicated, the default world, SFT's epochs), without de-duplication, in the
canonical world, or with SFT's tokens; RFT on a union's pooled paths; RFT on the paths a difficulty-aware
budget drew from its own SFT model (k: the budget's cap); RFT on the paths another checker kept (`checker`)."""


@dataclass(frozen=True)
class Role:
    """What a run is for one family that planned it (results.json: a run's `roles`, one per family)."""

    family: str
    base: str
    variant: str
    k: int | None = None
    fraction: float = 1.0
    epochs: float | None = None
    rule: str | None = None
    """The data family's epoch rule: fixed, scaled, "fixed = scaled" (the full data) or "token budget"."""
    union: str | None = None
    """The union whose pooled paths it trained on (variant "union")."""
    until_correct: int | None = None
    """The checked paths per problem at which its budget stopped sampling a problem (variant "budget")."""
    checker: str | None = None
    """What kept its RFT paths (the verifier family): `paper`, `math-verify`, each `+calculator` with the check."""

    def fits(self, base: str, variant: str, k: int | None = None, union: str | None = None, full: bool = False) -> bool:
        """This role's base and variant, and the k, union and full data where given."""
        return (
            self.base == base
            and self.variant == variant
            and (k is None or self.k == k)
            and (union is None or self.union == union)
            and (not full or math.isclose(self.fraction, 1.0))
        )

    def to_json(self) -> Json:
        return asdict(self)


def evaluate(planner: Planner, model: Cell, role: Role, record: Json) -> None:
    """Evaluates a model for its role's family; the run carries the record and the role."""
    planner.evaluate(model, role.family, {**record, "roles": [role.to_json()]})


def label(*parts: object) -> str:
    return "-".join(str(part) for part in parts if part not in (None, ""))


def sft_record(base: str, fraction: float, epochs: float | None, world: str = "default") -> Json:
    return {"stage": "sft", "base": base, "world": world, "fraction": fraction, "epochs": epochs,
            "budget": "epochs" if epochs else "tokens", "k": None, "dedup": None, "sources": [],
            "union": None}  # fmt: skip


def rft_record(base: str, k: int, dedup: bool, sources: list[str], selection: Cell, budget: str,
               epochs: float | None, world: str = "default", union: str | None = None) -> Json:  # fmt: skip
    return {"stage": "rft", "base": base, "world": world, "fraction": 1.0,
            "epochs": epochs if budget == "epochs" else None, "budget": budget, "k": k, "dedup": dedup,
            "sources": sources, "union": union, "selection": selection}  # fmt: skip


def own_rft(
    planner: Planner, base: str, k: int, dedup: bool = True, canonical: bool = False, equal_tokens: bool = False
) -> tuple[Cell, Json]:
    """RFT from the base on the first k paths of its own SFT model (in the given world, with a budget)."""
    world, tuned = planner.world(canonical), planner.sft(base, canonical=canonical)
    samples = planner.samples(tuned, base, world)
    variant = label("canonical" if canonical else "", "" if dedup else "nodedup")
    selection = planner.rejection([samples], world, k, dedup, label(base, f"k{k}", variant, f"s{planner.seed}"))
    name = label(base, f"k{k}", variant, "eqtokens" if equal_tokens else "")
    model = planner.rft(base, selection, name, tuned if equal_tokens else None)
    budget = "tokens" if equal_tokens else "epochs"
    world_name = "canonical" if canonical else "default"
    return model, rft_record(base, k, dedup, [base], selection, budget, planner.epochs, world_name)


# The interface of a family ----------------------------------------------------------------------


class Result(Protocol):
    """A family's analysis; `to_json()` is its part of analysis.json."""

    @property
    def tested(self) -> bool: ...
    def to_json(self) -> Json: ...

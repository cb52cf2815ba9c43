"""The experiment families of a scaling study, one module each (rftlab.experiments.base: the interface).

`FAMILIES` registers them in study-file order (the order they plan and state their findings); `SECTION`
orders analysis.json and the report. Adding a family: its module and a line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rftlab.experiments import analysis, budget, data, forecast, gain, k, pretraining, union, validation, verifier
from rftlab.experiments.analysis import Context, Model
from rftlab.experiments.base import Config, Json, Planner, Result, StudyError, known_keys, mapping
from rftlab.experiments.display import Block


class Family(Protocol):
    """An experiment family: a module with these members."""

    NAME: str
    KEYS: frozenset[str] | None
    """The keys of its study-file section; None: analysis only (no section, no cells)."""
    SECTION: int
    """Its place in analysis.json and the report (its section number there)."""

    def parse(self, value: Any, config: Config) -> Any:
        """The checked section (JSON-ready: results.json's `experiments`)."""
        ...

    def requests(self, spec: Any, planner: Planner) -> None:
        """Asks for the samples it needs (every family asks before any plans: a model is sampled once)."""
        ...

    def plan(self, spec: Any, planner: Planner) -> None:
        """Its cells for the planner's seed, each evaluated model stamped with its role."""
        ...

    def analyse(self, models: list[Model], context: Context) -> Result: ...

    def findings(self, result: Any, results: dict[str, Any]) -> list[Json]:
        """Its findings of the paper, with verdicts and sentences (`results`: every family's result)."""
        ...

    def blocks(self, result: Any, figures: dict[str, bytes]) -> list[Block]: ...

    def figure(self, plt: Any, result: Any) -> Any:
        """Its matplotlib figure (drawn only when tested)."""
        ...


FAMILIES: dict[str, Family] = {"pretraining": pretraining, "data": data, "k": k, "union": union, "gain": gain,
                               "validation": validation, "forecast": forecast, "budget": budget,
                               "verifier": verifier}  # fmt: skip
PLANNED = tuple(name for name, family in FAMILIES.items() if family.KEYS is not None)
"""The families a study file names (the others analyse their runs)."""


def by_section() -> list[Family]:
    return sorted(FAMILIES.values(), key=lambda family: family.SECTION)


def parse_experiments(value: Any, config: Config) -> dict[str, Any]:
    """The study file's `experiments`, each family's section checked."""
    where = f"{config.source}: experiments"
    sections = mapping(value, where)
    known_keys(sections, set(PLANNED), where)
    parsed = {name: FAMILIES[name].parse(sections[name], config) for name in PLANNED if name in sections}
    if not parsed:
        raise StudyError(f"{where}: name at least one of {', '.join(PLANNED)}")
    return parsed


def plan_experiments(planner: Planner) -> None:
    """Every family's cells for the planner's seed: first the samples all of them need, then the cells."""
    sections = planner.config.experiments
    for phase in ("requests", "plan"):
        for name, family in FAMILIES.items():
            if name in sections:
                getattr(family, phase)(sections[name], planner)


@dataclass
class Analysis:
    json: Json
    """analysis.json."""
    results: dict[str, Result]
    """Each family's result."""


def analyse(results: Json) -> Analysis:
    """A study's numbers: every model's accuracy with its interval, each family's result, the findings."""
    models = analysis.models_of(results.get("runs") or [])
    context = analysis.Context.of(results, models)
    outcome = {name: family.analyse(models, context) for name, family in FAMILIES.items()}
    study = {key: results.get(key) for key in ("name", "config_file", "data", "seeds", "cells")}
    settings = {"resamples": analysis.RESAMPLES, "level": analysis.LEVEL, "seed": analysis.SEED,
                "linear_r2": analysis.LINEAR_R2, "predictor_margin": analysis.PREDICTOR_MARGIN}  # fmt: skip
    document: Json = {
        "format": analysis.FORMAT,
        "study": study | {"bases": list(context.bases.values())},
        "settings": settings,
        "runs": [model.row() for model in models],
        **{family.NAME: outcome[family.NAME].to_json() for family in by_section()},
        "findings": [item for name, family in FAMILIES.items() for item in family.findings(outcome[name], outcome)],
    }
    return Analysis(document, outcome)


def analyse_study(results: Json) -> Json:
    """analysis.json of a study's results (format rftlab.study-results/1)."""
    return analyse(results).json

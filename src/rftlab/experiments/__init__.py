"""The experiment families of a scaling study, one module each (rftlab.experiments.base: the interface).

`FAMILIES` registers them in study-file order (the order they plan and state their findings); `SECTION`
orders analysis.json and the report. Adding a family: its module and a line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rftlab.experiments import analysis, data, gain, k, pretraining, union
from rftlab.experiments.base import Config, Family, Json, Planner, Result, StudyError, known_keys, mapping

FAMILIES: dict[str, Family] = {"pretraining": pretraining, "data": data, "k": k, "union": union, "gain": gain}
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

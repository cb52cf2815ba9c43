"""The shared numbers of a study's analysis: models over seeds, their selection by role, intervals, fits, verdicts.

The runs of one configuration over several seeds are one model (their mean). Verdicts: an estimate with the
paper's expected sign is "supported" when its 95% intervals exclude 0, else "direction agrees but not
significant"; with the other sign (or 0) it is "contradicted" when they exclude 0, else "not supported".
Estimates are paired bootstrap differences (same problems and seeds), or fit slopes, whose intervals are the
bootstrap one (test problems and seeds) and the t one (scatter about the line): each that exists must exclude
0. A fit needs 3 points (2 give the numbers and "too few points"); a supported fit the paper calls
(log-)linear with R² < `LINEAR_R2` is "partly supported". Several bases or k values: all "supported" →
supported, all in the expected direction → the weakest of their verdicts, all against → "contradicted" if one
is significant else "not supported", else "mixed". Each family's module documents its own rules.

Runs carry their roles (results.json `roles`); runs of older results without them get roles from their
fields: the families that used them, and what they are (`infer_roles`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from rftlab.experiments.base import Json, Role
from rftlab.scaling import bootstrap_ci, bootstrap_contrast, bootstrap_difference, bootstrap_fit, linear_fit

FORMAT = "rftlab.study-analysis/1"
RESAMPLES, LEVEL, SEED = 2000, 0.95, 0
LINEAR_R2 = 0.8
"""A fit that should be (log-)linear needs at least this R² to support the finding fully."""
PREDICTOR_MARGIN = 0.1
"""|r| by which loss must beat log10(parameters) to count as the better predictor of accuracy."""
DEFAULT_UNION = "union"
"""The name of a union that has none (and of the one union of results without run `union` fields)."""

SUPPORTED, PARTLY, AGREES = "supported", "partly supported", "direction agrees but not significant"
NOT_SUPPORTED, CONTRADICTED, MIXED = "not supported", "contradicted", "mixed"
TOO_FEW, NOT_TESTED = "too few points", "not tested in this study"


# Models -----------------------------------------------------------------------------------------


@dataclass
class Model:
    """One configuration's runs (one per seed): mean accuracy and per-seed 0/1 scores on the test problems."""

    name: str
    fields: Json
    """The run's configuration as the runs table shows it (`run_fields`)."""
    roles: tuple[Role, ...]
    families: frozenset[str]
    runs: list[Json]
    correct: dict[int, np.ndarray] | None
    accuracy: float
    ci: list[float] | None

    @property
    def k(self) -> int | None:
        return self.roles[0].k

    @property
    def fraction(self) -> float:
        return self.roles[0].fraction

    @property
    def epochs(self) -> float | None:
        return self.roles[0].epochs

    def role(self, family: str) -> Role | None:
        return next((role for role in self.roles if role.family == family), None)

    def mean(self, key: str, *, rft_data: bool = False) -> float | None:
        """Mean of a run field (or an `rft_data` field) over the seeds; None where a run lacks it."""
        values = [(run.get("rft_data") or {}).get(key) if rft_data else run.get(key) for run in self.runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    def point(self) -> Json:
        return {"run": self.name, "accuracy": self.accuracy, "ci": self.ci, "seeds": len(self.runs)}

    def row(self) -> Json:
        """The model's row of analysis.json `runs`."""
        return {
            "name": self.name,
            **self.fields,
            "seeds": [run.get("seed", 0) for run in self.runs],
            "examples": self.mean("examples"),
            "tokens": self.mean("tokens"),
            "distinct_per_problem": self.mean("distinct_per_problem", rft_data=True),
            "maj1@1": self.accuracy,
            "ci": self.ci,
        }


def union_name(run: Json, sources: list[str]) -> str | None:
    """The union a run trained on: its `union` field, else (older results) "union" when it pools several bases."""
    if "union" in run:
        return run["union"]
    return DEFAULT_UNION if len(sources) > 1 else None


def run_fields(run: Json) -> Json:
    sources = sorted(run.get("sources") or [])
    return {
        "stage": run["stage"],
        "base": run["base"],
        "world": run.get("world") or "default",
        "fraction": float(run.get("fraction") or 1.0),
        "epochs": run.get("epochs"),
        "budget": run.get("budget") or "epochs",
        "k": run.get("k"),
        "dedup": run.get("dedup"),
        "sources": sources,
        "union": union_name(run, sources),
    }


_RFT_VARIANTS = {
    ("default", True, "epochs"): "rft",
    ("default", False, "epochs"): "no dedup",
    ("canonical", True, "epochs"): "canonical",
    ("default", True, "tokens"): "equal tokens",
}


def _variant(fields: Json) -> str | None:
    """What a run of older results is (base.VARIANTS), from its fields; None: none of them."""
    if fields["stage"] == "sft":
        return {"default": "sft", "canonical": "canonical sft"}.get(fields["world"])
    setting = (fields["world"], fields["dedup"], fields["budget"])
    if fields["union"] is not None:
        return "union" if setting == ("default", True, "epochs") else None
    return _RFT_VARIANTS.get(setting) if fields["sources"] == [fields["base"]] else None


def infer_roles(run: Json) -> tuple[Role, ...]:
    """The roles of a run of older results: what it is, for each family that used it."""
    fields = run_fields(run)
    variant = _variant(fields)
    if variant is None:
        return ()
    return tuple(
        Role(family, fields["base"], variant, fields["k"], fields["fraction"], fields["epochs"], None, fields["union"])
        for family in run.get("families") or [""]
    )


def roles_of(run: Json) -> tuple[Role, ...]:
    if "roles" in run:
        return tuple(Role(**role) for role in run["roles"])
    return infer_roles(run)


def _name(run: Json) -> str:
    name = run["name"]
    for separator in ("-", "/"):
        name = name.removesuffix(f"{separator}s{run.get('seed', 0)}")
    return name


def models_of(runs: list[Json]) -> list[Model]:
    """The runs grouped by name (without the seed) and roles, seeds merged, in order of first appearance."""
    grouped: dict[tuple[str, tuple[Role, ...]], list[Json]] = {}
    for run in runs:
        grouped.setdefault((_name(run), roles_of(run)), []).append(run)
    return [_model(name, roles, members) for (name, roles), members in grouped.items()]


def _model(name: str, roles: tuple[Role, ...], runs: list[Json]) -> Model:
    runs = sorted(runs, key=lambda run: run.get("seed", 0))
    vectors = [run.get("correct") for run in runs]
    correct = None
    if all(vectors) and len({len(v) for v in vectors}) == 1:
        correct = {run.get("seed", 0): np.asarray(v, dtype=float) for run, v in zip(runs, vectors, strict=True)}
    if correct is None:
        accuracy, ci = float(np.mean([run["maj1@1"] for run in runs])), None
    else:
        accuracy, low, high = bootstrap_ci(np.stack(list(correct.values())), resamples=RESAMPLES, seed=SEED)
        ci = [low, high]
    families = frozenset(family for run in runs for family in run.get("families", []))
    return Model(name, run_fields(runs[0]), roles, families, runs, correct, accuracy, ci)


def find(
    models: list[Model],
    family: str | None,
    base: str,
    variant: str,
    *,
    k: int | None = None,
    union: str | None = None,
    full: bool = False,
) -> list[Model]:
    """Models in a role (Role.fits); those `family` planned in it when there are any."""
    found = [m for m in models if any(role.fits(base, variant, k, union, full) for role in m.roles)]
    own = [m for m in found if any(r.family == family and r.fits(base, variant, k, union, full) for r in m.roles)]
    return own or found


def sft(models: list[Model], family: str | None, base: str, variant: str = "sft") -> Model | None:
    """The SFT model of a base on all the data (the reference of RFT and of the pre-training family)."""
    found = find(models, family, base, variant, full=True)
    return found[0] if found else None


def own_rft(
    models: list[Model], family: str | None, base: str, variant: str = "rft", k: int | None = None
) -> list[Model]:
    """RFT models of a base on its own SFT model's samples, by k (default: de-duplicated, default world, epochs)."""
    return sorted(find(models, family, base, variant, k=k), key=lambda m: m.k or 0)


def family_bases(spec: Json, models: list[Model], family: str, key: str = "bases") -> list[str]:
    """The bases a family's section names, else those of the runs it planned."""
    if spec.get(key):
        return list(spec[key])
    return list(dict.fromkeys(role.base for m in models for role in m.roles if role.family == family))


@dataclass
class Context:
    """What every family's analysis may read besides the models: the study's sections and bases."""

    experiments: Json
    bases: dict[str, Json]
    base_names: list[str] = field(default_factory=list)
    """The results' bases, then any other base of a run."""

    @classmethod
    def of(cls, results: Json, models: Iterable[Model]) -> Context:
        bases = {base["name"]: base for base in results.get("bases") or []}
        names = list(dict.fromkeys([*bases, *(m.fields["base"] for m in models)]))
        return cls(results.get("experiments") or {}, bases, names)


@dataclass(frozen=True)
class Untested:
    """A family without evaluated runs (or absent from the study)."""

    reason: str
    tested = False

    def to_json(self) -> Json:
        return {"tested": False, "reason": self.reason}


def absent(name: str, spec: Any) -> Untested:
    if spec is None:
        return Untested(f"the study has no {name} experiment")
    return Untested(f"the {name} experiment has no evaluated runs")


# Statistics -------------------------------------------------------------------------------------


def score_stack(models: list[Model]) -> np.ndarray | None:
    """(models, seeds, problems) scores on the seeds all models share (else their seed means); None when a
    model has no per-problem scores or the models were tested on different numbers of problems."""
    if any(m.correct is None for m in models):
        return None
    matrices = [m.correct for m in models if m.correct is not None]
    if len({len(next(iter(c.values()))) for c in matrices}) != 1:
        return None
    common = sorted(set.intersection(*(set(c) for c in matrices)))
    if common:
        return np.stack([[c[seed] for seed in common] for c in matrices])
    return np.stack([[np.mean(list(c.values()), axis=0)] for c in matrices])


def difference(a: Model, b: Model) -> Json:
    """Accuracy of a minus b in points, with a paired bootstrap interval."""
    scores = score_stack([a, b])
    if scores is None:
        return {"value": a.accuracy - b.accuracy, "ci": None}
    value, low, high = bootstrap_difference(scores[0], scores[1], resamples=RESAMPLES, seed=SEED)
    return {"value": value, "ci": [low, high]}


def contrast(models: list[Model], weights: list[float]) -> Json:
    scores = score_stack(models)
    if scores is None:
        return {"value": float(np.dot(weights, [m.accuracy for m in models])), "ci": None}
    value, low, high = bootstrap_contrast(scores, weights, resamples=RESAMPLES, seed=SEED)
    return {"value": value, "ci": [low, high]}


def fit(x: list[float], models: list[Model]) -> Json | None:
    """Accuracy against x: OLS numbers with the bootstrap and t intervals of the slope (3+ points), or
    the line through 2 points; None with fewer than 2 distinct x."""
    if len(x) < 2 or min(x) == max(x):
        return None
    y = [m.accuracy for m in models]
    if len(x) == 2:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return {"n": 2, "slope": slope, "intercept": y[0] - slope * x[0], "r": None, "r2": None, "p_value": None,
                "slope_ci": None, "slope_ci_t": None}  # fmt: skip
    line = linear_fit(x, y, level=LEVEL)
    scores = score_stack(models)
    ci = None
    if scores is not None:
        boot = bootstrap_fit(x, scores, resamples=RESAMPLES, level=LEVEL, seed=SEED)
        ci = [boot.slope_low, boot.slope_high]
    return {"n": line.n, "slope": line.slope, "intercept": line.intercept, "r": line.r, "r2": line.r2,
            "p_value": line.p_value, "slope_ci": ci, "slope_ci_t": list(line.slope_ci)}  # fmt: skip


def reference(model: Model | None) -> Json | None:
    """An SFT model's point with its training examples and tokens."""
    if model is None:
        return None
    return {**model.point(), "examples": model.mean("examples"), "tokens": model.mean("tokens")}


def verdict(value: float, intervals: list[list[float] | None], sign: int) -> str:
    """The verdict on an estimate the paper expects to have `sign` (+1 or -1)."""
    side = (value > 0) - (value < 0)
    significant = bool(intervals) and all(ci is not None and min(side * ci[0], side * ci[1]) > 0 for ci in intervals)
    if side == sign:
        return SUPPORTED if significant else AGREES
    return CONTRADICTED if significant else NOT_SUPPORTED


def fit_verdict(line: Json, sign: int, *, linear: bool = False) -> str:
    if line["n"] < 3:
        return TOO_FEW
    result = verdict(line["slope"], [ci for ci in (line["slope_ci"], line["slope_ci_t"]) if ci], sign)
    return PARTLY if linear and result == SUPPORTED and line["r2"] < LINEAR_R2 else result


def combined(verdicts: list[str]) -> str:
    """One verdict from the verdicts of several bases (or k values)."""
    tested = set(verdicts) - {TOO_FEW}
    if not verdicts:
        return NOT_TESTED
    if not tested:
        return TOO_FEW
    for result, allowed in (
        (SUPPORTED, {SUPPORTED}),
        (PARTLY, {SUPPORTED, PARTLY}),
        (AGREES, {SUPPORTED, PARTLY, AGREES}),
        (NOT_SUPPORTED, {NOT_SUPPORTED}),
    ):
        if tested <= allowed:
            return result
    return CONTRADICTED if tested <= {NOT_SUPPORTED, CONTRADICTED} else MIXED


# Sentences --------------------------------------------------------------------------------------


def ci_text(ci: list[float] | None, *, signed: bool = False, digits: int = 1) -> str:
    if ci is None:
        return "no interval"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{100 * LEVEL:g}% CI {ci[0]:{spec}} to {ci[1]:{spec}}"


def diff_text(value: Json) -> str:
    return f"{value['value']:+.1f} points ({ci_text(value['ci'], signed=True)})"


def acc(point: Json) -> str:
    return f"{point['accuracy']:.1f}%"


def count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def fraction_text(share: float) -> str:
    return str(Fraction(share).limit_denominator(1000))


def fit_text(line: Json, y_name: str, per: str, digits: int = 1) -> str:
    """E.g. "SFT accuracy rises 6.0 points per doubling of examples (slope 95% CI 5.1 to 6.9 by bootstrap, ...)"."""
    slope = line["slope"]
    trend = "rises" if slope > 0 else "falls" if slope < 0 else "is flat:"
    text = f"{y_name} {trend} {abs(slope):.{digits}f} points per {per}"
    if line["n"] == 2:
        return f"{text} between 2 points (no fit from 2 points)"
    intervals = [
        f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f} by {method}"
        for ci, method in ((line["slope_ci"], "bootstrap"), (line["slope_ci_t"], "t"))
        if ci
    ]
    return (
        f"{text} (slope {100 * LEVEL:g}% CI {', '.join(intervals)}; R² = {line['r2']:.2f}, r = {line['r']:+.2f}, "
        f"n = {line['n']})"
    )


def finding(number: int | str, claim: str, result: str, sentences: list[str]) -> Json:
    """A finding of the paper (its number), or of a question after it ("beyond")."""
    return {"finding": number, "claim": claim, "verdict": result, "sentences": sentences}


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def untested(number: int | str, claim: str, reason: str) -> Json:
    return finding(number, claim, NOT_TESTED, [sentence(reason)])


def linearity(result: str, line: Json) -> list[str]:
    if result != PARTLY:
        return []
    return [f"R² = {line['r2']:.2f} is below {LINEAR_R2:.2f}: the relation is monotone but not close to linear."]

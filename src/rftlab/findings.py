"""The numbers of a scaling study: fits, intervals, comparisons and verdicts on the paper's findings.

`analyse_study` reads a study's results (format `rftlab.study-results/1`) and returns JSON-ready numbers:
every model's accuracy with a bootstrap interval over seeds and test problems, the fits and paired
differences of each experiment family, and a verdict per finding of the paper [P §1, §3] with sentences
built from those numbers. The runs of one configuration over several seeds are one model (their mean).

Verdicts. An estimate with the paper's expected sign is "supported" when its 95% intervals exclude 0, else
"direction agrees but not significant"; with the other sign (or 0) it is "contradicted" when they exclude 0,
else "not supported". Estimates are paired bootstrap differences (same problems and seeds), or fit slopes,
whose intervals are the bootstrap one (test problems and seeds) and the t one (scatter about the line): each
that exists must exclude 0. A fit needs 3 points (2 give the numbers and "too few points"); a supported fit
the paper calls (log-)linear with R² < `LINEAR_R2` is "partly supported". The data fit takes the better epoch
rule per fraction (the paper's); with both rules, each rule's own fit (equal epochs, equal tokens; the full
data in both) is reported beside it. Loss beats size when its |r| is larger by `PREDICTOR_MARGIN` (a smaller
margin: "direction agrees ..."; accuracy not falling with loss: "not supported"). The data benefit shrinks
when the slope of the base best at full data is below the weakest's (significant when their slope intervals
do not overlap). Several bases or k values: all "supported" → supported, all in the expected direction → the
weakest of their verdicts, all against → "contradicted" if one is significant else "not supported", else
"mixed".

Unions. A study may pool several sets of models (the paper's U13B and U33B); every union's targets count
towards the union finding, and where two unions share a target the larger one (more sources, then larger k)
is compared with the smaller one. Results without run `union` fields hold one union, named "union", whose
runs are those pooling several bases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations
from typing import Any

import numpy as np

from rftlab.scaling import (
    bootstrap_ci,
    bootstrap_contrast,
    bootstrap_difference,
    bootstrap_fit,
    gain_fit,
    linear_fit,
    predictor_comparison,
)

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

Json = dict[str, Any]


@dataclass
class Model:
    """One configuration's runs (one per seed): mean accuracy and per-seed 0/1 scores on the test problems."""

    name: str
    config: Json
    families: frozenset[str]
    runs: list[Json]
    correct: dict[int, np.ndarray] | None
    accuracy: float
    ci: list[float] | None

    def mean(self, key: str, *, rft_data: bool = False) -> float | None:
        """Mean of a run field (or an `rft_data` field) over the seeds; None where a run lacks it."""
        values = [(run.get("rft_data") or {}).get(key) if rft_data else run.get(key) for run in self.runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    def point(self) -> Json:
        return {"run": self.name, "accuracy": self.accuracy, "ci": self.ci, "seeds": len(self.runs)}


# Models and selection ---------------------------------------------------------------------------


def _union_name(run: Json, sources: list[str]) -> str | None:
    """The union a run trained on: its `union` field, else (older results) "union" when it pools several bases."""
    if "union" in run:
        return run["union"]
    return DEFAULT_UNION if len(sources) > 1 else None


def _config(run: Json) -> Json:
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
        "union": _union_name(run, sources),
    }


def _models(runs: list[Json]) -> list[Model]:
    """The runs grouped by configuration (seeds merged), in order of first appearance."""
    grouped: dict[str, list[Json]] = {}
    for run in runs:
        grouped.setdefault(repr(sorted(_config(run).items())), []).append(run)
    return [_model(members) for members in grouped.values()]


def _model(runs: list[Json]) -> Model:
    runs = sorted(runs, key=lambda run: run.get("seed", 0))
    first = runs[0]
    name = first["name"]
    for separator in ("-", "/"):
        name = name.removesuffix(f"{separator}s{first.get('seed', 0)}")
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
    return Model(name, _config(first), families, runs, correct, accuracy, ci)


def _matches(config: Json, criteria: Json) -> bool:
    return all(
        math.isclose(config[key], wanted)
        if key == "fraction"
        else config[key] == (sorted(wanted) if key == "sources" else wanted)
        for key, wanted in criteria.items()
    )


def _select(models: list[Model], family: str | None, **criteria: Any) -> list[Model]:
    """Models whose configuration matches; those used by `family` when there are any."""
    matches = [m for m in models if _matches(m.config, criteria)]
    return [m for m in matches if family in m.families] or matches


def _sft(models: list[Model], family: str | None, base: str, world: str = "default") -> Model | None:
    """The SFT model of a base on all the data (the reference of RFT and of the pre-training family)."""
    found = _select(models, family, stage="sft", base=base, world=world, fraction=1.0)
    return found[0] if found else None


def _own_rft(models: list[Model], family: str | None, base: str, **criteria: Any) -> list[Model]:
    """RFT models of a base on its own SFT model's samples (default: dedup, default world, epoch budget)."""
    wanted = {"world": "default", "dedup": True, "budget": "epochs", **criteria}
    found = _select(models, family, stage="rft", base=base, sources=[base], union=None, **wanted)
    return sorted(found, key=lambda m: m.config["k"] or 0)


def _family_bases(spec: Json, models: list[Model], family: str, key: str = "bases") -> list[str]:
    if spec.get(key):
        return list(spec[key])
    return list(dict.fromkeys(m.config["base"] for m in models if family in m.families))


# Statistics -------------------------------------------------------------------------------------


def _scores(models: list[Model]) -> np.ndarray | None:
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


def _difference(a: Model, b: Model) -> Json:
    """Accuracy of a minus b in points, with a paired bootstrap interval."""
    scores = _scores([a, b])
    if scores is None:
        return {"value": a.accuracy - b.accuracy, "ci": None}
    value, low, high = bootstrap_difference(scores[0], scores[1], resamples=RESAMPLES, seed=SEED)
    return {"value": value, "ci": [low, high]}


def _contrast(models: list[Model], weights: list[float]) -> Json:
    scores = _scores(models)
    if scores is None:
        return {"value": float(np.dot(weights, [m.accuracy for m in models])), "ci": None}
    value, low, high = bootstrap_contrast(scores, weights, resamples=RESAMPLES, seed=SEED)
    return {"value": value, "ci": [low, high]}


def _fit(x: list[float], models: list[Model]) -> Json | None:
    """Accuracy against x: OLS numbers with the bootstrap and t intervals of the slope (3+ points), or
    the line through 2 points; None with fewer than 2 distinct x."""
    if len(x) < 2 or min(x) == max(x):
        return None
    y = [m.accuracy for m in models]
    if len(x) == 2:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return {
            "n": 2,
            "slope": slope,
            "intercept": y[0] - slope * x[0],
            "r": None,
            "r2": None,
            "p_value": None,
            "slope_ci": None,
            "slope_ci_t": None,
        }
    fit = linear_fit(x, y, level=LEVEL)
    scores = _scores(models)
    ci = None
    if scores is not None:
        boot = bootstrap_fit(x, scores, resamples=RESAMPLES, level=LEVEL, seed=SEED)
        ci = [boot.slope_low, boot.slope_high]
    return {
        "n": fit.n,
        "slope": fit.slope,
        "intercept": fit.intercept,
        "r": fit.r,
        "r2": fit.r2,
        "p_value": fit.p_value,
        "slope_ci": ci,
        "slope_ci_t": list(fit.slope_ci),
    }


def _verdict(value: float, intervals: list[list[float] | None], sign: int) -> str:
    """The verdict on an estimate the paper expects to have `sign` (+1 or -1)."""
    side = (value > 0) - (value < 0)
    significant = bool(intervals) and all(ci is not None and min(side * ci[0], side * ci[1]) > 0 for ci in intervals)
    if side == sign:
        return SUPPORTED if significant else AGREES
    return CONTRADICTED if significant else NOT_SUPPORTED


def _fit_verdict(fit: Json, sign: int, *, linear: bool = False) -> str:
    if fit["n"] < 3:
        return TOO_FEW
    verdict = _verdict(fit["slope"], [ci for ci in (fit["slope_ci"], fit["slope_ci_t"]) if ci], sign)
    return PARTLY if linear and verdict == SUPPORTED and fit["r2"] < LINEAR_R2 else verdict


def _combined(verdicts: list[str]) -> str:
    """One verdict from the verdicts of several bases (or k values)."""
    tested = set(verdicts) - {TOO_FEW}
    if not verdicts:
        return NOT_TESTED
    if not tested:
        return TOO_FEW
    for verdict, allowed in (
        (SUPPORTED, {SUPPORTED}),
        (PARTLY, {SUPPORTED, PARTLY}),
        (AGREES, {SUPPORTED, PARTLY, AGREES}),
        (NOT_SUPPORTED, {NOT_SUPPORTED}),
    ):
        if tested <= allowed:
            return verdict
    return CONTRADICTED if tested <= {NOT_SUPPORTED, CONTRADICTED} else MIXED


# Experiment families ----------------------------------------------------------------------------


def _absent(name: str, spec: Json | list[Json] | None) -> Json:
    reason = f"the study has no {name} experiment" if spec is None else f"the {name} experiment has no evaluated runs"
    return {"tested": False, "reason": reason}


def _epoch_rule(rule: str | None, epochs: float | None, fixed: float | None, fraction: float) -> str:
    if epochs is None:
        return "token budget"
    if rule in ("fixed", "scaled"):
        return rule
    if math.isclose(fraction, 1.0):
        return "fixed = scaled"
    return "fixed" if fixed is not None and math.isclose(epochs, fixed) else "scaled"


_RULES = ("fixed", "scaled")  # E epochs at every fraction (equal epochs), E/fraction epochs (equal tokens)
_SHARED = "fixed = scaled"  # the full data, where both rules train E epochs


def _rule_fits(series: dict[str, list[tuple[float, Model]]]) -> Json | None:
    """Accuracy against log2(examples) per epoch rule; None unless the runs contain both rules below the full data."""
    if not all(any(m.config["fraction"] < 1 for _, m in series[rule]) for rule in _RULES):
        return None
    return {rule: _fit([x for x, _ in series[rule]], [m for _, m in series[rule]]) for rule in _RULES}


def _data_base(models: list[Model], base: str, rule: str | None) -> Json | None:
    found = [m for m in _select(models, "data", stage="sft", base=base, world="default") if m.mean("examples")]
    if not found:
        return None
    epochs = [m.config["epochs"] for m in found if m.config["epochs"] is not None]
    fixed = min(epochs) if epochs else None
    points, best = [], []
    series: dict[str, list[tuple[float, Model]]] = {name: [] for name in _RULES}
    for fraction in sorted({m.config["fraction"] for m in found}):
        members = sorted((m for m in found if m.config["fraction"] == fraction), key=lambda m: m.config["epochs"] or 0)
        winner = max(members, key=lambda m: m.accuracy)
        rules = [
            {
                "rule": _epoch_rule(rule, m.config["epochs"], fixed, fraction),
                "epochs": m.config["epochs"],
                "examples": m.mean("examples"),
                **m.point(),
            }
            for m in members
        ]
        for member, item in zip(members, rules, strict=True):
            for name in _RULES:
                if item["rule"] in (name, _SHARED):  # the full data belongs to both series
                    series[name].append((math.log2(item["examples"]), member))
        points.append(
            {
                "fraction": fraction,
                "examples": winner.mean("examples"),
                "rules": rules,
                "best_rule": rules[members.index(winner)]["rule"],
                **winner.point(),
            }
        )
        best.append(winner)
    fit = _fit([math.log2(p["examples"]) for p in points], best)
    return {"base": base, "epochs": fixed, "points": points, "fit": fit, "fits_by_rule": _rule_fits(series)}


def _data_family(models: list[Model], spec: Json | None) -> Json:
    if spec is None:
        return _absent("data", spec)
    bases = [b for base in _family_bases(spec, models, "data") if (b := _data_base(models, base, spec.get("epochs")))]
    if not bases:
        return _absent("data", spec)
    fitted = [b for b in bases if b["fit"] is not None]
    shrink = None
    if len(fitted) >= 2:
        ranked = sorted(fitted, key=lambda b: b["points"][-1]["accuracy"])
        weakest, best = ranked[0], ranked[-1]
        shrink = {
            "weakest": weakest["base"],
            "best": best["base"],
            "difference": weakest["fit"]["slope"] - best["fit"]["slope"],
        }
    return {"tested": True, "epochs": spec.get("epochs"), "bases": bases, "shrink": shrink}


def _pretraining_family(models: list[Model], spec: Json | None, bases: dict[str, Json]) -> Json:
    if spec is None:
        return _absent("pretraining", spec)
    points, found = [], []
    for base in _family_bases(spec, models, "pretraining"):
        model = _sft(models, "pretraining", base)
        if model is not None:
            info = bases.get(base, {})
            points.append(
                {
                    "base": base,
                    "loss": info.get("loss"),
                    "parameters": info.get("parameters"),
                    "pretrain_tokens": info.get("pretrain_tokens"),
                    **model.point(),
                }
            )
            found.append(model)
    if not points:
        return _absent("pretraining", spec)
    with_loss = [i for i, p in enumerate(points) if p["loss"] is not None]
    with_size = [i for i, p in enumerate(points) if p["parameters"]]
    both = [i for i in with_loss if i in with_size]
    loss_fit = _fit([points[i]["loss"] for i in with_loss], [found[i] for i in with_loss])
    size_fit = _fit([math.log10(points[i]["parameters"]) for i in with_size], [found[i] for i in with_size])
    comparison = None
    losses, sizes = [points[i]["loss"] for i in both], [points[i]["parameters"] for i in both]
    if len(both) >= 3 and min(losses) < max(losses) and min(sizes) < max(sizes):
        result = predictor_comparison([points[i]["accuracy"] for i in both], losses, sizes)
        comparison = {
            "better": result.better,
            "margin": result.margin,
            "loss_r": result.loss_fit.r,
            "size_r": result.size_fit.r,
            "n": len(both),
        }
    pairs = []
    for i, j in combinations(both, 2):
        a, b = points[i], points[j]
        if (a["loss"] - b["loss"]) * (a["parameters"] - b["parameters"]) > 0:  # the lower loss, the fewer parameters
            low, high = (i, j) if a["loss"] < b["loss"] else (j, i)
            difference = _difference(found[low], found[high])
            pairs.append(
                {
                    "lower_loss": points[low]["base"],
                    "larger": points[high]["base"],
                    "difference": difference,
                    "follows": "loss" if difference["value"] > 0 else "size",
                }
            )
    return {
        "tested": True,
        "points": points,
        "loss_fit": loss_fit,
        "size_fit": size_fit,
        "comparison": comparison,
        "disagreements": pairs,
    }


_K_VARIANTS = (
    ("dedup", {}),
    ("no dedup", {"dedup": False}),
    ("canonical", {"world": "canonical"}),
    ("equal tokens", {"budget": "tokens"}),
)


def _k_row(variant: str, model: Model) -> Json:
    paths = {key: model.mean(key, rft_data=True) for key in ("distinct_per_problem", "correct_per_problem", "selected")}
    return {
        "variant": variant,
        "k": model.config["k"],
        **paths,
        "examples": model.mean("examples"),
        "tokens": model.mean("tokens"),
        **model.point(),
    }


def _reference(model: Model | None) -> Json | None:
    """An SFT model's point with its training examples and tokens."""
    if model is None:
        return None
    return {**model.point(), "examples": model.mean("examples"), "tokens": model.mean("tokens")}


def _k_base(models: list[Model], base: str) -> Json | None:
    variants = {name: _own_rft(models, "k", base, **criteria) for name, criteria in _K_VARIANTS}
    if not any(variants.values()):
        return None
    sft, canonical_sft = _sft(models, "k", base), _sft(models, "k", base, "canonical")
    dedup = {m.config["k"]: m for m in variants["dedup"]}
    with_paths = [m for m in variants["dedup"] if m.mean("distinct_per_problem", rft_data=True) is not None]
    entry: Json = {
        "base": base,
        "sft": _reference(sft),
        "canonical_sft": _reference(canonical_sft),
        "rows": [_k_row(name, m) for name, _ in _K_VARIANTS for m in variants[name]],
        "paths_fit": _fit([m.mean("distinct_per_problem", rft_data=True) or 0.0 for m in with_paths], with_paths),
        "vs_sft": [{"k": k, "difference": _difference(m, sft)} for k, m in dedup.items()] if sft else [],
        "dedup": [
            {"k": m.config["k"], "difference": _difference(dedup[m.config["k"]], m)}
            for m in variants["no dedup"]
            if m.config["k"] in dedup
        ],
        "canonical": [],
        "equal_tokens": [],
    }
    for m in variants["canonical"]:
        k = m.config["k"]
        if sft and canonical_sft and k in dedup:
            gains = {"gain_default": _difference(dedup[k], sft), "gain_canonical": _difference(m, canonical_sft)}
            difference = _contrast([dedup[k], sft, m, canonical_sft], [1, -1, -1, 1])
            entry["canonical"].append({"k": k, **gains, "difference": difference})
    for m in variants["equal tokens"]:
        k = m.config["k"]
        if sft:
            extra = _difference(dedup[k], m) if k in dedup else None
            entry["equal_tokens"].append({"k": k, "vs_sft": _difference(m, sft), "epochs_minus_tokens": extra})
    return entry


def _k_family(models: list[Model], spec: Json | None) -> Json:
    if spec is None:
        return _absent("k", spec)
    bases = [entry for base in _family_bases(spec, models, "k") if (entry := _k_base(models, base))]
    return {"tested": True, "bases": bases} if bases else _absent("k", spec)


def _union_specs(spec: Json | list[Json] | None) -> list[Json]:
    """The study's unions as a list, each with a name (an older single mapping is one union named "union")."""
    if spec is None:
        return []
    return [
        {**union, "name": union.get("name") or DEFAULT_UNION} for union in ([spec] if isinstance(spec, dict) else spec)
    ]


def _pooled(models: list[Model], target: str, union: Json) -> Model | None:
    """The RFT model of a target trained on a union's pooled samples."""
    found = _select(
        models,
        "union",
        stage="rft",
        base=target,
        union=union["name"],
        sources=union["sources"],
        k=union["k"],
        world="default",
        dedup=True,
        budget="epochs",
    )
    return found[0] if found else None


def _union_target(models: list[Model], target: str, union: Json) -> Json | None:
    union_model = _pooled(models, target, union)
    if union_model is None:
        return None
    sft = _sft(models, "union", target)
    own = _own_rft(models, "union", target, k=union["k"])
    own_model = own[0] if own else None
    every_own = _own_rft(models, None, target)
    best_own = max(every_own, key=lambda m: m.accuracy) if every_own else None

    def paths(model: Model | None) -> Json | None:
        if model is None:
            return None
        return {
            **model.point(),
            "k": model.config["k"],
            "distinct_per_problem": model.mean("distinct_per_problem", rft_data=True),
        }

    def difference(a: Model | None, b: Model | None) -> Json | None:
        return _difference(a, b) if a and b else None

    return {
        "target": target,
        "sft": _reference(sft),
        "own": paths(own_model),
        "union": paths(union_model),
        "best_own": paths(best_own),
        "union_minus_own": difference(union_model, own_model),
        "own_minus_sft": difference(own_model, sft),
        "union_minus_sft": difference(union_model, sft),
        "union_minus_best_own": difference(union_model, best_own),
    }


def _union_entry(models: list[Model], spec: Json) -> Json | None:
    """One union's sources, k and targets; None without k or without an evaluated target."""
    if spec.get("k") is None:
        return None
    union = {"name": spec["name"], "sources": sorted(spec.get("sources") or []), "k": spec["k"]}
    targets = [
        entry
        for target in _family_bases(spec, models, "union", "targets")
        if (entry := _union_target(models, target, union))
    ]
    return {**union, "targets": targets} if targets else None


def _union_size(union: Json) -> tuple[int, int]:
    return len(union["sources"]), union["k"]


def _union_comparisons(models: list[Model], unions: list[Json]) -> list[Json]:
    """The larger union (more sources, then larger k; on a tie the later one) minus the smaller on each shared
    target, with the verdict on "the larger union is better"."""
    comparisons = []
    for pair in combinations(unions, 2):
        smaller, larger = sorted(pair, key=_union_size)
        shared = [t["target"] for t in smaller["targets"] if t["target"] in {u["target"] for u in larger["targets"]}]
        for target in shared:
            big, small = _pooled(models, target, larger), _pooled(models, target, smaller)
            if big and small:
                difference = _difference(big, small)
                comparisons.append(
                    {
                        "target": target,
                        "larger": larger["name"],
                        "smaller": smaller["name"],
                        "difference": difference,
                        "verdict": _verdict(difference["value"], [difference["ci"]], +1),
                    }
                )
    return comparisons


def _union_family(models: list[Model], spec: Json | list[Json] | None) -> Json:
    specs = _union_specs(spec)
    if not specs:
        return _absent("union", None)
    unions = [entry for union in specs if (entry := _union_entry(models, union))]
    if not unions:
        return _absent("union", spec)
    tested = {union["name"] for union in unions}
    return {
        "tested": True,
        "unions": unions,
        "comparisons": _union_comparisons(models, unions),
        "without_runs": [union["name"] for union in specs if union["name"] not in tested],
    }


def _gain_k(experiments: Json) -> int | None:
    """The k at which RFT gains are compared: the first union's, else the k family's largest de-duplicated k."""
    unions = _union_specs(experiments.get("union"))
    if unions and unions[0].get("k"):
        return int(unions[0]["k"])
    ks = experiments.get("k", {}).get("k") or []
    return int(max(ks)) if ks else None


def _gain(models: list[Model], experiments: Json, bases: list[str]) -> Json:
    k = _gain_k(experiments)
    if k is None:
        return {"tested": False, "reason": "the study has neither a union nor a k experiment with de-duplicated RFT"}
    points = []
    for base in bases:
        sft, rft = _sft(models, None, base), _own_rft(models, None, base, k=k)
        if sft and rft:
            points.append({"base": base, "sft": sft.accuracy, "rft": rft[0].accuracy, "gain": _difference(rft[0], sft)})
    if not points:
        return {"tested": False, "reason": f"no base has both SFT and own-samples RFT at k={k}"}
    sft_accuracy, rft_accuracy = [p["sft"] for p in points], [p["rft"] for p in points]
    fit = None
    if len(points) >= 3 and min(sft_accuracy) < max(sft_accuracy):
        result = gain_fit(sft_accuracy, rft_accuracy)
        fit = {
            "n": result.n,
            "slope": result.slope,
            "intercept": result.intercept,
            "r": result.r,
            "r2": result.r2,
            "p_value": result.p_value,
            "slope_ci": None,
            "slope_ci_t": list(result.slope_ci),
        }
    return {"tested": True, "k": k, "points": points, "fit": fit}


# Findings ---------------------------------------------------------------------------------------


def _ci_text(ci: list[float] | None, *, signed: bool = False, digits: int = 1) -> str:
    if ci is None:
        return "no interval"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{100 * LEVEL:g}% CI {ci[0]:{spec}} to {ci[1]:{spec}}"


def _diff_text(difference: Json) -> str:
    return f"{difference['value']:+.1f} points ({_ci_text(difference['ci'], signed=True)})"


def _acc(point: Json) -> str:
    return f"{point['accuracy']:.1f}%"


def _count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _fraction_text(fraction: float) -> str:
    return str(Fraction(fraction).limit_denominator(1000))


def _fit_text(fit: Json, y_name: str, per: str, digits: int = 1) -> str:
    """E.g. "SFT accuracy rises 6.0 points per doubling of examples (slope 95% CI 5.1 to 6.9 by bootstrap, ...)"."""
    slope = fit["slope"]
    trend = "rises" if slope > 0 else "falls" if slope < 0 else "is flat:"
    text = f"{y_name} {trend} {abs(slope):.{digits}f} points per {per}"
    if fit["n"] == 2:
        return f"{text} between 2 points (no fit from 2 points)"
    intervals = [
        f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f} by {method}"
        for ci, method in ((fit["slope_ci"], "bootstrap"), (fit["slope_ci_t"], "t"))
        if ci
    ]
    return (
        f"{text} (slope {100 * LEVEL:g}% CI {', '.join(intervals)}; R² = {fit['r2']:.2f}, r = {fit['r']:+.2f}, "
        f"n = {fit['n']})"
    )


def _finding(number: int, claim: str, verdict: str, sentences: list[str]) -> Json:
    return {"finding": number, "claim": claim, "verdict": verdict, "sentences": sentences}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _untested(number: int, claim: str, reason: str) -> Json:
    return _finding(number, claim, NOT_TESTED, [_sentence(reason)])


def _linearity(verdict: str, fit: Json) -> list[str]:
    if verdict != PARTLY:
        return []
    return [f"R² = {fit['r2']:.2f} is below {LINEAR_R2:.2f}: the relation is monotone but not close to linear."]


def _loss_finding(pre: Json) -> Json:
    claim = "Lower pre-training loss gives higher SFT accuracy, roughly linearly"
    if not pre["tested"]:
        return _untested(1, claim, pre["reason"])
    fit, with_loss = pre["loss_fit"], [p for p in pre["points"] if p["loss"] is not None]
    if fit is None:
        return _untested(1, claim, f"{len(with_loss)} base(s) with a pre-training loss; a fit needs 2 different losses")
    verdict = _fit_verdict(fit, -1, linear=True)
    points = ", ".join(f"{p['base']} loss {p['loss']:.3f}: {_acc(p)}" for p in with_loss)
    sentences = [_sentence(_fit_text(fit, "SFT accuracy", "unit of pre-training loss")), f"Bases: {points}."]
    return _finding(1, claim, verdict, sentences + _linearity(verdict, fit))


def _pair_text(pre: Json, pair: Json) -> str:
    points = {p["base"]: p for p in pre["points"]}
    low, high = points[pair["lower_loss"]], points[pair["larger"]]
    return (
        f"{low['base']} (loss {low['loss']:.3f}, {_count(low['parameters'])} parameters) {_acc(low)} vs "
        f"{high['base']} (loss {high['loss']:.3f}, {_count(high['parameters'])}) {_acc(high)}: "
        f"{_diff_text(pair['difference'])}"
    )


def _predictor_finding(pre: Json) -> Json:
    claim = "Pre-training loss predicts SFT accuracy better than parameter count"
    if not pre["tested"]:
        return _untested(1, claim, pre["reason"])
    comparison = pre["comparison"]
    if comparison is None:
        n = sum(p["loss"] is not None and bool(p["parameters"]) for p in pre["points"])
        reason = f"{n} base(s) have both a loss and a parameter count; the comparison needs 3 with different values"
        return _finding(1, claim, TOO_FEW if n == 2 else NOT_TESTED, [_sentence(reason)])
    better, margin = comparison["better"], comparison["margin"]
    size_backwards = comparison["size_r"] < 0  # larger models score lower: size is no predictor in the paper's sense
    if margin == 0 or comparison["loss_r"] >= 0:
        verdict = NOT_SUPPORTED
    elif size_backwards:  # then loss is the only predictor: as strong as its own fit
        verdict = _fit_verdict(pre["loss_fit"], -1)
    elif better == "loss":
        verdict = SUPPORTED if margin >= PREDICTOR_MARGIN else AGREES
    else:
        verdict = CONTRADICTED if margin >= PREDICTOR_MARGIN else NOT_SUPPORTED
    text = (
        f"Over {comparison['n']} bases accuracy correlates with loss at r = {comparison['loss_r']:+.2f} and with "
        f"log10(parameters) at r = {comparison['size_r']:+.2f}: {better} is the stronger predictor by "
        f"{margin:.2f} in |r|"
    )
    if margin < PREDICTOR_MARGIN:
        text += f", less than the {PREDICTOR_MARGIN:.2f} margin that separates them"
    sentences = [text + "."]
    if size_backwards:
        sentences.append(
            f"Larger models score lower here (r = {comparison['size_r']:+.2f} against log10(parameters)), the "
            "opposite of the paper's size ordering, so parameter count does not predict accuracy in its sense."
        )
    if comparison["loss_r"] >= 0:
        sentences.append(f"Accuracy does not fall as loss falls (r = {comparison['loss_r']:+.2f}), against the paper.")
    pairs = pre["disagreements"]
    if pairs:
        follows = sum(pair["follows"] == "loss" for pair in pairs)
        sentences.append(
            f"Loss and size order {len(pairs)} pair(s) of bases differently; accuracy follows loss in "
            f"{follows}: " + "; ".join(_pair_text(pre, pair) for pair in pairs) + "."
        )
    else:
        sentences.append("No two bases are ordered differently by loss and by parameter count.")
    return _finding(1, claim, verdict, sentences)


def _data_finding(data: Json) -> Json:
    claim = "SFT accuracy rises log-linearly with the amount of supervised data"
    if not data["tested"]:
        return _untested(2, claim, data["reason"])
    verdicts, sentences = [], []
    for entry in data["bases"]:
        fit, points = entry["fit"], entry["points"]
        if fit is None:
            sentences.append(f"{entry['base']}: one data amount only, {_acc(points[0])}.")
            continue
        verdict = _fit_verdict(fit, +1, linear=True)
        verdicts.append(verdict)
        first, last = points[0], points[-1]
        span = (
            f"{_acc(first)} at {first['examples']:,.0f} examples, {_acc(last)} at {last['examples']:,.0f}; "
            "better epoch rule by fraction: "
            + ", ".join(f"{_fraction_text(p['fraction'])} {p['best_rule']}" for p in points)
        )
        text = _fit_text(fit, "SFT accuracy", "doubling of examples")
        sentences += [f"{entry['base']}: {text}; {span}.", *_linearity(verdict, fit), *_rules_sentence(entry)]
    return _finding(2, claim, _combined(verdicts) if verdicts else TOO_FEW, sentences)


def _rules_sentence(entry: Json) -> list[str]:
    """E.g. "b3 by epoch rule: at equal epochs (3) accuracy rises 10.0 points per doubling (...); at equal
    tokens (3/fraction epochs) accuracy rises 1.0 points per doubling (...)."; none without both rules."""
    fits = entry["fits_by_rule"]
    if not fits:
        return []
    epochs = f"{entry['epochs']:g}"
    clauses = [
        f"{label} " + ("one data amount only" if fit is None else _fit_text(fit, "accuracy", "doubling"))
        for label, fit in (
            (f"at equal epochs ({epochs})", fits["fixed"]),
            (f"at equal tokens ({epochs}/fraction epochs)", fits["scaled"]),
        )
    ]
    return [f"{entry['base']} by epoch rule: {'; '.join(clauses)}."]


def _slope_interval(fit: Json) -> list[float] | None:
    return fit["slope_ci"] or fit["slope_ci_t"]


def _shrink_finding(data: Json) -> Json:
    claim = "The benefit of more data shrinks as the base model gets better"
    if not data["tested"]:
        return _untested(2, claim, data["reason"])
    shrink = data["shrink"]
    if shrink is None:
        return _untested(2, claim, f"{len(data['bases'])} base(s) with 2 or more data amounts; the comparison needs 2")
    entries = {entry["base"]: entry for entry in data["bases"]}
    weakest, best = entries[shrink["weakest"]], entries[shrink["best"]]
    slopes = "; ".join(
        f"{e['base']} {e['fit']['slope']:.1f} ({_ci_text(_slope_interval(e['fit']))}) with "
        f"{_acc(e['points'][-1])} at its largest data amount"
        for e in sorted(entries.values(), key=lambda e: e["points"][-1]["accuracy"])
        if e["fit"]
    )
    sentences = [f"Slopes in points per doubling: {slopes}."]
    if weakest["fit"]["n"] < 3 or best["fit"]["n"] < 3:
        return _finding(2, claim, TOO_FEW, sentences)
    weak_ci, best_ci = _slope_interval(weakest["fit"]), _slope_interval(best["fit"])
    separated = weak_ci is not None and best_ci is not None and (weak_ci[0] > best_ci[1] or best_ci[0] > weak_ci[1])
    difference = shrink["difference"]
    verdict = _verdict(difference, [[difference, difference] if separated else None], +1)
    relation = "below" if difference > 0 else "above" if difference < 0 else "equal to"
    sentences.append(
        f"The slope of the best base ({best['base']}) is {abs(difference):.1f} points per doubling {relation} that "
        f"of the weakest ({weakest['base']}); their slope intervals {'do not overlap' if separated else 'overlap'}."
    )
    return _finding(2, claim, verdict, sentences)


def _rows(entry: Json, variant: str) -> dict[int, Json]:
    return {row["k"]: row for row in entry["rows"] if row["variant"] == variant}


def _paths_finding(k_family: Json) -> Json:
    claim = "RFT accuracy rises with the number of distinct reasoning paths"
    if not k_family["tested"]:
        return _untested(3, claim, k_family["reason"])
    verdicts, sentences = [], []
    for entry in k_family["bases"]:
        fit = entry["paths_fit"]
        rows = [row for row in _rows(entry, "dedup").values() if row["distinct_per_problem"] is not None]
        if fit is None:
            continue
        verdicts.append(_fit_verdict(fit, +1))
        text = _fit_text(fit, "RFT accuracy", "distinct path per question")
        sentences.append(
            f"{entry['base']}: {text}; distinct paths per question go from "
            f"{rows[0]['distinct_per_problem']:.2f} at k={rows[0]['k']} to "
            f"{rows[-1]['distinct_per_problem']:.2f} at k={rows[-1]['k']}."
        )
    if not verdicts:
        return _untested(3, claim, "no base has de-duplicated RFT at 2 or more k values with path counts")
    return _finding(3, claim, _combined(verdicts), sentences)


def _rft_sft_finding(k_family: Json, union: Json) -> Json:
    claim = "RFT beats SFT"
    verdicts, sentences = [], []
    if k_family["tested"]:
        for entry in k_family["bases"]:
            if not entry["vs_sft"]:
                continue
            last, rows = entry["vs_sft"][-1], _rows(entry, "dedup")
            verdicts.append(_verdict(last["difference"]["value"], [last["difference"]["ci"]], +1))
            others = ", ".join(f"k={item['k']} {item['difference']['value']:+.1f}" for item in entry["vs_sft"])
            sentences.append(
                f"{entry['base']}: RFT at k={last['k']} scores {_acc(rows[last['k']])} against SFT "
                f"{_acc(entry['sft'])}: {_diff_text(last['difference'])}; by k: {others}."
            )
    if not verdicts and union["tested"]:
        seen = set()  # unions at the same k share a target's own-samples RFT
        for entry in union["unions"]:
            for target in entry["targets"]:
                difference, key = target["own_minus_sft"], (target["target"], entry["k"])
                if difference is None or key in seen:
                    continue
                seen.add(key)
                verdicts.append(_verdict(difference["value"], [difference["ci"]], +1))
                sentences.append(
                    f"{target['target']}: RFT at k={entry['k']} scores {_acc(target['own'])} against SFT "
                    f"{_acc(target['sft'])}: {_diff_text(difference)}."
                )
    if not verdicts:
        return _untested(3, claim, "no base has both SFT and own-samples RFT")
    return _finding(3, claim, _combined(verdicts), sentences)


def _per_k_finding(
    k_family: Json, claim: str, key: str, missing: str, describe: Callable[[Json, Json], tuple[Json, str]]
) -> Json:
    """A finding over the k family's `key` comparisons: `describe(entry, item)` gives the estimate and sentence."""
    if not k_family["tested"]:
        return _untested(3, claim, k_family["reason"])
    verdicts, sentences = [], []
    for entry in k_family["bases"]:
        for item in entry[key]:
            estimate, sentence = describe(entry, item)
            verdicts.append(_verdict(estimate["value"], [estimate["ci"]], +1))
            sentences.append(f"{entry['base']}, k={item['k']}: {sentence}.")
    if not verdicts:
        return _untested(3, claim, missing)
    return _finding(3, claim, _combined(verdicts), sentences)


def _dedup_text(entry: Json, item: Json) -> tuple[Json, str]:
    kept, every = _rows(entry, "dedup")[item["k"]], _rows(entry, "no dedup")[item["k"]]
    return item["difference"], (
        f"de-duplicated RFT scores {_acc(kept)} on {kept['examples']:,.0f} examples, RFT on every correct path "
        f"{_acc(every)} on {every['examples']:,.0f}: {_diff_text(item['difference'])}"
    )


def _canonical_text(entry: Json, item: Json) -> tuple[Json, str]:
    default, canonical = _rows(entry, "dedup")[item["k"]], _rows(entry, "canonical")[item["k"]]

    def paths(row: Json) -> str:
        value = row["distinct_per_problem"]
        return "paths per question unknown" if value is None else f"{value:.2f} distinct paths per question"

    return item["difference"], (
        f"RFT gains {_diff_text(item['gain_default'])} over SFT in the default world ({paths(default)}) and "
        f"{_diff_text(item['gain_canonical'])} in the canonical world ({paths(canonical)}); default minus canonical "
        f"gain {_diff_text(item['difference'])}"
    )


def _equal_tokens_text(entry: Json, item: Json) -> tuple[Json, str]:
    control = _rows(entry, "equal tokens")[item["k"]]
    text = (
        f"RFT trained on {control['tokens']:,.0f} tokens (SFT's budget) scores {_acc(control)}, "
        f"{_diff_text(item['vs_sft'])} over SFT"
    )
    if item["epochs_minus_tokens"] is not None:
        full = _rows(entry, "dedup")[item["k"]]
        text += (
            f"; RFT trained for the same epochs as SFT ({full['tokens']:,.0f} tokens) scores "
            f"{_diff_text(item['epochs_minus_tokens'])} more than this control"
        )
    return item["vs_sft"], text


def _union_label(union: Json) -> str:
    """E.g. "the union U13B"; "the union" for a union named "union" (the default)."""
    return "the union" if union["name"] == DEFAULT_UNION else f"the union {union['name']}"


def _union_target_text(union: Json, target: Json) -> str:
    difference, own, pooled, best = (
        target["union_minus_best_own"],
        target["own"],
        target["union"],
        target["best_own"],
    )
    text = (
        f"{target['target']}: RFT on {_union_label(union)} of {len(union['sources'])} models' samples at "
        f"k={union['k']} scores {_acc(pooled)} against the best own-samples RFT {_acc(best)} (k={best['k']}): "
        f"{_diff_text(difference)}"
    )
    if own and own["distinct_per_problem"] is not None and pooled["distinct_per_problem"] is not None:
        text += (
            f"; distinct paths per question {pooled['distinct_per_problem']:.2f} pooled vs "
            f"{own['distinct_per_problem']:.2f} own at k={union['k']}"
        )
    if target["union_minus_sft"]:
        text += f"; {union['name']} minus SFT {_diff_text(target['union_minus_sft'])}"
    return text + "."


_LARGER_UNION = {
    SUPPORTED: "the larger union is better",
    AGREES: "the larger union is ahead, but not significantly",
    NOT_SUPPORTED: "the larger union is not better",
    CONTRADICTED: "the larger union is worse",
}


def _union_pair_text(family: Json, item: Json) -> str:
    """E.g. "b3: U33B (5 models, k=4) 71.0% against U13B (4 models, k=4) 72.0%: -1.0 points (...); the larger
    union is worse." """
    unions = {union["name"]: union for union in family["unions"]}

    def side(name: str) -> str:
        union = unions[name]
        (target,) = [t for t in union["targets"] if t["target"] == item["target"]]
        return f"{name} ({len(union['sources'])} models, k={union['k']}) {_acc(target['union'])}"

    return (
        f"{item['target']}: {side(item['larger'])} against {side(item['smaller'])}: "
        f"{_diff_text(item['difference'])}; {_LARGER_UNION[item['verdict']]}."
    )


def _union_finding(family: Json) -> Json:
    claim = "RFT on the pooled samples of several models (union) beats the best single-model RFT"
    if not family["tested"]:
        return _untested(4, claim, family["reason"])
    verdicts, sentences = [], []
    for union in family["unions"]:
        for target in union["targets"]:
            difference = target["union_minus_best_own"]
            if difference is not None:
                verdicts.append(_verdict(difference["value"], [difference["ci"]], +1))
                sentences.append(_union_target_text(union, target))
    pairs = [_union_pair_text(family, item) for item in family["comparisons"]]
    if not verdicts:
        reason = _sentence("no union target has an own-samples RFT to compare with")
        return _finding(4, claim, NOT_TESTED, [reason, *pairs])
    return _finding(4, claim, _combined(verdicts), sentences + pairs)


def _gain_finding(gain: Json) -> Json:
    claim = "Weaker models gain more from RFT"
    if not gain["tested"]:
        return _untested(4, claim, gain["reason"])
    points = ", ".join(f"{p['base']} {p['gain']['value']:+.1f} from SFT {p['sft']:.1f}%" for p in gain["points"])
    sentences = [f"RFT gains at k={gain['k']}: {points}."]
    fit = gain["fit"]
    if fit is None:
        sentences.append(f"{len(gain['points'])} base(s): a fit needs 3 with different SFT accuracies.")
        return _finding(4, claim, TOO_FEW, sentences)
    trend = "falls" if fit["slope"] < 0 else "rises" if fit["slope"] > 0 else "is flat:"
    sentences.append(
        f"The gain {trend} {abs(fit['slope']):.2f} points per point of SFT accuracy (slope "
        f"{_ci_text(fit['slope_ci_t'], digits=2)} by t; r = {fit['r']:+.2f}, n = {fit['n']})."
    )
    return _finding(4, claim, _verdict(fit["slope"], [fit["slope_ci_t"]], -1), sentences)


def _findings(analysis: Json) -> list[Json]:
    pre, data, k_family = analysis["pretraining"], analysis["data"], analysis["k"]
    return [
        _loss_finding(pre),
        _predictor_finding(pre),
        _data_finding(data),
        _shrink_finding(data),
        _paths_finding(k_family),
        _rft_sft_finding(k_family, analysis["union"]),
        _per_k_finding(
            k_family,
            "De-duplicated RFT is at least as accurate as RFT on every correct path",
            "dedup",
            "the k experiment has no runs without de-duplication",
            _dedup_text,
        ),
        _per_k_finding(
            k_family,
            "Without path diversity (canonical world) RFT gains less",
            "canonical",
            "the k experiment has no canonical-world runs",
            _canonical_text,
        ),
        _per_k_finding(
            k_family,
            "RFT's gain is more than its extra training compute (equal-token control)",
            "equal_tokens",
            "the k experiment has no equal-token runs",
            _equal_tokens_text,
        ),
        _union_finding(analysis["union"]),
        _gain_finding(analysis["gain"]),
    ]


def _run_row(model: Model) -> Json:
    return {
        "name": model.name,
        **model.config,
        "seeds": [run.get("seed", 0) for run in model.runs],
        "examples": model.mean("examples"),
        "tokens": model.mean("tokens"),
        "distinct_per_problem": model.mean("distinct_per_problem", rft_data=True),
        "maj1@1": model.accuracy,
        "ci": model.ci,
    }


def _base_names(results: Json, models: Iterable[Model]) -> list[str]:
    named = [base["name"] for base in results.get("bases") or []]
    return list(dict.fromkeys([*named, *(m.config["base"] for m in models)]))


def analyse_study(results: Json) -> Json:
    """A study's numbers (JSON-ready): every model's accuracy with its interval, each family's fits and
    comparisons, and the paper's findings with verdicts and sentences (module docstring: the rules)."""
    models = _models(results.get("runs") or [])
    experiments = results.get("experiments") or {}
    bases = {base["name"]: base for base in results.get("bases") or []}
    analysis: Json = {
        "format": FORMAT,
        "study": {key: results.get(key) for key in ("name", "config_file", "data", "seeds", "cells")}
        | {"bases": list(bases.values())},
        "settings": {
            "resamples": RESAMPLES,
            "level": LEVEL,
            "seed": SEED,
            "linear_r2": LINEAR_R2,
            "predictor_margin": PREDICTOR_MARGIN,
        },
        "runs": [_run_row(model) for model in models],
        "data": _data_family(models, experiments.get("data")),
        "pretraining": _pretraining_family(models, experiments.get("pretraining"), bases),
        "k": _k_family(models, experiments.get("k")),
        "union": _union_family(models, experiments.get("union")),
        "gain": _gain(models, experiments, _base_names(results, models)),
    }
    analysis["findings"] = _findings(analysis)
    return analysis

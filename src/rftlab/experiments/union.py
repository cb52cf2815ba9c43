"""The union family: RFT on the pooled paths of several models (the paper's U13B and U33B).

Finding 4: RFT on a union beats the best single-model RFT. A study may pool several sets of models; every
union's targets count towards the finding, and where two unions share a target the larger one (more sources,
then larger k) is compared with the smaller one. Results without run `union` fields hold one union, named
"union", whose runs are those pooling several bases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
from rftlab.experiments.base import (
    Config,
    Json,
    Planner,
    Role,
    StudyError,
    base_names,
    evaluate,
    integer,
    known_keys,
    label,
    mapping,
    own_rft,
    rft_record,
    sft_record,
)

NAME, SECTION = "union", 4
KEYS = frozenset({"name", "sources", "targets", "k"})


def parse(value: Any, config: Config) -> list[Json]:
    """One union (a mapping) or several (a list, e.g. U13B and U33B), each with a unique name."""
    where = f"{config.source}: experiments: {NAME}"
    specs = value if isinstance(value, list) else [value]
    unions = [_union(mapping(spec, f"{where}[{i}]"), config, f"{where}[{i}]") for i, spec in enumerate(specs)]
    names = [union["name"] for union in unions]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: several unions need distinct names")
    return unions


def _union(spec: Json, config: Config, where: str) -> Json:
    known_keys(spec, KEYS, where)
    k = integer(spec.get("k", 0), f"{where}: k")
    if k < 1:
        raise StudyError(f"{where}: k: give the paths sampled per question from each source (at least 1)")
    sources = base_names(spec.get("sources"), config, where)
    if len(sources) < 2:
        raise StudyError(f"{where}: sources: a union pools at least two models")
    name = str(spec.get("name", a.DEFAULT_UNION))
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise StudyError(f"{where}: name: letters, digits, '_' and '.' only")
    return {"name": name, "sources": sources, "targets": base_names(spec.get("targets"), config, where), "k": k}


def requests(spec: list[Json], planner: Planner) -> None:
    """Each source's and target's SFT model sampled at (at least) the union's k."""
    for union in spec:
        for base in dict.fromkeys([*union["sources"], *union["targets"]]):
            planner.request_samples(planner.sft(base), union["k"])


def plan(spec: list[Json], planner: Planner) -> None:
    for union in spec:
        k, world, name = union["k"], planner.world(), union["name"]
        pooled = [planner.samples(planner.sft(source), source, world) for source in union["sources"]]
        selection_label = label(name, *union["sources"], f"k{k}", f"s{planner.seed}")
        selection = planner.rejection(pooled, world, k, True, selection_label)
        for base in union["targets"]:
            role = Role(NAME, base, "sft", epochs=planner.epochs)
            evaluate(planner, planner.sft(base), role, sft_record(base, 1.0, planner.epochs))
            model, record = own_rft(planner, base, k)
            evaluate(planner, model, Role(NAME, base, "rft", k, epochs=planner.epochs), record)
            union_model = planner.rft(base, selection, label(base, name, f"k{k}"))
            record = rft_record(base, k, True, union["sources"], selection, "epochs", planner.epochs, union=name)
            evaluate(planner, union_model, Role(NAME, base, "union", k, epochs=planner.epochs, union=name), record)


@dataclass
class Result:
    unions: list[Json]
    """Per union with evaluated runs: its sources, k and per target SFT, own-samples and union RFT."""
    comparisons: list[Json]
    """The larger minus the smaller union on each target they share, with a verdict."""
    without_runs: list[str]
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "unions": self.unions, "comparisons": self.comparisons,
                "without_runs": self.without_runs}  # fmt: skip


def specs(spec: Json | list[Json] | None) -> list[Json]:
    """The study's unions as a list, each with a name (an older single mapping is one union named "union")."""
    if spec is None:
        return []
    unions = [spec] if isinstance(spec, dict) else spec
    return [{**union, "name": union.get("name") or a.DEFAULT_UNION} for union in unions]


def _pooled(models: list[a.Model], target: str, union: Json) -> a.Model | None:
    """The RFT model of a target trained on a union's pooled samples."""
    found = a.find(models, NAME, target, "union", k=union["k"], union=union["name"])
    return found[0] if found else None


def _target(models: list[a.Model], target: str, union: Json) -> Json | None:
    union_model = _pooled(models, target, union)
    if union_model is None:
        return None
    sft = a.sft(models, NAME, target)
    own = a.own_rft(models, NAME, target, k=union["k"])
    own_model = own[0] if own else None
    every_own = a.own_rft(models, None, target)
    best_own = max(every_own, key=lambda m: m.accuracy) if every_own else None

    def paths(model: a.Model | None) -> Json | None:
        if model is None:
            return None
        paths = model.mean("distinct_per_problem", rft_data=True)
        return {**model.point(), "k": model.k, "distinct_per_problem": paths}

    def difference(first: a.Model | None, second: a.Model | None) -> Json | None:
        return a.difference(first, second) if first and second else None

    return {
        "target": target,
        "sft": a.reference(sft),
        "own": paths(own_model),
        "union": paths(union_model),
        "best_own": paths(best_own),
        "union_minus_own": difference(union_model, own_model),
        "own_minus_sft": difference(own_model, sft),
        "union_minus_sft": difference(union_model, sft),
        "union_minus_best_own": difference(union_model, best_own),
    }


def _entry(models: list[a.Model], spec: Json) -> Json | None:
    """One union's sources, k and targets; None without k or without an evaluated target."""
    if spec.get("k") is None:
        return None
    union = {"name": spec["name"], "sources": sorted(spec.get("sources") or []), "k": spec["k"]}
    targets = [
        entry for target in a.family_bases(spec, models, NAME, "targets") if (entry := _target(models, target, union))
    ]
    return {**union, "targets": targets} if targets else None


def _size(union: Json) -> tuple[int, int]:
    return len(union["sources"]), union["k"]


def _comparisons(models: list[a.Model], unions: list[Json]) -> list[Json]:
    """The larger union (more sources, then larger k; on a tie the later one) minus the smaller on each shared
    target, with the verdict on "the larger union is better"."""
    comparisons = []
    for pair in combinations(unions, 2):
        smaller, larger = sorted(pair, key=_size)
        shared = [t["target"] for t in smaller["targets"] if t["target"] in {u["target"] for u in larger["targets"]}]
        for target in shared:
            big, small = _pooled(models, target, larger), _pooled(models, target, smaller)
            if big and small:
                difference = a.difference(big, small)
                comparisons.append({"target": target, "larger": larger["name"], "smaller": smaller["name"],
                                    "difference": difference,
                                    "verdict": a.verdict(difference["value"], [difference["ci"]], +1)})  # fmt: skip
    return comparisons


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    unions_specs = specs(spec)
    if not unions_specs:
        return a.absent(NAME, None)
    unions = [entry for union in unions_specs if (entry := _entry(models, union))]
    if not unions:
        return a.absent(NAME, spec)
    tested = {union["name"] for union in unions}
    without = [union["name"] for union in unions_specs if union["name"] not in tested]
    return Result(unions, _comparisons(models, unions), without)


# Findings


def _label(union: Json) -> str:
    """E.g. "the union U13B"; "the union" for a union named "union" (the default)."""
    return "the union" if union["name"] == a.DEFAULT_UNION else f"the union {union['name']}"


def _target_text(union: Json, target: Json) -> str:
    difference, own, pooled, best = target["union_minus_best_own"], target["own"], target["union"], target["best_own"]
    text = (
        f"{target['target']}: RFT on {_label(union)} of {len(union['sources'])} models' samples at "
        f"k={union['k']} scores {a.acc(pooled)} against the best own-samples RFT {a.acc(best)} (k={best['k']}): "
        f"{a.diff_text(difference)}"
    )
    if own and own["distinct_per_problem"] is not None and pooled["distinct_per_problem"] is not None:
        text += (
            f"; distinct paths per question {pooled['distinct_per_problem']:.2f} pooled vs "
            f"{own['distinct_per_problem']:.2f} own at k={union['k']}"
        )
    if target["union_minus_sft"]:
        text += f"; {union['name']} minus SFT {a.diff_text(target['union_minus_sft'])}"
    return text + "."


_LARGER = {
    a.SUPPORTED: "the larger union is better",
    a.AGREES: "the larger union is ahead, but not significantly",
    a.NOT_SUPPORTED: "the larger union is not better",
    a.CONTRADICTED: "the larger union is worse",
}


def _pair_text(family: Result, item: Json) -> str:
    """E.g. "b3: U33B (5 models, k=4) 71.0% against U13B (4 models, k=4) 72.0%: -1.0 points (...); the larger
    union is worse." """
    unions = {union["name"]: union for union in family.unions}

    def side(name: str) -> str:
        union = unions[name]
        (target,) = [t for t in union["targets"] if t["target"] == item["target"]]
        return f"{name} ({len(union['sources'])} models, k={union['k']}) {a.acc(target['union'])}"

    return (
        f"{item['target']}: {side(item['larger'])} against {side(item['smaller'])}: "
        f"{a.diff_text(item['difference'])}; {_LARGER[item['verdict']]}."
    )


def findings(family: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    claim = "RFT on the pooled samples of several models (union) beats the best single-model RFT"
    if not isinstance(family, Result):
        return [a.untested(4, claim, family.reason)]
    verdicts, sentences = [], []
    for union in family.unions:
        for target in union["targets"]:
            difference = target["union_minus_best_own"]
            if difference is not None:
                verdicts.append(a.verdict(difference["value"], [difference["ci"]], +1))
                sentences.append(_target_text(union, target))
    pairs = [_pair_text(family, item) for item in family.comparisons]
    if not verdicts:
        reason = a.sentence("no union target has an own-samples RFT to compare with")
        return [a.finding(4, claim, a.NOT_TESTED, [reason, *pairs])]
    return [a.finding(4, claim, a.combined(verdicts), sentences + pairs)]


# Report


def _table(union: Json) -> list[d.Block]:
    """One union's heading (name, sources, k) and its table of targets."""
    name, k = union["name"], union["k"]
    header = ["target", "SFT", f"RFT own k={k}", f"RFT {name}", "paths own", f"paths {name}", f"{name} − own",
              "own − SFT", f"{name} − SFT"]  # fmt: skip
    rows = [
        [t["target"], d.pct(t["sft"]), d.pct(t["own"]), d.pct(t["union"]),
         d.num((t["own"] or {}).get("distinct_per_problem"), ".2f"), d.num(t["union"]["distinct_per_problem"], ".2f"),
         d.diff(t["union_minus_own"]), d.diff(t["own_minus_sft"]), d.diff(t["union_minus_sft"])]
        for t in union["targets"]
    ]  # fmt: skip
    heading = f"{name}: {len(union['sources'])} models pooled ({', '.join(union['sources'])}), k={k} each"
    return [("h", 3, heading), ("table", header, rows)]


def _pairs(family: Result) -> list[d.Block]:
    """The larger minus the smaller union on each target they share."""
    if not family.comparisons:
        return []
    accuracy = {(u["name"], t["target"]): t["union"] for u in family.unions for t in u["targets"]}
    rows = [
        [c["target"], c["larger"], d.pct(accuracy[c["larger"], c["target"]]), c["smaller"],
         d.pct(accuracy[c["smaller"], c["target"]]), d.diff(c["difference"]), c["verdict"]]
        for c in family.comparisons
    ]  # fmt: skip
    header = ["target", "larger union", "maj1@1 (95% CI)", "smaller union", "maj1@1 (95% CI)",
              "larger − smaller (95% CI)", "larger is better: verdict"]  # fmt: skip
    return [
        ("h", 3, "Larger against smaller unions"),
        ("p", "Larger: more sources (then a larger k); on targets both unions trained."),
        ("table", header, rows),
    ]


def blocks(family: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("4. Unions: RFT on the pooled samples of several models", family)
    if not isinstance(family, Result):
        return blocks
    blocks.append(("p", "Paths: distinct paths per question; differences in points with paired 95% CIs."))
    for union in family.unions:
        blocks += _table(union)
    blocks += _pairs(family)
    if family.without_runs:
        blocks.append(("p", f"Without evaluated runs: {', '.join(family.without_runs)}."))
    names = ", ".join(union["name"] for union in family.unions)
    return blocks + d.figure(figures, NAME, f"SFT, RFT on own samples and RFT on each union ({names}), per target")


def _series(family: Result) -> dict[str, dict[str, Json]]:
    """The figure's bars, label → {target: point}: SFT, own-samples RFT at each union's k, each union."""
    series: dict[str, dict[str, Json]] = {"SFT": {}}
    for union in family.unions:
        for t in union["targets"]:
            if t["sft"]:
                series["SFT"].setdefault(t["target"], t["sft"])
            if t["own"]:
                series.setdefault(f"RFT own, k={union['k']}", {}).setdefault(t["target"], t["own"])
    for union in family.unions:
        series[f"RFT {union['name']}"] = {t["target"]: t["union"] for t in union["targets"]}
    return {name: points for name, points in series.items() if points}


def figure(plt: Any, family: Result) -> Any:
    targets = list(dict.fromkeys(t["target"] for union in family.unions for t in union["targets"]))
    series = _series(family)
    width = 0.8 / len(series)
    drawing, axis = plt.subplots(
        figsize=(max(5.0, (0.7 * len(series) + 0.2) * len(targets)) + 1.5, 4), layout="constrained"
    )
    for offset, (name, by_target) in enumerate(series.items()):
        shift = (offset - (len(series) - 1) / 2) * width
        positions = [targets.index(target) + shift for target in by_target]
        points = list(by_target.values())
        drawn = axis.bar(positions, [p["accuracy"] for p in points], width, yerr=d.errors(points), capsize=3,
                         label=name)  # fmt: skip
        axis.bar_label(drawn, fmt="%.1f", fontsize=7, label_type="center", rotation=90 if len(series) > 3 else 0)
    axis.set_xticks(range(len(targets)), targets)
    axis.set_ylabel("maj1@1 (%)")
    axis.set_title("RFT on pooled samples of several models")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return drawing

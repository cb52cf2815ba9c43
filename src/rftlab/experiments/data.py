"""The data family: SFT on seeded random fractions of the train set, under the paper's epoch rules.

Finding 2: SFT accuracy rises log-linearly with the amount of supervised data, and the benefit shrinks as the
base gets better. The data fit takes the better epoch rule per fraction (the paper's); with both rules, each
rule's own fit (equal epochs, equal tokens; the full data in both) is reported beside it. The data benefit
shrinks when the slope of the base best at full data is below the weakest's (significant when their slope
intervals do not overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
from rftlab.experiments.base import (
    Config,
    Json,
    Planner,
    Role,
    StudyError,
    as_list,
    base_names,
    evaluate,
    fraction,
    known_keys,
    mapping,
    sft_record,
)

NAME, SECTION = "data", 1
KEYS = frozenset({"bases", "fractions", "epochs"})
EPOCH_RULES = ("both", "fixed", "scaled")
RULES = ("fixed", "scaled")  # E epochs at every fraction (equal epochs), E/fraction epochs (equal tokens)
SHARED = "fixed = scaled"  # the full data, where both rules train E epochs


def parse(value: Any, config: Config) -> Json:
    where = f"{config.source}: experiments: {NAME}"
    spec = mapping(value, where)
    known_keys(spec, KEYS, where)
    fractions = sorted({fraction(f, where) for f in as_list(spec.get("fractions"), f"{where}: fractions")})
    rule = spec.get("epochs", "both")
    if rule not in EPOCH_RULES:
        raise StudyError(f"{where}: epochs must be one of {', '.join(EPOCH_RULES)}")
    if config.train.get("epochs") is None and rule != "fixed":
        raise StudyError(f"{where}: the epoch rule needs train: epochs")
    return {"bases": base_names(spec.get("bases"), config, where), "fractions": fractions, "epochs": rule}


def epoch_choices(epochs: float | None, share: float, rule: str) -> list[tuple[float | None, str]]:
    """The paper's epoch search for a data fraction: E epochs, E/fraction epochs, or both; with each its rule."""
    if epochs is None:
        return [(None, "token budget")]
    if share == 1:
        return [(epochs, rule if rule in RULES else SHARED)]
    scaled = round(epochs / share, 6)
    choices = {"fixed": [(epochs, "fixed")], "scaled": [(scaled, "scaled")]}
    return choices.get(rule) or [*choices["fixed"], *choices["scaled"]]


def requests(spec: Json, planner: Planner) -> None:
    """None: SFT models only."""


def plan(spec: Json, planner: Planner) -> None:
    for base in spec["bases"]:
        for share in spec["fractions"]:
            for epochs, rule in epoch_choices(planner.epochs, share, spec["epochs"]):
                role = Role(NAME, base, "sft", fraction=share, epochs=epochs, rule=rule)
                evaluate(planner, planner.sft(base, share, epochs), role, sft_record(base, share, epochs))


@dataclass
class Result:
    epochs: str | None
    """The section's epoch rule (both, fixed, scaled)."""
    bases: list[Json]
    """Per base: its points by fraction (each rule's run, the better one), the fit and the fits by rule."""
    shrink: Json | None
    """The weakest base's slope minus the best's (2+ bases with a fit)."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "epochs": self.epochs, "bases": self.bases, "shrink": self.shrink}


def _rule(role: Role | None, spec_rule: str | None, epochs: float | None, fixed: float | None, share: float) -> str:
    """The epoch rule of a run: its role's, else (older results) from its epochs."""
    if role is not None and role.rule is not None:
        return role.rule
    if epochs is None:
        return "token budget"
    if spec_rule in RULES:
        return spec_rule
    if math.isclose(share, 1.0):
        return SHARED
    return "fixed" if fixed is not None and math.isclose(epochs, fixed) else "scaled"


def _rule_fits(series: dict[str, list[tuple[float, a.Model]]]) -> Json | None:
    """Accuracy against log2(examples) per epoch rule; None unless the runs contain both rules below the full data."""
    if not all(any(m.fraction < 1 for _, m in series[rule]) for rule in RULES):
        return None
    return {rule: a.fit([x for x, _ in series[rule]], [m for _, m in series[rule]]) for rule in RULES}


def _base(models: list[a.Model], base: str, spec_rule: str | None) -> Json | None:
    found = [m for m in a.find(models, NAME, base, "sft") if m.mean("examples")]
    if not found:
        return None
    epochs = [m.epochs for m in found if m.epochs is not None]
    fixed = min(epochs) if epochs else None
    points, best = [], []
    series: dict[str, list[tuple[float, a.Model]]] = {name: [] for name in RULES}
    for share in sorted({m.fraction for m in found}):
        members = sorted((m for m in found if m.fraction == share), key=lambda m: m.epochs or 0)
        winner = max(members, key=lambda m: m.accuracy)
        rules = [
            {"rule": _rule(m.role(NAME), spec_rule, m.epochs, fixed, share), "epochs": m.epochs,
             "examples": m.mean("examples"), **m.point()}
            for m in members
        ]  # fmt: skip
        for member, item in zip(members, rules, strict=True):
            for name in RULES:
                if item["rule"] in (name, SHARED):  # the full data belongs to both series
                    series[name].append((math.log2(item["examples"]), member))
        points.append({"fraction": share, "examples": winner.mean("examples"), "rules": rules,
                       "best_rule": rules[members.index(winner)]["rule"], **winner.point()})  # fmt: skip
        best.append(winner)
    fit = a.fit([math.log2(p["examples"]) for p in points], best)
    return {"base": base, "epochs": fixed, "points": points, "fit": fit, "fits_by_rule": _rule_fits(series)}


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    if spec is None:
        return a.absent(NAME, spec)
    bases = [b for base in a.family_bases(spec, models, NAME) if (b := _base(models, base, spec.get("epochs")))]
    if not bases:
        return a.absent(NAME, spec)
    fitted = [b for b in bases if b["fit"] is not None]
    shrink = None
    if len(fitted) >= 2:
        ranked = sorted(fitted, key=lambda b: b["points"][-1]["accuracy"])
        weakest, best = ranked[0], ranked[-1]
        shrink = {"weakest": weakest["base"], "best": best["base"],
                  "difference": weakest["fit"]["slope"] - best["fit"]["slope"]}  # fmt: skip
    return Result(spec.get("epochs"), bases, shrink)


# Findings


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    return [_data_finding(result), _shrink_finding(result)]


def _data_finding(data: Result | a.Untested) -> Json:
    claim = "SFT accuracy rises log-linearly with the amount of supervised data"
    if not isinstance(data, Result):
        return a.untested(2, claim, data.reason)
    verdicts, sentences = [], []
    for entry in data.bases:
        fit, points = entry["fit"], entry["points"]
        if fit is None:
            sentences.append(f"{entry['base']}: one data amount only, {a.acc(points[0])}.")
            continue
        verdict = a.fit_verdict(fit, +1, linear=True)
        verdicts.append(verdict)
        first, last = points[0], points[-1]
        span = (
            f"{a.acc(first)} at {first['examples']:,.0f} examples, {a.acc(last)} at {last['examples']:,.0f}; "
            "better epoch rule by fraction: "
            + ", ".join(f"{a.fraction_text(p['fraction'])} {p['best_rule']}" for p in points)
        )
        text = a.fit_text(fit, "SFT accuracy", "doubling of examples")
        sentences += [f"{entry['base']}: {text}; {span}.", *a.linearity(verdict, fit), *_rules_sentence(entry)]
    return a.finding(2, claim, a.combined(verdicts) if verdicts else a.TOO_FEW, sentences)


def _rules_sentence(entry: Json) -> list[str]:
    """E.g. "b3 by epoch rule: at equal epochs (3) accuracy rises 10.0 points per doubling (...); at equal
    tokens (3/fraction epochs) accuracy rises 1.0 points per doubling (...)."; none without both rules."""
    fits = entry["fits_by_rule"]
    if not fits:
        return []
    epochs = f"{entry['epochs']:g}"
    clauses = [
        f"{label} " + ("one data amount only" if fit is None else a.fit_text(fit, "accuracy", "doubling"))
        for label, fit in (
            (f"at equal epochs ({epochs})", fits["fixed"]),
            (f"at equal tokens ({epochs}/fraction epochs)", fits["scaled"]),
        )
    ]
    return [f"{entry['base']} by epoch rule: {'; '.join(clauses)}."]


def _slope_interval(fit: Json) -> list[float] | None:
    return fit["slope_ci"] or fit["slope_ci_t"]


def _shrink_finding(data: Result | a.Untested) -> Json:
    claim = "The benefit of more data shrinks as the base model gets better"
    if not isinstance(data, Result):
        return a.untested(2, claim, data.reason)
    shrink = data.shrink
    if shrink is None:
        return a.untested(2, claim, f"{len(data.bases)} base(s) with 2 or more data amounts; the comparison needs 2")
    entries = {entry["base"]: entry for entry in data.bases}
    weakest, best = entries[shrink["weakest"]], entries[shrink["best"]]
    slopes = "; ".join(
        f"{e['base']} {e['fit']['slope']:.1f} ({a.ci_text(_slope_interval(e['fit']))}) with "
        f"{a.acc(e['points'][-1])} at its largest data amount"
        for e in sorted(entries.values(), key=lambda e: e["points"][-1]["accuracy"])
        if e["fit"]
    )
    sentences = [f"Slopes in points per doubling: {slopes}."]
    if weakest["fit"]["n"] < 3 or best["fit"]["n"] < 3:
        return a.finding(2, claim, a.TOO_FEW, sentences)
    weak_ci, best_ci = _slope_interval(weakest["fit"]), _slope_interval(best["fit"])
    separated = weak_ci is not None and best_ci is not None and (weak_ci[0] > best_ci[1] or best_ci[0] > weak_ci[1])
    difference = shrink["difference"]
    verdict = a.verdict(difference, [[difference, difference] if separated else None], +1)
    relation = "below" if difference > 0 else "above" if difference < 0 else "equal to"
    sentences.append(
        f"The slope of the best base ({best['base']}) is {abs(difference):.1f} points per doubling {relation} that "
        f"of the weakest ({weakest['base']}); their slope intervals {'do not overlap' if separated else 'overlap'}."
    )
    return a.finding(2, claim, verdict, sentences)


# Report


def blocks(data: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("1. Data amount (SFT on fractions of the train set)", data)
    if not isinstance(data, Result):
        return blocks
    for entry in data.bases:
        rows = [
            [d.fraction(point["fraction"]), d.num(point["examples"]), rule["rule"], d.num(rule["epochs"], "g"),
             d.pct(rule), "yes" if rule["rule"] == point["best_rule"] else ""]
            for point in entry["points"]
            for rule in point["rules"]
        ]  # fmt: skip
        blocks += [
            ("h", 3, entry["base"]),
            ("table", ["fraction", "examples", "epoch rule", "epochs", "maj1@1 (95% CI)", "better"], rows),
            ("p", d.fit_line("Accuracy against log2(examples), better rule", entry["fit"], "points per doubling")),
            *_rule_fit_blocks(entry),
        ]
    caption = "SFT accuracy against training examples (log2); filled, solid: the better epoch rule, dashed: its fit"
    if any(entry.get("fits_by_rule") for entry in data.bases):
        caption += (
            "; hollow circles, dotted fit: equal epochs (fixed); hollow squares, dash-dot fit: equal tokens (scaled)"
        )
    return blocks + d.figure(figures, NAME, caption)


def _rule_fit_blocks(entry: Json) -> list[d.Block]:
    """One fit line per epoch rule when the runs contain both (the full data in both series)."""
    fits = entry.get("fits_by_rule")
    if not fits:
        return []
    names = {
        "fixed": f"equal epochs (fixed rule, {entry['epochs']:g} epochs)",
        "scaled": f"equal tokens (scaled rule, {entry['epochs']:g}/fraction epochs)",
    }
    return [
        ("p", d.fit_line(f"Accuracy against log2(examples), {name}", fits[rule], "points per doubling"))
        for rule, name in names.items()
    ]


_RULE_STYLES = {"fixed": ("o", ":", "equal epochs"), "scaled": ("s", "-.", "equal tokens")}
"""Marker, fit line style and legend name of each epoch rule's own series in the data figure."""


def _rule_series(entry: Json, rule: str) -> list[tuple[float, float]]:
    """(examples, accuracy) of one epoch rule; the full data ("fixed = scaled") belongs to both rules."""
    return [(r["examples"], r["accuracy"]) for p in entry["points"] for r in p["rules"] if r["rule"] in (rule, SHARED)]


def _data_rules(axis: Any, entry: Json, color: str) -> list[str]:
    """Each epoch rule's points (hollow) and fit, or, without both rules, the other rule's points (x); returns
    their legend labels."""
    fits, points = entry.get("fits_by_rule"), entry["points"]
    if not fits:
        others = [(p["examples"], r["accuracy"]) for p in points for r in p["rules"] if r["rule"] != p["best_rule"]]
        if not others:
            return []
        label = f"{entry['base']}, other epoch rule"
        axis.scatter(*zip(*others, strict=True), marker="x", color=color, alpha=0.6, label=label)
        return [label]
    labels = []
    for rule, (marker, style, name) in _RULE_STYLES.items():
        xs, ys = zip(*_rule_series(entry, rule), strict=True)
        axis.plot(xs, ys, marker=marker, markersize=8, markerfacecolor="none", linestyle="none", color=color)
        d.fit_ends(axis, fits[rule], list(xs), math.log2, color, style)
        labels.append(f"{entry['base']}, {name} ({rule})")
        axis.plot([], [], marker=marker, markerfacecolor="none", linestyle=style, color=color, label=labels[-1])
    return labels


def figure(plt: Any, data: Result) -> Any:
    drawing, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    order = []  # legend labels grouped by base
    for entry in data.bases:
        points = entry["points"]
        xs = [p["examples"] for p in points]
        order.append(f"{entry['base']}, better epoch rule")
        drawn = axis.errorbar(
            xs, [p["accuracy"] for p in points], yerr=d.errors(points), marker="o", capsize=3, label=order[-1]
        )
        color = drawn.lines[0].get_color()
        d.fit_ends(axis, entry["fit"], xs, math.log2, color)
        order += _data_rules(axis, entry, color)
    d.log2_axis(axis, [p["examples"] for e in data.bases for p in e["points"]], "training examples")
    axis.set_ylabel("SFT maj1@1 (%)")
    axis.set_title("SFT accuracy against data amount, by epoch rule")
    handles = {label: handle for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    axis.legend([handles[label] for label in order], order, fontsize=8)
    return drawing

"""The budget family (beyond the paper; DART-Math): a difficulty-aware sampling budget against the paper's uniform k.

A budget draws k = `round` paths a round per question until the question has `until_correct` checked paths
(right answer, every annotation checking) or `max_k` paths in all (`rftlab sample --until-correct`); easy
questions stop early and the paths go to the hard ones. Each budget's paths are found in its SFT model's
uniform samples (`rftlab budget`: the same paths, no second sampling), rejected and trained on like RFT at a k.
It is compared with uniform RFT at the smallest k of `uniform` that draws at least as many paths per question
(so the uniform run never has less sampling compute): coverage (share of questions with a correct path),
distinct paths per question, and RFT accuracy (the verdict: the paired difference, expected positive).
"""

from __future__ import annotations

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
    base_names,
    evaluate,
    integer,
    k_list,
    known_keys,
    label,
    mapping,
    own_rft,
    rft_record,
    sft_record,
)

NAME, SECTION = "budget", 8
KEYS = frozenset({"bases", "round", "until_correct", "max_k", "uniform"})
DEFAULT_ROUND = 4
CLAIM = "A difficulty-aware sampling budget gives better RFT than a uniform k at no more sampling compute"


def parse(value: Any, config: Config) -> Json:
    where = f"{config.source}: experiments: {NAME}"
    spec = mapping(value, where)
    known_keys(spec, KEYS, where)
    round_k = integer(spec.get("round", DEFAULT_ROUND), f"{where}: round", least=1)
    if "max_k" not in spec:
        raise StudyError(f"{where}: max_k: give the most paths a question may draw")
    max_k = integer(spec["max_k"], f"{where}: max_k", least=1)
    if max_k < round_k:
        raise StudyError(f"{where}: max_k: {max_k} is below round {round_k} (the paths a question draws a round)")
    until = k_list(spec.get("until_correct"), f"{where}: until_correct")
    uniform = k_list(spec.get("uniform"), f"{where}: uniform")
    if not until:
        raise StudyError(f"{where}: until_correct: give at least one number of checked paths")
    if not uniform:
        raise StudyError(f"{where}: uniform: give at least one k to compare the budgets with")
    return {"bases": base_names(spec.get("bases"), config, where), "round": round_k, "until_correct": until,
            "max_k": max_k, "uniform": uniform}  # fmt: skip


def requests(spec: Json, planner: Planner) -> None:
    """Each base's SFT model sampled at the largest k a budget or a uniform run reads."""
    for base in spec["bases"]:
        planner.request_samples(planner.sft(base), max(spec["max_k"], *spec["uniform"]))


def plan(spec: Json, planner: Planner) -> None:
    for base in spec["bases"]:
        tuned, world = planner.sft(base), planner.world()
        evaluate(planner, tuned, Role(NAME, base, "sft", epochs=planner.epochs), sft_record(base, 1.0, planner.epochs))
        for k in spec["uniform"]:
            model, record = own_rft(planner, base, k)
            evaluate(planner, model, Role(NAME, base, "rft", k, epochs=planner.epochs), record)
        samples = planner.samples(tuned, base, world)
        for until in spec["until_correct"]:
            drawn = planner.budget(samples, world, spec["round"], until, spec["max_k"])
            name = label(base, f"until{until}", f"max{spec['max_k']}", f"round{spec['round']}")
            selection = planner.rejection([drawn], world, spec["max_k"], True, label(name, f"s{planner.seed}"))
            model = planner.rft(base, selection, name)
            record = rft_record(base, spec["max_k"], True, [base], selection, "epochs", planner.epochs)
            role = Role(NAME, base, "budget", spec["max_k"], epochs=planner.epochs, until_correct=until)
            evaluate(planner, model, role, record)


@dataclass
class Result:
    round: int | None
    bases: list[Json]
    """Per base: the SFT reference, a row per uniform and budget run, each budget against its uniform match."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "round": self.round, "bases": self.bases}


def _row(variant: str, model: a.Model, until: int | None) -> Json:
    samples, problems = model.mean("samples", rft_data=True), model.mean("problems", rft_data=True)
    paths = {key: model.mean(key, rft_data=True) for key in ("coverage", "checked_per_problem", "distinct_per_problem")}
    return {"variant": variant, "k": model.k, "until_correct": until,
            "paths_per_problem": samples / problems if samples is not None and problems else None, **paths,
            "examples": model.mean("examples"), "tokens": model.mean("tokens"), **model.point()}  # fmt: skip


def _compare(budget: Json, model: a.Model, uniform: list[tuple[Json, a.Model]]) -> Json | None:
    """The budget against the uniform run with the fewest paths per question not below the budget's."""
    spent = budget["paths_per_problem"]
    matches = [(row, m) for row, m in uniform if spent is not None and row["k"] >= spent - 1e-9]
    if not matches:
        return None
    row, match = min(matches, key=lambda item: item[0]["k"])
    gaps = {key: None if budget[key] is None or row[key] is None else budget[key] - row[key]
            for key in ("coverage", "distinct_per_problem")}  # fmt: skip
    return {"until_correct": budget["until_correct"], "uniform_k": row["k"], "paths_per_problem": spent,
            "coverage_gain": gaps["coverage"], "distinct_gain": gaps["distinct_per_problem"],
            "difference": a.difference(model, match)}  # fmt: skip


def _base(models: list[a.Model], base: str) -> Json | None:
    budgets = [(role.until_correct, m) for m in models if (role := m.role(NAME)) and role.fits(base, "budget")]
    if not budgets:
        return None
    uniform = [(_row("uniform", m, None), m) for m in a.own_rft(models, NAME, base)]
    rows = [(_row("budget", m, until), m) for until, m in sorted(budgets, key=lambda item: item[0] or 0)]
    return {"base": base, "sft": a.reference(a.sft(models, NAME, base)),
            "rows": [row for row, _ in uniform + rows],
            "comparisons": [c for row, m in rows if (c := _compare(row, m, uniform)) is not None]}  # fmt: skip


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    if spec is None:
        return a.absent(NAME, spec)
    bases = [entry for base in a.family_bases(spec, models, NAME) if (entry := _base(models, base))]
    return Result(spec.get("round"), bases) if bases else a.absent(NAME, spec)


# Findings


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    if not isinstance(result, Result):
        return [a.untested("beyond", CLAIM, result.reason)]
    verdicts, sentences = [], []
    for entry in result.bases:
        rows = {(row["variant"], row["until_correct"] or row["k"]): row for row in entry["rows"]}
        for item in entry["comparisons"]:
            budget, uniform = rows[("budget", item["until_correct"])], rows[("uniform", item["uniform_k"])]
            verdicts.append(a.verdict(item["difference"]["value"], [item["difference"]["ci"]], +1))
            sentences.append(
                f"{entry['base']}, until {item['until_correct']} checked (at most {budget['k']}): "
                f"{item['paths_per_problem']:.2f} paths per question, {_paths(budget)}, RFT {a.acc(budget)}; "
                f"uniform k={item['uniform_k']}: {_paths(uniform)}, RFT {a.acc(uniform)}: "
                f"{a.diff_text(item['difference'])}."
            )
    if not verdicts:
        return [a.untested("beyond", CLAIM, "no budget drew at most the paths per question of a uniform run")]
    return [a.finding("beyond", CLAIM, a.combined(verdicts), sentences)]


def _paths(row: Json) -> str:
    coverage = "coverage unknown" if row["coverage"] is None else f"coverage {100 * row['coverage']:.1f}%"
    distinct = row["distinct_per_problem"]
    return coverage + ("" if distinct is None else f", {distinct:.2f} distinct paths per question")


# Report


def blocks(result: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("8. Difficulty-aware sampling budgets against a uniform k", result)
    if not isinstance(result, Result):
        return blocks
    header = ["RFT data", "paths / question", "coverage (%)", "checked / question", "distinct / question",
              "examples", "maj1@1 (95% CI)", "minus uniform (95% CI)"]  # fmt: skip
    for entry in result.bases:
        against = {item["until_correct"]: item for item in entry["comparisons"]}
        rows = [["SFT (gold only)", "–", "–", "–", "–", d.num(entry["sft"]["examples"]), d.pct(entry["sft"]), ""]
                ] if entry["sft"] else []  # fmt: skip
        for row in entry["rows"]:
            item = against.get(row["until_correct"]) if row["variant"] == "budget" else None
            name = (f"until {row['until_correct']} checked, at most {row['k']}" if row["variant"] == "budget"
                    else f"uniform k={row['k']}")  # fmt: skip
            versus = f"{d.diff(item['difference'])} vs k={item['uniform_k']}" if item else ""
            coverage = None if row["coverage"] is None else 100 * row["coverage"]
            rows.append([name, d.num(row["paths_per_problem"], ".2f"), d.num(coverage, ".1f"),
                         d.num(row["checked_per_problem"], ".2f"), d.num(row["distinct_per_problem"], ".2f"),
                         d.num(row["examples"]), d.pct(row), versus])  # fmt: skip
        blocks += [("h", 3, entry["base"]), ("table", header, rows)]
    rounds = f"rounds of {result.round} paths" if result.round else "rounds"
    note = (f"A budget samples a question in {rounds} until it has the checked paths named or its cap; it is "
            "compared with the uniform k that draws at least as many paths per question.")  # fmt: skip
    blocks.append(("p", note))
    return blocks + d.figure(figures, NAME, "Coverage, distinct paths and RFT accuracy against paths per question")


def figure(plt: Any, result: Result) -> Any:
    bases = result.bases
    drawing, axes = plt.subplots(len(bases), 2, figsize=(10, 3.8 * len(bases)), layout="constrained", squeeze=False)
    for (paths, accuracy), entry in zip(axes, bases, strict=True):
        cover = paths.twinx()
        for number, (variant, marker, line) in enumerate((("uniform", "o", "-"), ("budget", "*", "none"))):
            rows = [row for row in entry["rows"] if row["variant"] == variant and row["paths_per_problem"]]
            if not rows:
                continue
            x = [row["paths_per_problem"] for row in rows]
            paths.plot(x, [row["distinct_per_problem"] or 0 for row in rows], marker=marker, linestyle=line,
                       color=f"C{number}", label=f"{variant}: distinct paths")  # fmt: skip
            cover.plot(x, [100 * (row["coverage"] or 0) for row in rows], marker=marker, linestyle=line,
                       color=f"C{number}", alpha=0.45, label=f"{variant}: coverage")  # fmt: skip
            accuracy.errorbar(x, [row["accuracy"] for row in rows], yerr=d.errors(rows), marker=marker,
                              linestyle=line, capsize=3, color=f"C{number}", label=f"RFT, {variant}")  # fmt: skip
        if entry["sft"]:
            accuracy.axhline(entry["sft"]["accuracy"], color="gray", label="SFT")
        ticks = [row["k"] for row in entry["rows"] if row["variant"] == "uniform"]
        for axis in (paths, accuracy):
            d.log2_axis(axis, ticks, "paths sampled per question")
            axis.legend(fontsize=8, loc="lower right")
        cover.set_ylabel("coverage (%, faint)")
        paths.set_ylabel("distinct paths per question")
        paths.set_title(f"{entry['base']}: what the samples hold")
        accuracy.set_ylabel("maj1@1 (%)")
        accuracy.set_title(f"{entry['base']}: RFT accuracy")
    return drawing

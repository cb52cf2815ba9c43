"""The verifier family (beyond the paper): what the checker that keeps RFT's paths does to RFT.

RFT keeps a path when its answer is right and every calculator annotation checks (the paper's rule). Here the
same samples (the base's SFT model, the first k paths of each question) are rejected by each checker of a grid:
the answer judged by the paper's rule or by math-verify (`verifiers`), with and without the calculator check
(`calculator_check`); each kept set is de-duplicated and trained on as RFT is. The paper's checker
(`paper+calculator`) is RFT at k itself (the k family's run). Two questions, each a paired difference expected
positive: does the calculator check give better RFT than keeping every path with the right answer, and does
math-verify's verdict give better RFT than the paper's answer rule?
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
    as_list,
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
from rftlab.verifiers import VERIFIERS

NAME, SECTION = "verifier", 9
KEYS = frozenset({"bases", "k", "verifiers", "calculator_check"})
PAPER = "paper+calculator"
CALCULATOR_CLAIM = "The calculator check gives better RFT than every path with the right answer"
VERIFIER_CLAIM = "math-verify's verdicts give better RFT than the paper's answer rule"


def checker(verifier: str, check_calculator: bool) -> str:
    """A checker's name: the answer verifier, `+calculator` when annotations must check."""
    return f"{verifier}+calculator" if check_calculator else verifier


def _label(name: str) -> str:
    verifier, _, calculator = name.partition("+")
    return label("mathverify" if verifier == "math-verify" else "", "" if calculator else "nocalc") or "paper"


def parse(value: Any, config: Config) -> Json:
    where = f"{config.source}: experiments: {NAME}"
    spec = mapping(value, where)
    known_keys(spec, KEYS, where)
    if "k" not in spec:
        raise StudyError(f"{where}: k: give the paths per question that every checker reads")
    k = integer(spec["k"], f"{where}: k", least=1)
    verifiers = [str(v) for v in as_list(spec.get("verifiers", ["paper"]), f"{where}: verifiers")]
    if unknown := [v for v in verifiers if v not in VERIFIERS]:
        raise StudyError(f"{where}: verifiers: {unknown[0]!r} is not one of {', '.join(VERIFIERS)}")
    checks = as_list(spec.get("calculator_check", [True, False]), f"{where}: calculator_check")
    if not all(isinstance(check, bool) for check in checks):
        raise StudyError(f"{where}: calculator_check: expected a list of true and false, got {checks!r}")
    checkers = [checker(v, c) for v in dict.fromkeys(verifiers) for c in dict.fromkeys(checks)]
    if not set(checkers) - {PAPER}:
        raise StudyError(f"{where}: the grid holds only the paper's checker; add math-verify or calculator_check false")
    return {"bases": base_names(spec.get("bases"), config, where), "k": k, "checkers": checkers}


def requests(spec: Json, planner: Planner) -> None:
    for base in spec["bases"]:
        planner.request_samples(planner.sft(base), spec["k"])


def plan(spec: Json, planner: Planner) -> None:
    k = spec["k"]
    for base in spec["bases"]:
        tuned, world = planner.sft(base), planner.world()
        evaluate(planner, tuned, Role(NAME, base, "sft", epochs=planner.epochs), sft_record(base, 1.0, planner.epochs))
        model, record = own_rft(planner, base, k)
        evaluate(planner, model, Role(NAME, base, "rft", k, epochs=planner.epochs, checker=PAPER), record)
        samples = planner.samples(tuned, base, world)
        for name in spec["checkers"]:
            if name == PAPER:
                continue
            verifier, _, calculator = name.partition("+")
            run = label(base, f"k{k}", _label(name))
            selection = planner.rejection([samples], world, k, True, label(run, f"s{planner.seed}"), verifier,
                                          bool(calculator))  # fmt: skip
            record = rft_record(base, k, True, [base], selection, "epochs", planner.epochs)
            role = Role(NAME, base, "checker", k, epochs=planner.epochs, checker=name)
            evaluate(planner, planner.rft(base, selection, run), role, record)


@dataclass
class Result:
    k: int | None
    bases: list[Json]
    """Per base: the SFT reference, a row per checker, the calculator and verifier comparisons."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "k": self.k, "bases": self.bases}


def _row(name: str, model: a.Model) -> Json:
    paths = {key: model.mean(key, rft_data=True) for key in ("correct_per_problem", "checked_per_problem",
                                                            "distinct_per_problem", "coverage")}  # fmt: skip
    return {"checker": name, **paths, "examples": model.mean("examples"), **model.point()}


def _base(models: list[a.Model], base: str, k: int | None) -> Json | None:
    found: dict[str, a.Model] = {}
    for m in models:
        role = m.role(NAME)
        if role is not None and role.checker and any(role.fits(base, variant, k) for variant in ("rft", "checker")):
            found.setdefault(role.checker, m)
    if set(found) <= {PAPER}:
        return None
    pairs = {"calculator": [(checker(v, True), checker(v, False)) for v in VERIFIERS],
             "verifier": [(checker("math-verify", c), checker("paper", c)) for c in (True, False)]}  # fmt: skip
    comparisons = {kind: [_compare(found, better, than) for better, than in items if better in found and than in found]
                   for kind, items in pairs.items()}  # fmt: skip
    return {"base": base, "sft": a.reference(a.sft(models, NAME, base)),
            "rows": [_row(name, m) for name, m in found.items()], **comparisons}  # fmt: skip


def _compare(found: dict[str, a.Model], better: str, than: str) -> Json:
    return {"better": better, "than": than, "difference": a.difference(found[better], found[than])}


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    if spec is None:
        return a.absent(NAME, spec)
    bases = [entry for base in a.family_bases(spec, models, NAME) if (entry := _base(models, base, spec.get("k")))]
    return Result(spec.get("k"), bases) if bases else a.absent(NAME, spec)


# Findings


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    return [_finding(result, "calculator", CALCULATOR_CLAIM), _finding(result, "verifier", VERIFIER_CLAIM)]


def _finding(result: Result | a.Untested, kind: str, claim: str) -> Json:
    if not isinstance(result, Result):
        return a.untested("beyond", claim, result.reason)
    verdicts, sentences = [], []
    for entry in result.bases:
        rows = {row["checker"]: row for row in entry["rows"]}
        for item in entry[kind]:
            better, than = rows[item["better"]], rows[item["than"]]
            verdicts.append(a.verdict(item["difference"]["value"], [item["difference"]["ci"]], +1))
            sentences.append(
                f"{entry['base']}, k={result.k}: RFT on the paths {item['better']} keeps ({_paths(better)}) scores "
                f"{a.acc(better)}, on those {item['than']} keeps ({_paths(than)}) {a.acc(than)}: "
                f"{a.diff_text(item['difference'])}."
            )
    if not verdicts:
        missing = "with and without the calculator check" if kind == "calculator" else "by math-verify and the paper"
        return a.untested("beyond", claim, f"the verifier experiment has no pair of runs {missing}")
    return a.finding("beyond", claim, a.combined(verdicts), sentences)


def _paths(row: Json) -> str:
    checked, distinct = row["checked_per_problem"], row["distinct_per_problem"]
    if checked is None or distinct is None:
        return "paths unknown"
    return f"{checked:.2f} kept, {distinct:.2f} distinct per question"


# Report


def blocks(result: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("9. The checker that keeps RFT's paths", result)
    if not isinstance(result, Result):
        return blocks
    header = ["checker", "correct / question", "kept / question", "distinct / question", "examples",
              "maj1@1 (95% CI)"]  # fmt: skip
    for entry in result.bases:
        rows = [["SFT (gold only)", "–", "–", "–", d.num(entry["sft"]["examples"]), d.pct(entry["sft"])]
                ] if entry["sft"] else []  # fmt: skip
        rows += [[row["checker"], d.num(row["correct_per_problem"], ".2f"), d.num(row["checked_per_problem"], ".2f"),
                  d.num(row["distinct_per_problem"], ".2f"), d.num(row["examples"]), d.pct(row)]
                 for row in entry["rows"]]  # fmt: skip
        lines = [f"{item['better']} minus {item['than']}: {d.diff(item['difference'])}"
                 for kind in ("calculator", "verifier") for item in entry[kind]]  # fmt: skip
        blocks += [("h", 3, f"{entry['base']}, k={result.k}"), ("table", header, rows), ("list", lines)]
    return blocks + d.figure(figures, NAME, "RFT accuracy and distinct paths by the checker that kept the paths")


def figure(plt: Any, result: Result) -> Any:
    bases = result.bases
    drawing, axes = plt.subplots(len(bases), 2, figsize=(10, 3.6 * len(bases)), layout="constrained", squeeze=False)
    for (accuracy, paths), entry in zip(axes, bases, strict=True):
        rows = entry["rows"]
        names = [row["checker"] for row in rows]
        colors = [f"C{number}" for number in range(len(rows))]
        accuracy.bar(names, [row["accuracy"] for row in rows], yerr=d.errors(rows), capsize=4, color=colors)
        if entry["sft"]:
            accuracy.axhline(entry["sft"]["accuracy"], color="gray", linestyle="--", label="SFT")
            accuracy.legend(fontsize=8)
        low = min(row["ci"][0] if row.get("ci") else row["accuracy"] for row in rows)
        accuracy.set_ylim(bottom=max(0.0, low - 5))
        accuracy.set_ylabel("maj1@1 (%)")
        accuracy.set_title(f"{entry['base']}: RFT accuracy (k={result.k})")
        paths.bar(names, [row["distinct_per_problem"] or 0 for row in rows], color=colors)
        paths.set_ylabel("distinct paths per question")
        paths.set_title(f"{entry['base']}: what each checker keeps")
        for axis in (accuracy, paths):
            axis.tick_params(axis="x", labelsize=8)
    return drawing

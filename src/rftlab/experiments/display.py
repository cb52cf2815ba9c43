"""The report's shared pieces: blocks, cell formats, the study-wide sections and plotting helpers.

A block is ("h", level, text), ("p", text), ("list", items), ("table", header, rows) or ("figure", name,
caption); text may hold **bold**. rftlab.report renders blocks as Markdown and HTML.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from rftlab.experiments.base import Json

Block = tuple[Any, ...]


# Cells of tables and lines


def pct(point: Json | None) -> str:
    """maj1@1 with its interval, e.g. "31.4 (27.4–35.6)"."""
    if point is None:
        return "–"
    accuracy = point.get("accuracy", point.get("maj1@1"))
    ci = point.get("ci")
    return f"{accuracy:.1f}" + (f" ({ci[0]:.1f}–{ci[1]:.1f})" if ci else "")


def diff(difference: Json | None) -> str:
    if difference is None:
        return "–"
    ci = difference["ci"]
    return f"{difference['value']:+.1f}" + (f" ({ci[0]:+.1f} to {ci[1]:+.1f})" if ci else "")


def num(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def fraction(value: float) -> str:
    return str(Fraction(value).limit_denominator(1000))


def fit_line(name: str, fit: Json | None, unit: str) -> str:
    if fit is None:
        return f"{name}: fewer than 2 points with different x, no fit."
    text = f"{name}: slope {fit['slope']:.2f} {unit}, intercept {fit['intercept']:.1f}"
    if fit["n"] == 2:
        return text + " (the line through 2 points; no fit)."
    intervals = [
        f"{method} {ci[0]:.2f} to {ci[1]:.2f}"
        for method, ci in (("bootstrap", fit.get("slope_ci")), ("t", fit.get("slope_ci_t")))
        if ci
    ]
    return text + f"; slope 95% CI {', '.join(intervals)}; r = {fit['r']:+.2f}, R² = {fit['r2']:.2f}, n = {fit['n']}."


def section(heading: str, result: Any) -> list[Block]:
    """A family's heading, with the reason when it was not tested."""
    blocks: list[Block] = [("h", 2, heading)]
    return blocks if result.tested else [*blocks, ("p", f"Not tested in this study: {result.reason}.")]


def figure(figures: dict[str, bytes], name: str, caption: str) -> list[Block]:
    return [("figure", name, caption)] if name in figures else []


# The study-wide sections


def header_blocks(analysis: Json) -> list[Block]:
    study, settings = analysis["study"], analysis["settings"]
    data, cells = study.get("data") or {}, study.get("cells") or {}
    seeds = ", ".join(str(seed) for seed in study.get("seeds") or []) or "–"
    facts = [
        f"Configuration: {study.get('config_file') or '–'}; seeds: {seeds}.",
        f"Data: {data.get('kind', '–')}, {num(data.get('train'))} train and {num(data.get('test'))} test problems.",
        f"Cells: {num(cells.get('total'))} in total, {num(cells.get('ran'))} run by this invocation, "
        f"{num(cells.get('seconds'))} s of compute.",
    ]
    bases = [
        [b["name"], b.get("model") or b.get("preset") or "–", num(b.get("parameters")), num(b.get("pretrain_tokens")),
         num(b.get("loss"), ".3f")]
        for b in study["bases"]
    ]  # fmt: skip
    method = (
        f"Accuracy is greedy maj1@1 on the test problems in percent, averaged over seeds; intervals are "
        f"{100 * settings['level']:g}% percentile bootstrap intervals over seeds and test problems "
        f"({settings['resamples']:,} resamples); differences are paired (the same problems and seeds)."
    )
    blocks: list[Block] = [("h", 1, f"Study report: {study['name']}"), ("list", facts)]
    if bases:
        blocks.append(("table", ["base", "model", "parameters", "pre-training tokens", "pre-training loss"], bases))
    return [*blocks, ("p", method)]


def findings_blocks(findings: list[Json]) -> list[Block]:
    table = [[str(f["finding"]), f["claim"], f["verdict"]] for f in findings]
    items = [f"**{f['finding']}. {f['claim']}: {f['verdict']}.** " + " ".join(f["sentences"]) for f in findings]
    return [("h", 2, "Findings"), ("table", ["paper finding", "claim", "verdict"], table), ("list", items)]


def runs_blocks(runs: list[Json]) -> list[Block]:
    header = ["name", "stage", "base", "world", "fraction", "epochs", "k", "dedup", "sources", "union", "seeds",
              "examples", "tokens", "maj1@1 (95% CI)"]  # fmt: skip
    rows = [
        [r["name"], r["stage"], r["base"], r["world"], fraction(r["fraction"]), num(r["epochs"], "g"), num(r["k"], "d"),
         {True: "yes", False: "no"}.get(r["dedup"], "–"), "+".join(r["sources"]) or "–", r.get("union") or "–",
         str(len(r["seeds"])), num(r["examples"]), num(r["tokens"]), pct(r)]
        for r in runs
    ]  # fmt: skip
    return [("h", 2, "All runs"), ("table", header, rows)]


# Plotting helpers (matplotlib axes)


def errors(points: list[Json]) -> list[list[float]]:
    """Error bar lengths below and above each point's accuracy from its interval (0 without one)."""
    below = [max(0.0, p["accuracy"] - p["ci"][0]) if p.get("ci") else 0.0 for p in points]
    above = [max(0.0, p["ci"][1] - p["accuracy"]) if p.get("ci") else 0.0 for p in points]
    return [below, above]


def fit_ends(axis: Any, fit: Json | None, xs: list[float], transform: Any, color: str, style: str = "--") -> None:
    """The fitted line y = intercept + slope·transform(x), dashed (or `style`), over the range of xs."""
    if fit is not None:
        ends = [min(xs), max(xs)]
        axis.plot(ends, [fit["intercept"] + fit["slope"] * transform(x) for x in ends], style, color=color)


def label_points(axis: Any, xs: list[float], ys: list[float], names: list[str]) -> None:
    for x, y, name in zip(xs, ys, names, strict=True):
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def log2_axis(axis: Any, values: list[float], label: str) -> None:
    """A log2 x axis with a tick at each value, labelled as a plain number."""
    axis.set_xscale("log", base=2)
    ticks = sorted(set(values))
    axis.set_xticks(ticks, [f"{value:,.0f}" for value in ticks])
    axis.minorticks_off()
    axis.set_xlabel(label)

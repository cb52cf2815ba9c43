"""Reports: tables in Markdown and plots (matplotlib, PNG) computed from a run's results.

- `write_demo_report`: the demo's table and plot.
- `write_study_report`: a scaling study's report (`report.md`, a self-contained `report.html`, `figures/`,
  `analysis.json`) from its results.json; the numbers and verdicts come from `rftlab.findings`.

numpy, scipy and matplotlib are imported on use, so importing this module (the CLI) stays fast.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from rftlab.data import atomic_writer, iter_jsonl, write_json


def _accuracy_by_steps(out: Path, name: str) -> dict[int, float]:
    """Greedy accuracy of one evaluated model by number of solution steps of the test problems."""
    steps = {record["id"]: record.get("steps") for _, record in iter_jsonl(out / "data" / "test.jsonl")}
    outcomes: dict[int, list[bool]] = defaultdict(list)
    for _, prediction in iter_jsonl(out / "eval" / f"{name}.predictions.jsonl"):
        if steps.get(prediction["id"]) is not None:
            outcomes[steps[prediction["id"]]].append(prediction["correct_first"])
    return {n: 100 * sum(v) / len(v) for n, v in sorted(outcomes.items())}


def demo_table(results: dict[str, Any]) -> str:
    """The demo's result table (Markdown)."""
    evaluations, selection, config = results["evaluations"], results["selection"], results["config"]
    k = config["eval_k"]
    rows = [
        f"| model | training data | maj1@1 | maj1@{k} | pass@{k} |",
        "|---|---|---|---|---|",
    ]
    data = {"SFT": f"{config['n_train']:,} problems", "RFT": f"{results['rft_examples']:,} paths"}
    for name, summary in evaluations.items():
        rows.append(
            f"| {name} | {data[name]} | {summary['maj1@1']:.1f} | {summary.get('maj1@k', float('nan')):.1f} | "
            f"{summary.get('pass@k', float('nan')):.1f} |"
        )
    rows += [
        "",
        f"Rejection sampling: {selection['samples']:,} paths sampled ({selection['samples_per_problem']} per train "
        f"question, T={config['temperature']}); per question {selection['correct_per_problem']:.2f} correct, "
        f"{selection['checked_per_problem']:.2f} with every equation right, {selection['distinct_per_problem']:.2f} "
        f"distinct equation lists kept; {100 * selection['coverage_by_file'][-1]:.1f}% of questions have a correct "
        "path.",
    ]
    return "\n".join(rows)


def _plot(out: Path, results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["config"]["eval_k"]
    metrics = [("maj1@1", "maj1@1"), ("maj1@k", f"maj1@{k}"), ("pass@k", f"pass@{k}")]
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    width, steps = 0.38, set()
    for offset, (name, summary) in enumerate(results["evaluations"].items()):
        values = [summary.get(key, 0.0) for key, _ in metrics]
        positions = [i + (offset - 0.5) * width for i in range(len(metrics))]
        bars.bar(positions, values, width, label=name)
        for x, value in zip(positions, values, strict=True):
            bars.text(x, value + 0.5, f"{value:.1f}", ha="center", fontsize=8)
        by_steps = _accuracy_by_steps(out, name)
        steps |= set(by_steps)
        lines.plot(list(by_steps), list(by_steps.values()), marker="o", label=name)
    bars.set_xticks(range(len(metrics)), [label for _, label in metrics])
    bars.set_ylabel("test accuracy (%)")
    bars.set_ylim(0, 105)
    bars.set_title("SFT vs RFT on the toy world")
    bars.legend()
    lines.set_xticks(sorted(steps))
    lines.set_xlabel("solution steps")
    lines.set_ylabel("greedy test accuracy (%)")
    lines.set_ylim(0, 105)
    lines.set_title("by difficulty")
    lines.legend()
    with atomic_writer(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def write_demo_report(out: Path, results: dict[str, Any]) -> str:
    """Writes `out/report.md` and `out/accuracy.png`; returns the table."""
    table = demo_table(results)
    _plot(out, results, out / "accuracy.png")
    timings = "\n".join(f"| {stage} | {seconds:.0f} |" for stage, seconds in results["seconds"].items())
    total = sum(results["seconds"].values())
    text = "\n".join([
        "# rftlab demo: RFT on the toy world",
        "",
        "SFT trains the pre-trained base on the train problems (one gold solution each). RFT samples "
        f"k={results['config']['k']} paths per train question from the SFT model, keeps the correct ones with "
        "distinct equation lists, and trains the *base* again on the gold solutions plus those paths.",
        "",
        table,
        "",
        "![accuracy](accuracy.png)",
        "",
        "Stage times of this invocation (a stage already done under the output folder takes about 0 s):",
        "",
        "| stage | seconds |",
        "|---|---|",
        timings,
        f"| total | {total:.0f} |",
        "",
    ])  # fmt: skip
    with atomic_writer(out / "report.md", "w") as handle:
        handle.write(text)
    return table


# Study report -----------------------------------------------------------------------------------

Block = tuple[Any, ...]
"""("h", level, text), ("p", text), ("list", items), ("table", header, rows) or ("figure", name, caption);
text may hold **bold**."""
STUDY_FIGURES = ("data", "pretraining", "k", "union", "gain")
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1em 0; }
img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""


def analyse_study(results: dict[str, Any]) -> dict[str, Any]:
    """The study's numbers, fits and verdicts (`rftlab.findings.analyse_study`, imported on use)."""
    from rftlab.findings import analyse_study as analyse

    return analyse(results)


def write_study_report(out: Path, results: dict[str, Any]) -> Path:
    """Writes `out/analysis.json`, `out/figures/*.png`, `out/report.md` and a self-contained `out/report.html`
    (figures embedded); returns the path of report.md. The same results give the same files."""
    analysis = analyse_study(results)
    figures = _study_figures(analysis)
    blocks = _study_blocks(analysis, figures)
    write_json(out / "analysis.json", analysis)
    for name in STUDY_FIGURES:
        path = out / "figures" / f"{name}.png"
        if name in figures:
            with atomic_writer(path) as handle:
                handle.write(figures[name])
        else:
            path.unlink(missing_ok=True)
    title = f"Study report: {analysis['study']['name']}"
    with atomic_writer(out / "report.html", "w") as handle:
        handle.write(_html(title, blocks, figures))
    report = out / "report.md"
    with atomic_writer(report, "w") as handle:
        handle.write(_markdown(blocks))
    return report


# Rendering: Markdown and HTML from the same blocks


def _markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            lines.append(block[1])
        elif kind == "list":
            lines.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            cells = [header, ["---"] * len(header), *rows]
            lines.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells))
        else:
            lines.append(f"![{block[2]}](figures/{block[1]}.png)\n\n*{block[2]}*")
        lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text, quote=False))


def _html(title: str, blocks: list[Block], figures: dict[str, bytes]) -> str:
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style>\n</head>\n<body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "\n</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in block[1])
            body = "\n".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table>\n<tr>{head}</tr>\n{body}\n</table>")
        else:
            data = base64.b64encode(figures[block[1]]).decode("ascii")
            caption = _inline(block[2])
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


# Report content


def _pct(point: dict[str, Any] | None) -> str:
    """maj1@1 with its interval, e.g. "31.4 (27.4–35.6)"."""
    if point is None:
        return "–"
    accuracy = point.get("accuracy", point.get("maj1@1"))
    ci = point.get("ci")
    return f"{accuracy:.1f}" + (f" ({ci[0]:.1f}–{ci[1]:.1f})" if ci else "")


def _diff(difference: dict[str, Any] | None) -> str:
    if difference is None:
        return "–"
    ci = difference["ci"]
    return f"{difference['value']:+.1f}" + (f" ({ci[0]:+.1f} to {ci[1]:+.1f})" if ci else "")


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def _fraction(value: float) -> str:
    return str(Fraction(value).limit_denominator(1000))


def _fit_line(name: str, fit: dict[str, Any] | None, unit: str) -> str:
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


def _untested(family: dict[str, Any]) -> list[Block]:
    return [("p", f"Not tested in this study: {family['reason']}.")]


def _figure(figures: dict[str, bytes], name: str, caption: str) -> list[Block]:
    return [("figure", name, caption)] if name in figures else []


def _header_blocks(analysis: dict[str, Any]) -> list[Block]:
    study, settings = analysis["study"], analysis["settings"]
    data, cells = study.get("data") or {}, study.get("cells") or {}
    seeds = ", ".join(str(seed) for seed in study.get("seeds") or []) or "–"
    facts = [
        f"Configuration: {study.get('config_file') or '–'}; seeds: {seeds}.",
        f"Data: {data.get('kind', '–')}, {_num(data.get('train'))} train and {_num(data.get('test'))} test problems.",
        f"Cells: {_num(cells.get('total'))} in total, {_num(cells.get('ran'))} run by this invocation, "
        f"{_num(cells.get('seconds'))} s of compute.",
    ]
    bases = [
        [
            b["name"],
            b.get("model") or b.get("preset") or "–",
            _num(b.get("parameters")),
            _num(b.get("pretrain_tokens")),
            _num(b.get("loss"), ".3f"),
        ]
        for b in study["bases"]
    ]
    method = (
        f"Accuracy is greedy maj1@1 on the test problems in percent, averaged over seeds; intervals are "
        f"{100 * settings['level']:g}% percentile bootstrap intervals over seeds and test problems "
        f"({settings['resamples']:,} resamples); differences are paired (the same problems and seeds)."
    )
    blocks: list[Block] = [("h", 1, f"Study report: {study['name']}"), ("list", facts)]
    if bases:
        blocks.append(("table", ["base", "model", "parameters", "pre-training tokens", "pre-training loss"], bases))
    return [*blocks, ("p", method)]


def _findings_blocks(analysis: dict[str, Any]) -> list[Block]:
    findings = analysis["findings"]
    table = [[str(f["finding"]), f["claim"], f["verdict"]] for f in findings]
    items = [f"**{f['finding']}. {f['claim']}: {f['verdict']}.** " + " ".join(f["sentences"]) for f in findings]
    return [("h", 2, "Findings"), ("table", ["paper finding", "claim", "verdict"], table), ("list", items)]


def _data_blocks(data: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "1. Data amount (SFT on fractions of the train set)")]
    if not data["tested"]:
        return blocks + _untested(data)
    for entry in data["bases"]:
        rows = [
            [
                _fraction(point["fraction"]),
                _num(point["examples"]),
                rule["rule"],
                _num(rule["epochs"], "g"),
                _pct(rule),
                "yes" if rule["rule"] == point["best_rule"] else "",
            ]
            for point in entry["points"]
            for rule in point["rules"]
        ]
        blocks += [
            ("h", 3, entry["base"]),
            ("table", ["fraction", "examples", "epoch rule", "epochs", "maj1@1 (95% CI)", "better"], rows),
            ("p", _fit_line("Accuracy against log2(examples), better rule", entry["fit"], "points per doubling")),
            *_rule_fit_blocks(entry),
        ]
    caption = "SFT accuracy against training examples (log2); filled, solid: the better epoch rule, dashed: its fit"
    if any(entry.get("fits_by_rule") for entry in data["bases"]):
        caption += (
            "; hollow circles, dotted fit: equal epochs (fixed); hollow squares, dash-dot fit: equal tokens (scaled)"
        )
    return blocks + _figure(figures, "data", caption)


def _rule_names(epochs: float) -> dict[str, str]:
    """The data family's epoch rules in words, e.g. "equal epochs (fixed rule, 3 epochs)"."""
    return {
        "fixed": f"equal epochs (fixed rule, {epochs:g} epochs)",
        "scaled": f"equal tokens (scaled rule, {epochs:g}/fraction epochs)",
    }


def _rule_fit_blocks(entry: dict[str, Any]) -> list[Block]:
    """One fit line per epoch rule when the runs contain both (the full data in both series)."""
    fits = entry.get("fits_by_rule")
    if not fits:
        return []
    return [
        ("p", _fit_line(f"Accuracy against log2(examples), {name}", fits[rule], "points per doubling"))
        for rule, name in _rule_names(entry["epochs"]).items()
    ]


def _pretraining_blocks(pre: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "2. Pre-training loss and model size")]
    if not pre["tested"]:
        return blocks + _untested(pre)
    rows = [
        [p["base"], _num(p["loss"], ".3f"), _num(p["parameters"]), _num(p["pretrain_tokens"]), _pct(p)]
        for p in pre["points"]
    ]
    blocks += [
        ("table", ["base", "loss", "parameters", "pre-training tokens", "SFT maj1@1 (95% CI)"], rows),
        ("p", _fit_line("Accuracy against loss", pre["loss_fit"], "points per unit of loss")),
        ("p", _fit_line("Accuracy against log10(parameters)", pre["size_fit"], "points per decade")),
    ]
    comparison = pre["comparison"]
    if comparison:
        blocks.append(
            (
                "p",
                f"Better predictor: {comparison['better']} (|r| margin {comparison['margin']:.2f}, "
                f"n = {comparison['n']}).",
            )
        )
    pairs = [[p["lower_loss"], p["larger"], _diff(p["difference"]), p["follows"]] for p in pre["disagreements"]]
    if pairs:
        header = ["lower loss", "more parameters", "accuracy difference (95% CI)", "accuracy follows"]
        blocks += [("p", "Pairs of bases ordered differently by loss and by size:"), ("table", header, pairs)]
    return blocks + _figure(figures, "pretraining", "SFT accuracy against pre-training loss and parameter count")


def _k_blocks(k_family: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "3. RFT: samples per question (k) and distinct reasoning paths")]
    if not k_family["tested"]:
        return blocks + _untested(k_family)
    header = [
        "model",
        "k",
        "distinct paths / question",
        "correct paths / question",
        "examples",
        "tokens",
        "maj1@1 (95% CI)",
        "minus SFT (95% CI)",
    ]
    for entry in k_family["bases"]:
        vs_sft = {item["k"]: item["difference"] for item in entry["vs_sft"]}
        rows = [
            [label, "0", "–", "–", _num(ref["examples"]), _num(ref["tokens"]), _pct(ref), ""]
            for label, ref in (("SFT", entry["sft"]), ("SFT, canonical world", entry["canonical_sft"]))
            if ref
        ]
        rows += [
            [
                f"RFT, {row['variant']}",
                str(row["k"]),
                _num(row["distinct_per_problem"], ".2f"),
                _num(row["correct_per_problem"], ".2f"),
                _num(row["examples"]),
                _num(row["tokens"]),
                _pct(row),
                _diff(vs_sft.get(row["k"])) if row["variant"] == "dedup" else "",
            ]
            for row in entry["rows"]
        ]
        blocks += [
            ("h", 3, entry["base"]),
            ("table", header, rows),
            ("p", _fit_line("RFT accuracy against distinct paths per question", entry["paths_fit"], "points per path")),
        ]
    return blocks + _figure(figures, "k", "Distinct paths per question and accuracy against k (log2)")


def _union_table(union: dict[str, Any]) -> list[Block]:
    """One union's heading (name, sources, k) and its table of targets."""
    name, k = union["name"], union["k"]
    header = [
        "target",
        "SFT",
        f"RFT own k={k}",
        f"RFT {name}",
        "paths own",
        f"paths {name}",
        f"{name} − own",
        "own − SFT",
        f"{name} − SFT",
    ]
    rows = [
        [
            t["target"],
            _pct(t["sft"]),
            _pct(t["own"]),
            _pct(t["union"]),
            _num((t["own"] or {}).get("distinct_per_problem"), ".2f"),
            _num(t["union"]["distinct_per_problem"], ".2f"),
            _diff(t["union_minus_own"]),
            _diff(t["own_minus_sft"]),
            _diff(t["union_minus_sft"]),
        ]
        for t in union["targets"]
    ]
    heading = f"{name}: {len(union['sources'])} models pooled ({', '.join(union['sources'])}), k={k} each"
    return [("h", 3, heading), ("table", header, rows)]


def _union_pairs(family: dict[str, Any]) -> list[Block]:
    """The larger minus the smaller union on each target they share."""
    if not family["comparisons"]:
        return []
    accuracy = {(u["name"], t["target"]): t["union"] for u in family["unions"] for t in u["targets"]}
    rows = [
        [
            c["target"],
            c["larger"],
            _pct(accuracy[c["larger"], c["target"]]),
            c["smaller"],
            _pct(accuracy[c["smaller"], c["target"]]),
            _diff(c["difference"]),
            c["verdict"],
        ]
        for c in family["comparisons"]
    ]
    header = [
        "target",
        "larger union",
        "maj1@1 (95% CI)",
        "smaller union",
        "maj1@1 (95% CI)",
        "larger − smaller (95% CI)",
        "larger is better: verdict",
    ]
    return [
        ("h", 3, "Larger against smaller unions"),
        ("p", "Larger: more sources (then a larger k); on targets both unions trained."),
        ("table", header, rows),
    ]


def _union_blocks(family: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "4. Unions: RFT on the pooled samples of several models")]
    if not family["tested"]:
        return blocks + _untested(family)
    blocks.append(("p", "Paths: distinct paths per question; differences in points with paired 95% CIs."))
    for union in family["unions"]:
        blocks += _union_table(union)
    blocks += _union_pairs(family)
    if family["without_runs"]:
        blocks.append(("p", f"Without evaluated runs: {', '.join(family['without_runs'])}."))
    names = ", ".join(union["name"] for union in family["unions"])
    return blocks + _figure(figures, "union", f"SFT, RFT on own samples and RFT on each union ({names}), per target")


def _gain_blocks(gain: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "5. RFT gain against SFT accuracy")]
    if not gain["tested"]:
        return blocks + _untested(gain)
    rows = [[p["base"], f"{p['sft']:.1f}", f"{p['rft']:.1f}", _diff(p["gain"])] for p in gain["points"]]
    blocks += [
        ("table", ["base", "SFT", f"RFT k={gain['k']}", "gain (95% CI)"], rows),
        ("p", _fit_line("Gain against SFT accuracy", gain["fit"], "points per point")),
    ]
    return blocks + _figure(figures, "gain", "RFT gain over SFT against SFT accuracy")


def _runs_blocks(runs: list[dict[str, Any]]) -> list[Block]:
    header = [
        "name",
        "stage",
        "base",
        "world",
        "fraction",
        "epochs",
        "k",
        "dedup",
        "sources",
        "union",
        "seeds",
        "examples",
        "tokens",
        "maj1@1 (95% CI)",
    ]
    rows = [
        [
            r["name"],
            r["stage"],
            r["base"],
            r["world"],
            _fraction(r["fraction"]),
            _num(r["epochs"], "g"),
            _num(r["k"], "d"),
            {True: "yes", False: "no"}.get(r["dedup"], "–"),
            "+".join(r["sources"]) or "–",
            r.get("union") or "–",
            str(len(r["seeds"])),
            _num(r["examples"]),
            _num(r["tokens"]),
            _pct(r),
        ]
        for r in runs
    ]
    return [("h", 2, "All runs"), ("table", header, rows)]


def _study_blocks(analysis: dict[str, Any], figures: dict[str, bytes]) -> list[Block]:
    return [
        *_header_blocks(analysis),
        *_findings_blocks(analysis),
        *_data_blocks(analysis["data"], figures),
        *_pretraining_blocks(analysis["pretraining"], figures),
        *_k_blocks(analysis["k"], figures),
        *_union_blocks(analysis["union"], figures),
        *_gain_blocks(analysis["gain"], figures),
        *_runs_blocks(analysis["runs"]),
    ]


# Figures (matplotlib, imported on use)


def _errors(points: list[dict[str, Any]]) -> list[list[float]]:
    """Error bar lengths below and above each point's accuracy from its interval (0 without one)."""
    below = [max(0.0, p["accuracy"] - p["ci"][0]) if p.get("ci") else 0.0 for p in points]
    above = [max(0.0, p["ci"][1] - p["accuracy"]) if p.get("ci") else 0.0 for p in points]
    return [below, above]


def _fit_ends(
    axis: Any, fit: dict[str, Any] | None, xs: list[float], transform: Any, color: str, style: str = "--"
) -> None:
    """The fitted line y = intercept + slope·transform(x), dashed (or `style`), over the range of xs."""
    if fit is not None:
        ends = [min(xs), max(xs)]
        axis.plot(ends, [fit["intercept"] + fit["slope"] * transform(x) for x in ends], style, color=color)


def _label_points(axis: Any, xs: list[float], ys: list[float], names: list[str]) -> None:
    for x, y, name in zip(xs, ys, names, strict=True):
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _log2_axis(axis: Any, values: list[float], label: str) -> None:
    """A log2 x axis with a tick at each value, labelled as a plain number."""
    axis.set_xscale("log", base=2)
    ticks = sorted(set(values))
    axis.set_xticks(ticks, [f"{value:,.0f}" for value in ticks])
    axis.minorticks_off()
    axis.set_xlabel(label)


_RULE_STYLES = {"fixed": ("o", ":", "equal epochs"), "scaled": ("s", "-.", "equal tokens")}
"""Marker, fit line style and legend name of each epoch rule's own series in the data figure."""


def _rule_series(entry: dict[str, Any], rule: str) -> list[tuple[float, float]]:
    """(examples, accuracy) of one epoch rule; the full data ("fixed = scaled") belongs to both rules."""
    return [
        (r["examples"], r["accuracy"])
        for p in entry["points"]
        for r in p["rules"]
        if r["rule"] in (rule, "fixed = scaled")
    ]


def _data_rules(axis: Any, entry: dict[str, Any], color: str) -> list[str]:
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
        _fit_ends(axis, fits[rule], list(xs), math.log2, color, style)
        labels.append(f"{entry['base']}, {name} ({rule})")
        axis.plot([], [], marker=marker, markerfacecolor="none", linestyle=style, color=color, label=labels[-1])
    return labels


def _data_figure(plt: Any, data: dict[str, Any]) -> Any:
    figure, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    order = []  # legend labels grouped by base
    for entry in data["bases"]:
        points = entry["points"]
        xs = [p["examples"] for p in points]
        order.append(f"{entry['base']}, better epoch rule")
        drawn = axis.errorbar(
            xs, [p["accuracy"] for p in points], yerr=_errors(points), marker="o", capsize=3, label=order[-1]
        )
        color = drawn.lines[0].get_color()
        _fit_ends(axis, entry["fit"], xs, math.log2, color)
        order += _data_rules(axis, entry, color)
    _log2_axis(axis, [p["examples"] for e in data["bases"] for p in e["points"]], "training examples")
    axis.set_ylabel("SFT maj1@1 (%)")
    axis.set_title("SFT accuracy against data amount, by epoch rule")
    handles = {label: handle for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    axis.legend([handles[label] for label in order], order, fontsize=8)
    return figure


def _pretraining_figure(plt: Any, pre: dict[str, Any]) -> Any:
    figure, (by_loss, by_size) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axis, key, fit, transform in (
        (by_loss, "loss", pre["loss_fit"], float),
        (by_size, "parameters", pre["size_fit"], math.log10),
    ):
        points = [p for p in pre["points"] if p[key]]
        if not points:
            continue
        xs, ys = [p[key] for p in points], [p["accuracy"] for p in points]
        axis.errorbar(xs, ys, yerr=_errors(points), marker="o", linestyle="none", capsize=3, color="C0")
        _label_points(axis, xs, ys, [p["base"] for p in points])
        _fit_ends(axis, fit, xs, transform, "C1")
        axis.set_ylabel("SFT maj1@1 (%)")
    by_loss.set_xlabel("pre-training loss (held out)")
    by_loss.invert_xaxis()
    by_size.set_xscale("log")
    by_size.set_xlabel("parameters")
    by_loss.set_title("accuracy against loss")
    by_size.set_title("accuracy against size")
    return figure


_K_STYLES = {"dedup": ("o", "-"), "no dedup": ("s", "none"), "canonical": ("^", "-"), "equal tokens": ("D", "none")}


def _k_figure(plt: Any, k_family: dict[str, Any]) -> Any:
    bases = k_family["bases"]
    figure, axes = plt.subplots(len(bases), 2, figsize=(10, 3.8 * len(bases)), layout="constrained", squeeze=False)
    for (paths, accuracy), entry in zip(axes, bases, strict=True):
        for number, (variant, (marker, line)) in enumerate(_K_STYLES.items()):
            rows = [row for row in entry["rows"] if row["variant"] == variant]
            if not rows:
                continue
            ks, color = [row["k"] for row in rows], f"C{number}"
            with_paths = [row for row in rows if row["distinct_per_problem"] is not None]
            if with_paths and variant != "equal tokens":
                paths.plot(
                    [r["k"] for r in with_paths],
                    [r["distinct_per_problem"] for r in with_paths],
                    marker=marker,
                    linestyle=line,
                    color=color,
                    label=f"RFT, {variant}",
                )
            accuracy.errorbar(
                [k * 2 ** (0.06 * number) for k in ks],  # variants at the same k drawn side by side
                [row["accuracy"] for row in rows],
                yerr=_errors(rows),
                marker=marker,
                linestyle=line,
                capsize=3,
                color=color,
                label=f"RFT, {variant}",
            )
        for reference, style, label in ((entry["sft"], "-", "SFT"), (entry["canonical_sft"], ":", "SFT, canonical")):
            if reference:
                accuracy.axhline(reference["accuracy"], color="gray", linestyle=style, label=label)
        for axis in (paths, accuracy):
            _log2_axis(axis, [row["k"] for row in entry["rows"]], "k (paths sampled per question)")
            axis.legend(fontsize=8)
        paths.set_ylabel("distinct paths per question")
        paths.set_title(f"{entry['base']}: distinct reasoning paths")
        accuracy.set_ylabel("maj1@1 (%)")
        accuracy.set_title(f"{entry['base']}: accuracy")
    return figure


def _union_series(family: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The union figure's bars, label → {target: point}: SFT, own-samples RFT at each union's k, each union."""
    series: dict[str, dict[str, dict[str, Any]]] = {"SFT": {}}
    for union in family["unions"]:
        for t in union["targets"]:
            if t["sft"]:
                series["SFT"].setdefault(t["target"], t["sft"])
            if t["own"]:
                series.setdefault(f"RFT own, k={union['k']}", {}).setdefault(t["target"], t["own"])
    for union in family["unions"]:
        series[f"RFT {union['name']}"] = {t["target"]: t["union"] for t in union["targets"]}
    return {label: points for label, points in series.items() if points}


def _union_figure(plt: Any, family: dict[str, Any]) -> Any:
    targets = list(dict.fromkeys(t["target"] for union in family["unions"] for t in union["targets"]))
    series = _union_series(family)
    width = 0.8 / len(series)
    figure, axis = plt.subplots(
        figsize=(max(5.0, (0.7 * len(series) + 0.2) * len(targets)) + 1.5, 4), layout="constrained"
    )
    for offset, (label, by_target) in enumerate(series.items()):
        shift = (offset - (len(series) - 1) / 2) * width
        positions = [targets.index(target) + shift for target in by_target]
        points = list(by_target.values())
        drawn = axis.bar(positions, [p["accuracy"] for p in points], width, yerr=_errors(points), capsize=3,
                         label=label)  # fmt: skip
        axis.bar_label(drawn, fmt="%.1f", fontsize=7, label_type="center", rotation=90 if len(series) > 3 else 0)
    axis.set_xticks(range(len(targets)), targets)
    axis.set_ylabel("maj1@1 (%)")
    axis.set_title("RFT on pooled samples of several models")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _gain_figure(plt: Any, gain: dict[str, Any]) -> Any:
    points = gain["points"]
    xs, ys = [p["sft"] for p in points], [p["gain"]["value"] for p in points]
    errors = [
        [max(0.0, y - (p["gain"]["ci"] or [y, y])[0]) for p, y in zip(points, ys, strict=True)],
        [max(0.0, (p["gain"]["ci"] or [y, y])[1] - y) for p, y in zip(points, ys, strict=True)],
    ]
    figure, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    axis.errorbar(xs, ys, yerr=errors, marker="o", linestyle="none", capsize=3, color="C0")
    _label_points(axis, xs, ys, [p["base"] for p in points])
    _fit_ends(axis, gain["fit"], xs, float, "C1")
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.set_xlabel("SFT maj1@1 (%)")
    axis.set_ylabel(f"RFT (k={gain['k']}) minus SFT (points)")
    axis.set_title("RFT gain against SFT accuracy")
    return figure


def _study_figures(analysis: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each tested family's figure (no timestamps or software tag: the same numbers, the same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawers = {
        "data": _data_figure,
        "pretraining": _pretraining_figure,
        "k": _k_figure,
        "union": _union_figure,
        "gain": _gain_figure,
    }
    figures = {}
    for name, draw in drawers.items():
        if analysis[name]["tested"]:
            figure = draw(plt, analysis[name])
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
            plt.close(figure)
            figures[name] = buffer.getvalue()
    return figures

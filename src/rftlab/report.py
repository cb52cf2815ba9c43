"""Reports: tables in Markdown and plots (matplotlib, PNG) computed from a run's results.

- `write_demo_report`: the demo's table and plot.
- `write_study_report`: a scaling study's report (`report.md`, a self-contained `report.html`, `figures/`,
  `analysis.json`) from its results.json; the numbers, findings, blocks and figures come from each family of
  `rftlab.experiments`, rendered here as Markdown and HTML.

numpy, scipy and matplotlib (and rftlab.experiments) are imported on use, so importing this module (the CLI)
stays fast.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rftlab.compare import MODELS
from rftlab.data import atomic_writer, iter_jsonl, write_json

if TYPE_CHECKING:
    from rftlab.experiments.display import Block


def _accuracy_by_steps(out: Path, name: str) -> dict[int, float]:
    """Greedy accuracy of one evaluated model by number of solution steps of the test problems."""
    from rftlab.calculator import annotations

    # a toy problem records its steps; a GSM8K problem has one annotation a step
    steps = {record["id"]: record["steps"] if "steps" in record else len(annotations(record["response"]))
             for _, record in iter_jsonl(out / "data" / "test.jsonl")}  # fmt: skip
    outcomes: dict[int, list[bool]] = defaultdict(list)
    for _, prediction in iter_jsonl(out / "eval" / f"{name}.predictions.jsonl"):
        if steps.get(prediction["id"]) is not None:
            outcomes[steps[prediction["id"]]].append(prediction["correct_first"])
    return {n: 100 * sum(v) / len(v) for n, v in sorted(outcomes.items())}


def demo_table(results: dict[str, Any]) -> str:
    """The demo's result table, contrasts and verdict (Markdown)."""
    selection, config = results["selection"], results["config"]
    k = config["eval_k"]
    sampled = f" maj1@{k} | pass@{k} |" if k else ""
    rows = [
        f"| model | training data | tokens (epochs) | kept: epoch, valid. | maj1@1 (95% CI) |{sampled}",
        "|---|---|---|---|---|" + "---|---|" * bool(k),
    ]
    for name, label in MODELS.items():
        model = results[name]
        low, high = model["maj1@1_ci95"]
        data = f"{config['n_train']:,} problems" if name.startswith("sft") else f"{model['examples']:,} paths"
        kept = f"{model['kept']['epoch']:.1f}, {_validation_value(model, model['kept'])}"
        scores = f" {model['maj1@k']:.1f} | {model['pass@k']:.1f} |" if k else ""
        rows.append(
            f"| {label} | {data} | {model['tokens_seen']:,} ({model['epochs']:g}) | {kept} | "
            f"{model['maj1@1']:.1f} ({low:.1f}-{high:.1f}) |{scores}"
        )
    rows += ["", "| contrast (maj1@1) | difference | 95% CI |", "|---|---|---|"]
    for key, contrast in results["contrasts"].items():
        a, b = key.split(" - ")
        low, high = contrast["ci95"]
        rows.append(f"| {MODELS[a]} - {MODELS[b]} | {contrast['difference']:+.1f} | {low:+.1f} to {high:+.1f} |")
    rows += [
        "",
        f"**{results['verdict']['status']}**: {results['verdict']['text']}",
        "",
        f"Rejection sampling: {selection['samples']:,} paths sampled ({selection['samples_per_problem']} per train "
        f"question, T={config['temperature']}); per question {selection['correct_per_problem']:.2f} correct, "
        f"{selection['checked_per_problem']:.2f} with every equation right, {selection['distinct_per_problem']:.2f} "
        f"distinct equation lists kept; {100 * selection['coverage_by_file'][-1]:.1f}% of questions have a correct "
        "path.",
    ]
    return "\n".join(rows)


def _metric(model: dict[str, Any]) -> str:
    """The validation metric that picked a demo model's checkpoint (results before it was recorded: accuracy)."""
    return model.get("validation_metric", "accuracy")


def _validation_value(model: dict[str, Any], point: dict[str, Any]) -> str:
    metric = _metric(model)
    return f"{100 * point[metric]:.1f}%" if metric == "accuracy" else f"loss {point[metric]:.4f}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    with atomic_writer(path) as handle:
        figure.savefig(handle, format="png", dpi=110)


def _plot_accuracy(out: Path, results: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    steps: set[int] = set()
    for position, (name, label) in enumerate(MODELS.items()):
        model = results[name]
        low, high = model["maj1@1_ci95"]
        bars.bar(position, model["maj1@1"], yerr=[[model["maj1@1"] - low], [high - model["maj1@1"]]], capsize=4)
        bars.text(position, high + 1, f"{model['maj1@1']:.1f}", ha="center", fontsize=8)
        by_steps = _accuracy_by_steps(out, name)
        steps |= set(by_steps)
        lines.plot(list(by_steps), list(by_steps.values()), marker="o", label=label)
    bars.set_xticks(range(len(MODELS)), [label.replace(" at ", "\nat ") for label in MODELS.values()], fontsize=8)
    bars.set_ylabel("greedy test accuracy, maj1@1 (%), 95% CI")
    bars.set_ylim(0, 105)
    bars.set_title("RFT and SFT, compute-matched")
    lines.set_xticks(sorted(steps))
    lines.set_xlabel("solution steps")
    lines.set_ylabel("greedy test accuracy (%)")
    lines.set_ylim(0, 105)
    lines.set_title("by difficulty")
    lines.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)


def _plot_validation(results: dict[str, Any], path: Path) -> None:
    """Each model's validation accuracy (or loss) against epochs, the kept checkpoint marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), layout="constrained")
    metric = _metric(results["sft"])
    scale = 100 if metric == "accuracy" else 1
    for name, label in MODELS.items():
        curve, kept = results[name]["validation_curve"], results[name]["kept"]
        line = axes.plot([p["epoch"] for p in curve], [scale * p[metric] for p in curve], label=label)[0]
        axes.plot([kept["epoch"]], [scale * kept[metric]], marker="*", markersize=11, color=line.get_color())
    axes.set_xlabel("epochs over the model's own training data")
    axes.set_ylabel("greedy validation accuracy (%)" if metric == "accuracy" else "validation loss")
    axes.set_title("validation curves (star: the checkpoint kept)")
    axes.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)


def _demo_subject(config: dict[str, Any]) -> str:
    if "gsm8k" in config:  # a real preset's
        return f"GSM8K with {config.get('model') or 'SmolLM2-135M-Instruct'}"
    return "the toy world"


def write_demo_report(out: Path, results: dict[str, Any]) -> str:
    """Writes `out/report.md`, `out/accuracy.png` and `out/validation.png`; returns the table."""
    table = demo_table(results)
    _plot_accuracy(out, results, out / "accuracy.png")
    _plot_validation(results, out / "validation.png")
    timings = "\n".join(f"| {stage} | {seconds:.0f} |" for stage, seconds in results["seconds"].items())
    total = sum(results["seconds"].values())
    config = results["config"]
    text = "\n".join([
        f"# rftlab demo: RFT on {_demo_subject(config)}, compute-matched",
        "",
        f"SFT trains the {'model' if 'gsm8k' in config else 'pre-trained base'} for {config['epochs']:g} epochs "
        f"on the {config['n_train']:,} train problems "
        f"(one gold solution each). RFT samples k={config['k']} paths per train question from the SFT model, keeps "
        "the correct ones with distinct equation lists, and trains the *base* again, as many epochs, on the gold "
        "solutions plus those paths: more tokens. The controls match compute: SFT for RFT's tokens, RFT for SFT's. "
        f"Each model is its best checkpoint by {_metric(results['sft'])} on {config['n_valid']:,} validation problems "
        f"(held out from training) within its budget. Test: {results['test_problems']:,} problems; intervals "
        "resample them (bootstrap, 95%).",
        "",
        table,
        "",
        "![accuracy](accuracy.png)",
        "",
        "![validation curves](validation.png)",
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


def write_study_report(out: Path, results: dict[str, Any]) -> Path:
    """Writes `out/analysis.json`, `out/figures/*.png`, `out/report.md` and a self-contained `out/report.html`
    (figures embedded); returns the path of report.md. The same results give the same files."""
    from rftlab.experiments import analyse, by_section, display

    analysis = analyse(results)
    figures = _study_figures(analysis.results)
    document = analysis.json
    blocks = [
        *display.header_blocks(document),
        *display.findings_blocks(document["findings"]),
        *(block for family in by_section() for block in family.blocks(analysis.results[family.NAME], figures)),
        *display.runs_blocks(document["runs"]),
    ]
    write_json(out / "analysis.json", document)
    for family in by_section():
        path = out / "figures" / f"{family.NAME}.png"
        if family.NAME in figures:
            with atomic_writer(path) as handle:
                handle.write(figures[family.NAME])
        else:
            path.unlink(missing_ok=True)
    title = f"Study report: {document['study']['name']}"
    with atomic_writer(out / "report.html", "w") as handle:
        handle.write(_html(title, blocks, figures))
    report = out / "report.md"
    with atomic_writer(report, "w") as handle:
        handle.write(_markdown(blocks))
    return report


def _study_figures(results: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each tested family's figure (no timestamps or software tag: the same numbers, the same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rftlab.experiments import by_section

    figures = {}
    for family in by_section():
        if results[family.NAME].tested:
            figure = family.figure(plt, results[family.NAME])
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
            plt.close(figure)
            figures[family.NAME] = buffer.getvalue()
    return figures


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

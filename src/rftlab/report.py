"""Reports: tables in Markdown and plots (matplotlib, PNG) computed from a run's results."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rftlab.data import atomic_writer, iter_jsonl


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

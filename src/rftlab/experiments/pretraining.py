"""The pre-training family: SFT on all the data from each base; accuracy against pre-training loss and size.

Findings 1: accuracy rises (roughly linearly) as loss falls; loss predicts accuracy better than parameter
count. Loss beats size when its |r| is larger by `PREDICTOR_MARGIN` (a smaller margin: "direction agrees
..."; accuracy not falling with loss: "not supported"; larger models scoring lower: loss's own fit decides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
from rftlab.experiments.base import Config, Json, Planner, Role, base_names, evaluate, known_keys, mapping, sft_record
from rftlab.scaling import predictor_comparison

NAME, SECTION = "pretraining", 2
KEYS = frozenset({"bases"})


def parse(value: Any, config: Config) -> Json:
    where = f"{config.source}: experiments: {NAME}"
    spec = mapping(value, where)
    known_keys(spec, KEYS, where)
    return {"bases": base_names(spec.get("bases"), config, where)}


def requests(spec: Json, planner: Planner) -> None:
    """None: SFT models only."""


def plan(spec: Json, planner: Planner) -> None:
    for base in spec["bases"]:
        role = Role(NAME, base, "sft", epochs=planner.epochs)
        evaluate(planner, planner.sft(base), role, sft_record(base, 1.0, planner.epochs))


@dataclass
class Result:
    points: list[Json]
    """Per base: loss, parameters, pre-training tokens and SFT accuracy."""
    loss_fit: Json | None
    size_fit: Json | None
    """Accuracy against loss and against log10(parameters)."""
    comparison: Json | None
    """Which of loss and size predicts accuracy better (3+ bases with both)."""
    disagreements: list[Json]
    """Pairs of bases that loss and size order differently, and which one accuracy follows."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "points": self.points, "loss_fit": self.loss_fit, "size_fit": self.size_fit,
                "comparison": self.comparison, "disagreements": self.disagreements}  # fmt: skip


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    if spec is None:
        return a.absent(NAME, spec)
    points, found = [], []
    for base in a.family_bases(spec, models, NAME):
        model = a.sft(models, NAME, base)
        if model is not None:
            info = context.bases.get(base, {})
            points.append({"base": base, "loss": info.get("loss"), "parameters": info.get("parameters"),
                           "pretrain_tokens": info.get("pretrain_tokens"), **model.point()})  # fmt: skip
            found.append(model)
    if not points:
        return a.absent(NAME, spec)
    with_loss = [i for i, p in enumerate(points) if p["loss"] is not None]
    with_size = [i for i, p in enumerate(points) if p["parameters"]]
    both = [i for i in with_loss if i in with_size]
    loss_fit = a.fit([points[i]["loss"] for i in with_loss], [found[i] for i in with_loss])
    size_fit = a.fit([math.log10(points[i]["parameters"]) for i in with_size], [found[i] for i in with_size])
    comparison = None
    losses, sizes = [points[i]["loss"] for i in both], [points[i]["parameters"] for i in both]
    if len(both) >= 3 and min(losses) < max(losses) and min(sizes) < max(sizes):
        result = predictor_comparison([points[i]["accuracy"] for i in both], losses, sizes)
        comparison = {"better": result.better, "margin": result.margin, "loss_r": result.loss_fit.r,
                      "size_r": result.size_fit.r, "n": len(both)}  # fmt: skip
    pairs = []
    for i, j in combinations(both, 2):
        first, second = points[i], points[j]
        if (first["loss"] - second["loss"]) * (first["parameters"] - second["parameters"]) > 0:  # lower loss, smaller
            low, high = (i, j) if first["loss"] < second["loss"] else (j, i)
            difference = a.difference(found[low], found[high])
            pairs.append({"lower_loss": points[low]["base"], "larger": points[high]["base"], "difference": difference,
                          "follows": "loss" if difference["value"] > 0 else "size"})  # fmt: skip
    return Result(points, loss_fit, size_fit, comparison, pairs)


# Findings


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    return [_loss_finding(result), _predictor_finding(result)]


def _loss_finding(pre: Result | a.Untested) -> Json:
    claim = "Lower pre-training loss gives higher SFT accuracy, roughly linearly"
    if not isinstance(pre, Result):
        return a.untested(1, claim, pre.reason)
    fit, with_loss = pre.loss_fit, [p for p in pre.points if p["loss"] is not None]
    if fit is None:
        reason = f"{len(with_loss)} base(s) with a pre-training loss; a fit needs 2 different losses"
        return a.untested(1, claim, reason)
    verdict = a.fit_verdict(fit, -1, linear=True)
    points = ", ".join(f"{p['base']} loss {p['loss']:.3f}: {a.acc(p)}" for p in with_loss)
    sentences = [a.sentence(a.fit_text(fit, "SFT accuracy", "unit of pre-training loss")), f"Bases: {points}."]
    return a.finding(1, claim, verdict, sentences + a.linearity(verdict, fit))


def _pair_text(pre: Result, pair: Json) -> str:
    points = {p["base"]: p for p in pre.points}
    low, high = points[pair["lower_loss"]], points[pair["larger"]]
    return (
        f"{low['base']} (loss {low['loss']:.3f}, {a.count(low['parameters'])} parameters) {a.acc(low)} vs "
        f"{high['base']} (loss {high['loss']:.3f}, {a.count(high['parameters'])}) {a.acc(high)}: "
        f"{a.diff_text(pair['difference'])}"
    )


def _predictor_finding(pre: Result | a.Untested) -> Json:
    claim = "Pre-training loss predicts SFT accuracy better than parameter count"
    if not isinstance(pre, Result):
        return a.untested(1, claim, pre.reason)
    comparison = pre.comparison
    if comparison is None:
        n = sum(p["loss"] is not None and bool(p["parameters"]) for p in pre.points)
        reason = f"{n} base(s) have both a loss and a parameter count; the comparison needs 3 with different values"
        return a.finding(1, claim, a.TOO_FEW if n == 2 else a.NOT_TESTED, [a.sentence(reason)])
    better, margin = comparison["better"], comparison["margin"]
    size_backwards = comparison["size_r"] < 0  # larger models score lower: size is no predictor in the paper's sense
    if margin == 0 or comparison["loss_r"] >= 0:
        verdict = a.NOT_SUPPORTED
    elif size_backwards and pre.loss_fit is not None:  # then loss is the only predictor: as strong as its own fit
        verdict = a.fit_verdict(pre.loss_fit, -1)
    elif better == "loss":
        verdict = a.SUPPORTED if margin >= a.PREDICTOR_MARGIN else a.AGREES
    else:
        verdict = a.CONTRADICTED if margin >= a.PREDICTOR_MARGIN else a.NOT_SUPPORTED
    text = (
        f"Over {comparison['n']} bases accuracy correlates with loss at r = {comparison['loss_r']:+.2f} and with "
        f"log10(parameters) at r = {comparison['size_r']:+.2f}: {better} is the stronger predictor by "
        f"{margin:.2f} in |r|"
    )
    if margin < a.PREDICTOR_MARGIN:
        text += f", less than the {a.PREDICTOR_MARGIN:.2f} margin that separates them"
    sentences = [text + "."]
    if size_backwards:
        sentences.append(
            f"Larger models score lower here (r = {comparison['size_r']:+.2f} against log10(parameters)), the "
            "opposite of the paper's size ordering, so parameter count does not predict accuracy in its sense."
        )
    if comparison["loss_r"] >= 0:
        sentences.append(f"Accuracy does not fall as loss falls (r = {comparison['loss_r']:+.2f}), against the paper.")
    if pre.disagreements:
        follows = sum(pair["follows"] == "loss" for pair in pre.disagreements)
        sentences.append(
            f"Loss and size order {len(pre.disagreements)} pair(s) of bases differently; accuracy follows loss in "
            f"{follows}: " + "; ".join(_pair_text(pre, pair) for pair in pre.disagreements) + "."
        )
    else:
        sentences.append("No two bases are ordered differently by loss and by parameter count.")
    return a.finding(1, claim, verdict, sentences)


# Report


def blocks(pre: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("2. Pre-training loss and model size", pre)
    if not isinstance(pre, Result):
        return blocks
    rows = [
        [p["base"], d.num(p["loss"], ".3f"), d.num(p["parameters"]), d.num(p["pretrain_tokens"]), d.pct(p)]
        for p in pre.points
    ]
    blocks += [
        ("table", ["base", "loss", "parameters", "pre-training tokens", "SFT maj1@1 (95% CI)"], rows),
        ("p", d.fit_line("Accuracy against loss", pre.loss_fit, "points per unit of loss")),
        ("p", d.fit_line("Accuracy against log10(parameters)", pre.size_fit, "points per decade")),
    ]
    comparison = pre.comparison
    if comparison:
        blocks.append(("p", f"Better predictor: {comparison['better']} (|r| margin {comparison['margin']:.2f}, "
                            f"n = {comparison['n']})."))  # fmt: skip
    pairs = [[p["lower_loss"], p["larger"], d.diff(p["difference"]), p["follows"]] for p in pre.disagreements]
    if pairs:
        header = ["lower loss", "more parameters", "accuracy difference (95% CI)", "accuracy follows"]
        blocks += [("p", "Pairs of bases ordered differently by loss and by size:"), ("table", header, pairs)]
    return blocks + d.figure(figures, NAME, "SFT accuracy against pre-training loss and parameter count")


def figure(plt: Any, pre: Result) -> Any:
    drawing, (by_loss, by_size) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axis, key, fit, transform in (
        (by_loss, "loss", pre.loss_fit, float),
        (by_size, "parameters", pre.size_fit, math.log10),
    ):
        points = [p for p in pre.points if p[key]]
        if not points:
            continue
        xs, ys = [p[key] for p in points], [p["accuracy"] for p in points]
        axis.errorbar(xs, ys, yerr=d.errors(points), marker="o", linestyle="none", capsize=3, color="C0")
        d.label_points(axis, xs, ys, [p["base"] for p in points])
        d.fit_ends(axis, fit, xs, transform, "C1")
        axis.set_ylabel("SFT maj1@1 (%)")
    by_loss.set_xlabel("pre-training loss (held out)")
    by_loss.invert_xaxis()
    by_size.set_xscale("log")
    by_size.set_xlabel("parameters")
    by_loss.set_title("accuracy against loss")
    by_size.set_title("accuracy against size")
    return drawing

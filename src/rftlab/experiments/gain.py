"""The gain family (analysis only, over the k and union families' runs): RFT's gain against SFT accuracy.

Finding 4: weaker models gain more from RFT. The gain is compared at the first union's k, else at the k
family's largest de-duplicated k; its fit against SFT accuracy needs 3 bases with different SFT accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
import rftlab.experiments.union as union
from rftlab.experiments.base import Config, Json, Planner
from rftlab.scaling import bootstrap_gain_fit, gain_fit

NAME, SECTION = "gain", 5
KEYS = None


def parse(value: Any, config: Config) -> None:
    """None: no study-file section."""


def requests(spec: Any, planner: Planner) -> None:
    """None: no cells."""


def plan(spec: Any, planner: Planner) -> None:
    """None: no cells."""


@dataclass
class Result:
    k: int
    points: list[Json]
    """Per base: SFT and RFT accuracy and the gain."""
    fit: Json | None
    """The gain against SFT accuracy (3+ bases)."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "k": self.k, "points": self.points, "fit": self.fit}


def _k(experiments: Json) -> int | None:
    """The k at which RFT gains are compared: the first union's, else the k family's largest de-duplicated k."""
    unions = union.specs(experiments.get("union"))
    if unions and unions[0].get("k"):
        return int(unions[0]["k"])
    ks = experiments.get("k", {}).get("k") or []
    return int(max(ks)) if ks else None


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    k = _k(context.experiments)
    if k is None:
        return a.Untested("the study has neither a union nor a k experiment with de-duplicated RFT")
    points, pairs = [], []
    for base in context.base_names:
        sft, rft = a.sft(models, None, base), a.own_rft(models, None, base, k=k)
        if sft and rft:
            points.append({"base": base, "sft": sft.accuracy, "rft": rft[0].accuracy,
                           "gain": a.difference(rft[0], sft)})  # fmt: skip
            pairs.append((sft, rft[0]))
    if not points:
        return a.Untested(f"no base has both SFT and own-samples RFT at k={k}")
    sft_accuracy = [p["sft"] for p in points]
    fit = _fit(pairs) if len(points) >= 3 and min(sft_accuracy) < max(sft_accuracy) else None
    return Result(k, points, fit)


def _fit(pairs: list[tuple[a.Model, a.Model]]) -> Json:
    """The gain against SFT accuracy: OLS with its t interval, and the bootstrap interval over seeds and test
    problems where every model has per-problem scores on the same problems."""
    result = gain_fit([sft.accuracy for sft, _ in pairs], [rft.accuracy for _, rft in pairs])
    scores = a.score_stack([model for pair in pairs for model in pair])
    ci = None
    if scores is not None:
        boot = bootstrap_gain_fit(scores[0::2], scores[1::2], resamples=a.RESAMPLES, level=a.LEVEL, seed=a.SEED)
        ci = [boot.slope_low, boot.slope_high]
    return {"n": result.n, "slope": result.slope, "intercept": result.intercept, "r": result.r, "r2": result.r2,
            "p_value": result.p_value, "slope_ci": ci, "slope_ci_t": list(result.slope_ci)}  # fmt: skip


def findings(gain: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    claim = "Weaker models gain more from RFT"
    if not isinstance(gain, Result):
        return [a.untested(4, claim, gain.reason)]
    points = ", ".join(f"{p['base']} {p['gain']['value']:+.1f} from SFT {p['sft']:.1f}%" for p in gain.points)
    sentences = [f"RFT gains at k={gain.k}: {points}."]
    fit = gain.fit
    if fit is None:
        sentences.append(f"{len(gain.points)} base(s): a fit needs 3 with different SFT accuracies.")
        return [a.finding(4, claim, a.TOO_FEW, sentences)]
    sentences.append(a.fit_text(fit, "The gain", "point of SFT accuracy", digits=2) + ".")
    return [a.finding(4, claim, a.fit_verdict(fit, -1), sentences)]


def blocks(gain: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("5. RFT gain against SFT accuracy", gain)
    if not isinstance(gain, Result):
        return blocks
    rows = [[p["base"], f"{p['sft']:.1f}", f"{p['rft']:.1f}", d.diff(p["gain"])] for p in gain.points]
    blocks += [
        ("table", ["base", "SFT", f"RFT k={gain.k}", "gain (95% CI)"], rows),
        ("p", d.fit_line("Gain against SFT accuracy", gain.fit, "points per point")),
    ]
    return blocks + d.figure(figures, NAME, "RFT gain over SFT against SFT accuracy")


def figure(plt: Any, gain: Result) -> Any:
    points = gain.points
    xs, ys = [p["sft"] for p in points], [p["gain"]["value"] for p in points]
    errors = [
        [max(0.0, y - (p["gain"]["ci"] or [y, y])[0]) for p, y in zip(points, ys, strict=True)],
        [max(0.0, (p["gain"]["ci"] or [y, y])[1] - y) for p, y in zip(points, ys, strict=True)],
    ]
    drawing, axis = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    axis.errorbar(xs, ys, yerr=errors, marker="o", linestyle="none", capsize=3, color="C0")
    d.label_points(axis, xs, ys, [p["base"] for p in points])
    d.fit_ends(axis, gain.fit, xs, float, "C1")
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.set_xlabel("SFT maj1@1 (%)")
    axis.set_ylabel(f"RFT (k={gain.k}) minus SFT (points)")
    axis.set_title("RFT gain against SFT accuracy")
    return drawing

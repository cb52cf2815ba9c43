"""The forecast family (analysis only, over the data and k families' runs): do laws fitted on small runs
predict the larger runs of the same study?

- SFT on all the data, from the fractions up to 1/4: the log-linear law in examples (`data`'s fit), read at
  the full data's examples.
- RFT at each k above 8, from the de-duplicated RFT runs up to k = 8: accuracy against distinct paths per
  question (`k`'s fit), read at the distinct paths that k's samples gave (known before RFT trains on them).

Each prediction's interval is a paired bootstrap over seeds and test problems of the fitted runs (the observed
run's own noise is not in it). A forecast is good when it is within `TOLERANCE` points of the run and its
interval covers the run (issue 15's goal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
from rftlab.experiments.base import Config, Json, Planner
from rftlab.scaling import bootstrap_extrapolation

NAME, SECTION = "forecast", 7
KEYS = None
SFT_UP_TO, RFT_UP_TO = 1 / 4, 8
TOLERANCE = 3.0
"""Points of accuracy a good forecast may miss by."""
CLAIM = "Laws fitted on the small runs predict the large ones (within 3 points, intervals covering)"


def parse(value: Any, config: Config) -> None:
    """None: no study-file section."""


def requests(spec: Any, planner: Planner) -> None:
    """None: no cells."""


def plan(spec: Any, planner: Planner) -> None:
    """None: no cells."""


@dataclass
class Result:
    forecasts: list[Json]
    """One per forecast run: target, base, law, fitted_on, k, at, predicted, interval, observed, error, good."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "forecasts": self.forecasts}


def _forecast(target: str, base: str, law: str, fitted: list[tuple[float, float, a.Model]], at: float,
              observed: a.Model) -> Json:  # fmt: skip
    """`fitted`: (label, x, model) per fitted run; the line through them read at x = `at`."""
    x, models = [item[1] for item in fitted], [item[2] for item in fitted]
    scores = a.score_stack(models)
    if scores is None:
        slope, intercept = np.polyfit(x, [m.accuracy for m in models], 1)
        predicted, interval = float(intercept + slope * at), None
    else:
        predicted, low, high = bootstrap_extrapolation(x, scores, at, resamples=a.RESAMPLES, level=a.LEVEL,
                                                       seed=a.SEED)  # fmt: skip
        interval = [low, high]
    error = predicted - observed.accuracy
    covered = interval is not None and interval[0] <= observed.accuracy <= interval[1]
    return {"target": target, "base": base, "law": law, "fitted_on": [item[0] for item in fitted],
            "k": observed.k if target == "rft_accuracy" else None, "at": at, "predicted": predicted,
            "interval": interval, "observed": observed.accuracy, "error": error,
            "covered": covered, "good": covered and abs(error) <= TOLERANCE}  # fmt: skip


def _sft(models: list[a.Model], base: str) -> Json | None:
    """SFT on all the data from the fractions up to `SFT_UP_TO` (the best epoch rule at each, as `data` plots)."""
    found = [m for m in a.find(models, "data", base, "sft") if m.mean("examples")]
    best = {share: max((m for m in found if m.fraction == share), key=lambda m: m.accuracy)
            for share in {m.fraction for m in found}}  # fmt: skip
    small = [(share, math.log2(m.mean("examples") or 1), m) for share, m in sorted(best.items()) if share <= SFT_UP_TO]
    if 1.0 not in best or len({x for _, x, _ in small}) < 2:
        return None
    full = best[1.0]
    return _forecast("sft_full_data", base, "log-linear in examples", small, math.log2(full.mean("examples") or 1),
                     full)  # fmt: skip


def _rft(models: list[a.Model], base: str) -> list[Json]:
    """RFT at each k above `RFT_UP_TO`, from accuracy against distinct paths up to it."""
    runs = [(m.k or 0, m.mean("distinct_per_problem", rft_data=True), m) for m in a.own_rft(models, "k", base)]
    runs = [(k, paths, m) for k, paths, m in runs if paths is not None]
    small = [(k, paths, m) for k, paths, m in runs if k <= RFT_UP_TO]
    if len({paths for _, paths, _ in small}) < 2:
        return []
    return [_forecast("rft_accuracy", base, "linear in distinct paths", small, paths, m)
            for k, paths, m in runs if k > RFT_UP_TO]  # fmt: skip


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    forecasts = []
    for base in context.base_names:
        if (sft := _sft(models, base)) is not None:
            forecasts.append(sft)
        forecasts.extend(_rft(models, base))
    if not forecasts:
        return a.Untested(f"no data family with fractions up to 1/4 and the full data, and no k family with "
                          f"runs on both sides of k = {RFT_UP_TO}")  # fmt: skip
    return Result(forecasts)


def _describe(item: Json) -> str:
    if item["target"] == "sft_full_data":
        fitted = ", ".join(a.fraction_text(share) for share in item["fitted_on"])
        where = f"{item['base']} SFT on all the data from fractions {fitted}"
    else:
        fitted = ", ".join(map(str, item["fitted_on"]))
        where = f"{item['base']} RFT at {item['at']:.2f} distinct paths per question from k = {fitted}"
    return (
        f"{where}: predicted {item['predicted']:.1f}% ({a.ci_text(item['interval'])}), observed "
        f"{item['observed']:.1f}%, error {item['error']:+.1f}"
    )


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    if not isinstance(result, Result):
        return [a.untested("beyond", CLAIM, result.reason)]
    good = sum(item["good"] for item in result.forecasts)
    verdict = a.SUPPORTED if good == len(result.forecasts) else a.NOT_SUPPORTED if good == 0 else a.MIXED
    sentences = [f"{good} of {len(result.forecasts)} forecasts within {TOLERANCE:g} points with the observation "
                 "inside their interval."] + [_describe(item) + "." for item in result.forecasts]  # fmt: skip
    return [a.finding("beyond", CLAIM, verdict, sentences)]


def blocks(result: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("7. Forecasts: laws fitted on small runs against the large runs", result)
    if not isinstance(result, Result):
        return blocks
    rows = [[item["base"], item["target"] + (f" at k={item['k']}" if item["k"] else ""), item["law"],
             ", ".join(a.fraction_text(f) if item["target"] == "sft_full_data" else str(f) for f in item["fitted_on"]),
             f"{item['predicted']:.1f} ({a.ci_text(item['interval'])})", f"{item['observed']:.1f}",
             f"{item['error']:+.1f}", "yes" if item["good"] else "no"] for item in result.forecasts]  # fmt: skip
    blocks.append(("table", ["base", "target", "law", "fitted on", "predicted", "observed", "error", "good"], rows))
    return blocks + d.figure(figures, NAME, "Forecast against observed accuracy")


def figure(plt: Any, result: Result) -> Any:
    drawing, axis = plt.subplots(figsize=(5.2, 5.0), layout="constrained")
    for item in result.forecasts:
        low, high = item["interval"] or (item["predicted"], item["predicted"])
        axis.errorbar(item["observed"], item["predicted"], yerr=[[item["predicted"] - low], [high - item["predicted"]]],
                      marker="o" if item["target"] == "sft_full_data" else "s", capsize=3,
                      color="C0" if item["target"] == "sft_full_data" else "C1")  # fmt: skip
    values = [v for item in result.forecasts for v in (item["observed"], item["predicted"])]
    ends = [min(values) - 3, max(values) + 3]
    axis.plot(ends, ends, color="gray", linewidth=0.8)
    axis.set_xlabel("observed maj1@1 (%)")
    axis.set_ylabel("forecast maj1@1 (%)")
    axis.set_title("Forecast against observed\n(circles: SFT on all data; squares: RFT at k > 8)")
    return drawing

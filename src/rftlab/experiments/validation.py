"""The validation family (analysis only, over the k family's runs): the curves that picked each checkpoint.

With a validation split every SFT and RFT model is its best checkpoint on it; a comparison is fair when each
curve has peaked within its budget. Per model of the k family (SFT, RFT at each k, the controls): the kept
epoch, the best and the last value of each seed's curve, and whether the best came before the budget's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rftlab.experiments.analysis as a
import rftlab.experiments.display as d
from rftlab.experiments.base import Config, Json, Planner

NAME, SECTION = "validation", 6
KEYS = None
FAMILY = "k"
"""The family whose models' curves are shown: SFT, RFT and the compute-matched controls of one base."""


def parse(value: Any, config: Config) -> None:
    """None: no study-file section."""


def requests(spec: Any, planner: Planner) -> None:
    """None: no cells."""


def plan(spec: Any, planner: Planner) -> None:
    """None: no cells."""


@dataclass
class Result:
    models: list[Json]
    """Per model: base, variant, k, metric and each seed's curve with its kept point."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "models": self.models}


def _entry(model: a.Model, role: Any) -> Json | None:
    curves = [run.get("validation") for run in model.runs]
    if not all(curves):
        return None
    seeds = [{"seed": run.get("seed", 0), "curve": curve["curve"], "best": curve["best"]}
             for run, curve in zip(model.runs, curves, strict=True)]  # fmt: skip
    peaked = sum(seed["best"]["step"] < seed["curve"][-1]["step"] for seed in seeds)
    return {"name": model.name, "base": role.base, "variant": role.variant, "k": role.k,
            "metric": curves[0]["metric"], "seeds": seeds, "peaked": peaked}  # fmt: skip


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    entries = [entry for m in models if (role := m.role(FAMILY)) and (entry := _entry(m, role))]
    if not entries:
        return a.Untested("no model of the k experiment has a validation curve (the study has no validation split)")
    return Result(entries)


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    """None: the curves qualify the other findings (a model kept at its budget's end may not have converged)."""
    return []


def _value(metric: str, point: Json) -> str:
    return f"{100 * point['accuracy']:.1f}%" if metric == "accuracy" else f"{point['loss']:.4f}"


def blocks(result: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("6. Validation curves: the checkpoint each model kept", result)
    if not isinstance(result, Result):
        return blocks
    header = ["model", "seed", "metric", "kept: epoch, value", "last: epoch, value"]
    rows = [
        [entry["name"], str(seed["seed"]), entry["metric"],
         f"{seed['best']['epoch']:.1f}, {_value(entry['metric'], seed['best'])}",
         f"{seed['curve'][-1]['epoch']:.1f}, {_value(entry['metric'], seed['curve'][-1])}"]
        for entry in result.models
        for seed in entry["seeds"]
    ]  # fmt: skip
    runs = sum(len(entry["seeds"]) for entry in result.models)
    peaked = sum(entry["peaked"] for entry in result.models)
    summary = (f"{peaked} of {runs} runs kept a checkpoint before the end of their budget (their curve peaked); "
               "the others kept the last one and may gain from a larger budget.")  # fmt: skip
    return [
        *blocks,
        ("p", summary),
        ("table", header, rows),
        *d.figure(figures, NAME, "Validation curves of SFT, RFT and the controls (star: the kept checkpoint)"),
    ]


def figure(plt: Any, result: Result) -> Any:
    bases = list(dict.fromkeys(entry["base"] for entry in result.models))
    drawing, axes = plt.subplots(1, len(bases), figsize=(6.4 * len(bases), 4.2), layout="constrained", squeeze=False)
    for axis, base in zip(axes[0], bases, strict=True):
        entries = [entry for entry in result.models if entry["base"] == base]
        metric = entries[0]["metric"]
        scale = 100 if metric == "accuracy" else 1
        for number, entry in enumerate(entries):
            for index, seed in enumerate(entry["seeds"]):
                epochs = [point["epoch"] for point in seed["curve"]]
                values = [scale * point[metric] for point in seed["curve"]]
                axis.plot(epochs, values, color=f"C{number % 10}", linewidth=1,
                          label=entry["name"] if index == 0 else None)  # fmt: skip
                axis.plot(seed["best"]["epoch"], scale * seed["best"][metric], marker="*", markersize=10,
                          color=f"C{number % 10}")  # fmt: skip
        axis.set_xlabel("epoch")
        axis.set_ylabel("greedy validation accuracy (%)" if metric == "accuracy" else "validation loss")
        axis.set_title(f"{base}: validation curves")
        axis.legend(fontsize=7)
    return drawing

"""The study report: numbers recovered from synthetic results with known parameters, verdicts, and the files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rftlab.experiments import analyse_study
from rftlab.experiments.analysis import CONTRADICTED, MIXED, NOT_TESTED, PARTLY, SUPPORTED, TOO_FEW
from rftlab.experiments.base import Role
from rftlab.report import write_study_report

PROBLEMS = 400
TRAIN = 4000
LOSSES = {"b1": 0.50, "b2": 0.45, "b3": 0.40, "b4": 0.35, "b5": 0.30}
PARAMETERS = {"b1": 1e6, "b2": 4e6, "b3": 2e6, "b4": 8e6, "b5": 3e6}  # not in the order of the losses


def sft_accuracy(base: str) -> float:
    """SFT accuracy exactly linear in the loss: 100 - 100·loss."""
    return 100 - 100 * LOSSES[base]


def correct(accuracy: float) -> list[int]:
    """A 0/1 vector whose mean is exactly `accuracy` percent (the first problems right)."""
    right = accuracy * PROBLEMS / 100
    assert right == round(right)
    return [1] * round(right) + [0] * (PROBLEMS - round(right))


class Study:
    """Builds a results.json with known accuracies; each model is run once per seed, seed accuracies a ∓ spread.
    `named`: every run has a `union` field (the current form), else none (the older single-union form)."""

    def __init__(self, seeds: tuple[int, ...] = (0,), spread: float = 0.0, *, named: bool = False) -> None:
        self.seeds, self.spread, self.runs, self.experiments = seeds, spread, [], {}
        self.named = named

    def add(self, name: str, accuracy: float, families: list[str], **fields: object) -> None:
        offsets = [self.spread * (2 * i - (len(self.seeds) - 1)) for i in range(len(self.seeds))]
        for seed, offset in zip(self.seeds, offsets, strict=True):
            record = {
                "stage": "sft",
                "world": "default",
                "fraction": 1.0,
                "epochs": 3.0,
                "budget": "epochs",
                "k": None,
                "dedup": None,
                "sources": [],
                "rft_data": None,
                "examples": TRAIN,
                "tokens": 100_000,
                **({"union": None} if self.named else {}),
                **fields,
            }
            self.runs.append(
                {
                    "name": f"{name}-s{seed}",
                    "seed": seed,
                    "families": families,
                    **record,
                    "maj1@1": accuracy + offset,
                    "correct": correct(accuracy + offset),
                    "eval_k": None,
                    "maj1@k": None,
                    "pass@k": None,
                }
            )

    def sft(self, base: str, accuracy: float, families: list[str], **fields: object) -> None:
        label = "".join(f"-{key}{value}" for key, value in fields.items() if key != "examples")
        self.add(f"sft-{base}{label}", accuracy, families, base=base, **fields)

    def rft(self, base: str, k: int, accuracy: float, distinct: float, families: list[str], **fields: object) -> None:
        selected = round(distinct * TRAIN)
        rft_data = {
            "problems": TRAIN,
            "samples_per_problem": k,
            "correct_per_problem": 0.5 * k,
            "checked_per_problem": 0.4 * k,
            "distinct_per_problem": distinct,
            "selected": selected,
        }
        sources, union = fields.pop("sources", [base]), fields.pop("union", None)
        pooled = [union or "union"] if sources != [base] else []
        label = "-".join([base, f"k{k}", *pooled, *(f"{key}{value}" for key, value in fields.items())])
        self.add(
            f"rft-{label}",
            accuracy,
            families,
            stage="rft",
            base=base,
            k=k,
            dedup=fields.pop("dedup", True),
            sources=sources,
            rft_data=rft_data,
            examples=TRAIN + selected,
            tokens=300_000,
            **({"union": union} if union else {}),
            **fields,
        )

    def results(self, bases: dict[str, float | None] | None = None) -> dict:
        losses = LOSSES if bases is None else bases
        return {
            "format": "rftlab.study-results/1",
            "name": "synthetic",
            "config_file": "studies/synthetic.yaml",
            "data": {"kind": "toyworld", "train": TRAIN, "test": PROBLEMS},
            "seeds": list(self.seeds),
            "bases": [
                {
                    "name": name,
                    "preset": "m",
                    "model": None,
                    "parameters": PARAMETERS[name],
                    "pretrain_tokens": 1_000_000,
                    "loss": loss,
                }
                for name, loss in losses.items()
            ],
            "runs": self.runs,
            "experiments": self.experiments,
            "cells": {"total": len(self.runs), "ran": len(self.runs), "seconds": 1234.5},
        }


def add_pretraining(study: Study, bases: tuple[str, ...] = tuple(LOSSES)) -> None:
    study.experiments["pretraining"] = {"bases": list(bases)}
    for base in bases:
        study.sft(base, sft_accuracy(base), ["pretraining", "data", "k", "union"])


def add_data(study: Study, slopes: dict[str, float], fractions: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2)) -> None:
    """SFT on fractions: the better epoch rule reaches full-data accuracy + slope·log2(fraction)."""
    study.experiments["data"] = {"bases": list(slopes), "fractions": [*fractions, 1.0], "epochs": "both"}
    for base, slope in slopes.items():
        for fraction in fractions:
            best = sft_accuracy(base) + slope * math.log2(fraction)
            fixed, scaled = (best - 4, best) if fraction < 0.5 else (best, best - 2)
            for epochs, accuracy in ((3.0, fixed), (3.0 / fraction, scaled)):
                study.sft(base, accuracy, ["data"], fraction=fraction, epochs=epochs, examples=round(TRAIN * fraction))


def add_data_rules(
    study: Study, base: str, fixed: float, scaled: float, fractions: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2)
) -> None:
    """SFT on fractions under both epoch rules: full-data accuracy + slope·log2(fraction), one slope per rule."""
    study.experiments["data"] = {"bases": [base], "fractions": [*fractions, 1.0], "epochs": "both"}
    for fraction in fractions:
        for epochs, slope in ((3.0, fixed), (3.0 / fraction, scaled)):
            accuracy = sft_accuracy(base) + slope * math.log2(fraction)
            study.sft(base, accuracy, ["data"], fraction=fraction, epochs=epochs, examples=round(TRAIN * fraction))


K_DISTINCT = {1: 1.25, 2: 1.5, 4: 2.0, 8: 3.0}


def add_k(study: Study, base: str = "b3") -> None:
    """RFT accuracy = 58 + 4·(distinct paths per question); no-dedup, canonical and equal-token rows at k=8."""
    study.experiments["k"] = {
        "bases": [base],
        "k": list(K_DISTINCT),
        "no_dedup": [8],
        "canonical": [8],
        "equal_tokens": [8],
    }
    for k, distinct in K_DISTINCT.items():
        study.rft(base, k, 58 + 4 * distinct, distinct, ["k", "union"] if k == 4 else ["k"])
    study.rft(base, 8, 68, 5.0, ["k"], dedup=False)
    study.sft(base, 55, ["k"], world="canonical")
    study.rft(base, 8, 56, 1.0, ["k"], world="canonical")
    study.rft(base, 8, 65, 3.0, ["k"], budget="tokens", epochs=None)


def add_sft_at_rft_tokens(study: Study, base: str = "b3", accuracy: float = 63) -> None:
    """SFT for the tokens of RFT at k=8 (after add_k: RFT scores 58 + 4·3 = 70 there)."""
    study.experiments["k"]["sft_at_rft_tokens"] = [8]
    control = Role("k", base, "sft at rft tokens", 8).to_json()  # results of today's code carry roles
    study.add(f"sft-{base}-at-rft-{base}-k8", accuracy, ["k"], base=base, budget="tokens", epochs=None,
              tokens=250_000, roles=[control])  # fmt: skip


def add_union(study: Study, union: dict[str, float]) -> None:
    """Own RFT at k=4: b1 58, b2 62, b3 66 (from add_k), b5 74 (gain = 18 - 0.2·SFT); unions as given."""
    sources = list(LOSSES)
    study.experiments["union"] = {"sources": sources, "k": 4, "targets": list(union)}
    for base, accuracy in (("b1", 58), ("b2", 62), ("b5", 74)):
        study.rft(base, 4, accuracy, 2.0, ["union"])
    for base, accuracy in union.items():
        study.rft(base, 4, accuracy, 6.0, ["union"], sources=sources)


def add_unions(study: Study, unions: dict[str, tuple[list[str], int, dict[str, float]]]) -> None:
    """Named unions (name: sources, k, target accuracies) in the current form; own RFT at k=4 as in add_union."""
    study.experiments["union"] = [
        {"name": name, "sources": sources, "k": k, "targets": list(targets)}
        for name, (sources, k, targets) in unions.items()
    ]
    for base, accuracy in (("b1", 58), ("b2", 62), ("b5", 74)):
        study.rft(base, 4, accuracy, 2.0, ["union"])
    for name, (sources, k, targets) in unions.items():
        for base, accuracy in targets.items():
            study.rft(base, k, accuracy, 6.0, ["union"], sources=sources, union=name)


U13B, U33B = ["b1", "b2", "b3", "b4"], list(LOSSES)
TWO_UNIONS = {"U13B": (U13B, 4, {"b2": 65, "b3": 72}), "U33B": (U33B, 8, {"b3": 71})}
"""U13B beats own RFT on b2 (65 vs 62) and b3 (72 vs 70 at k=8); U33B (5 models, k=8) too on b3 (71), but
scores below U13B there."""


def named_study(unions: dict[str, tuple[list[str], int, dict[str, float]]]) -> dict:
    study = Study(named=True)
    add_pretraining(study)
    add_k(study)
    add_unions(study, unions)
    return study.results()


def full_study(seeds: tuple[int, ...] = (0,), spread: float = 0.0, union: dict[str, float] | None = None) -> dict:
    study = Study(seeds, spread)
    add_pretraining(study)
    add_data(study, {"b3": 6.0, "b5": 3.0})
    add_k(study)
    add_union(study, union or {"b2": 65, "b3": 72})
    return study.results()


def by_claim(analysis: dict, start: str) -> dict:
    (finding,) = [f for f in analysis["findings"] if f["claim"].startswith(start)]
    return finding


@pytest.fixture(scope="module")
def full() -> dict:
    return analyse_study(full_study())


def test_data_fit_recovers_slope_per_doubling_and_the_better_epoch_rule(full):
    b3, b5 = full["data"]["bases"]
    assert b3["fit"]["slope"] == pytest.approx(6.0) and b3["fit"]["r2"] == pytest.approx(1.0)
    assert b5["fit"]["slope"] == pytest.approx(3.0)
    low, high = b3["fit"]["slope_ci"]
    assert low <= 6.0 <= high and high - low < 3
    assert [p["best_rule"] for p in b3["points"]] == ["scaled", "scaled", "fixed", "fixed = scaled"]
    assert [p["accuracy"] for p in b3["points"]] == pytest.approx([42, 48, 54, 60])
    assert [p["examples"] for p in b3["points"]] == [500, 1000, 2000, 4000]
    finding = by_claim(full, "SFT accuracy rises log-linearly")
    assert finding["verdict"] == SUPPORTED
    assert "rises 6.0 points per doubling of examples" in finding["sentences"][0]
    assert "R² = 1.00" in finding["sentences"][0]
    shrink = by_claim(full, "The benefit of more data shrinks")
    assert (
        shrink["verdict"] == SUPPORTED
        and "b5) is 3.0 points per doubling below that of the weakest (b3)" in shrink["sentences"][1]
    )


def test_loss_predicts_accuracy_and_size_does_not(full):
    pre = full["pretraining"]
    assert pre["loss_fit"]["slope"] == pytest.approx(-100.0)
    assert pre["loss_fit"]["r"] == pytest.approx(-1.0)
    assert pre["comparison"]["better"] == "loss"
    assert abs(pre["size_fit"]["r"]) < 0.9 and pre["comparison"]["margin"] > 0.1
    pairs = {(p["lower_loss"], p["larger"]) for p in pre["disagreements"]}
    assert pairs == {("b3", "b2"), ("b5", "b2"), ("b5", "b4")}
    assert all(p["follows"] == "loss" for p in pre["disagreements"])
    assert by_claim(full, "Lower pre-training loss")["verdict"] == SUPPORTED
    predictor = by_claim(full, "Pre-training loss predicts")
    assert predictor["verdict"] == SUPPORTED
    assert "r = -1.00" in predictor["sentences"][0] and "accuracy follows loss in 3" in predictor["sentences"][1]


def test_larger_models_scoring_lower_leave_loss_the_predictor(monkeypatch):
    shrinking = {"b1": 9e6, "b2": 7e6, "b3": 5e6, "b4": 3e6, "b5": 1e6}  # the lowest loss on the smallest model
    monkeypatch.setattr(sys.modules[__name__], "PARAMETERS", shrinking)
    study = Study()
    add_pretraining(study)
    predictor = by_claim(analyse_study(study.results()), "Pre-training loss predicts")
    assert predictor["verdict"] == SUPPORTED  # |r| ties, but size has the wrong sign: loss's own fit decides
    assert "Larger models score lower here (r = -" in predictor["sentences"][1]


def test_k_family_paths_fit_and_controls(full):
    (entry,) = full["k"]["bases"]
    assert entry["paths_fit"]["slope"] == pytest.approx(4.0) and entry["paths_fit"]["n"] == 4
    assert {row["variant"] for row in entry["rows"]} == {"dedup", "no dedup", "canonical", "equal tokens"}
    assert [item["difference"]["value"] for item in entry["vs_sft"]] == pytest.approx([3, 4, 6, 10])
    (canonical,) = entry["canonical"]
    assert canonical["difference"]["value"] == pytest.approx(9.0) and canonical["difference"]["ci"][0] > 0
    (control,) = entry["equal_tokens"]
    assert control["vs_sft"]["value"] == pytest.approx(5.0)
    assert control["epochs_minus_tokens"]["value"] == pytest.approx(5.0)
    for claim in ("RFT accuracy rises with", "RFT beats SFT", "De-duplicated", "Without path diversity", "RFT's gain"):
        assert by_claim(full, claim)["verdict"] == SUPPORTED, claim
    assert by_claim(full, "With RFT's training tokens")["verdict"] == NOT_TESTED
    assert "rises 4.0 points per distinct path" in by_claim(full, "RFT accuracy rises with")["sentences"][0]


@pytest.mark.parametrize("control, verdict", [(63, SUPPORTED), (73, CONTRADICTED)])
def test_sft_for_rfts_tokens_is_compared_with_rft_at_its_k(control, verdict, tmp_path):
    study = Study()
    add_pretraining(study)
    add_k(study)
    add_sft_at_rft_tokens(study, accuracy=control)
    analysis = analyse_study(study.results())
    (entry,) = analysis["k"]["bases"]
    (matched,) = entry["sft_at_rft_tokens"]
    assert matched["k"] == 8 and matched["control"]["accuracy"] == pytest.approx(control)
    assert matched["difference"]["value"] == pytest.approx(70 - control)
    assert entry["sft"]["accuracy"] == pytest.approx(sft_accuracy("b3"))  # the control is not taken for SFT
    finding = by_claim(analysis, "With RFT's training tokens")
    assert finding["verdict"] == verdict
    assert finding["sentences"][0].startswith(
        f"b3, k=8: RFT scores 70.0% on 300,000 tokens, SFT trained for as many (250,000) {control:.1f}%"
    )
    report = write_study_report(tmp_path, study.results()).read_text()
    assert f"| SFT for the tokens of RFT at k=8 | 0 | – | – | 4,000 | 250,000 | {control:.1f} (" in report


def test_union_and_gain(full):
    (union,) = full["union"]["unions"]  # the older single-union form: runs without `union` fields
    assert union["name"] == "union" and union["sources"] == list(LOSSES) and full["union"]["comparisons"] == []
    targets = {t["target"]: t for t in union["targets"]}
    assert targets["b3"]["best_own"]["k"] == 8
    assert targets["b3"]["union_minus_best_own"]["value"] == pytest.approx(2.0)
    assert targets["b3"]["union_minus_own"]["value"] == pytest.approx(6.0)
    assert targets["b2"]["own_minus_sft"]["value"] == pytest.approx(7.0)
    assert by_claim(full, "RFT on the pooled")["verdict"] == SUPPORTED
    assert full["gain"]["k"] == 4 and full["gain"]["fit"]["slope"] == pytest.approx(-0.2)
    gain = by_claim(full, "Weaker models gain more")
    assert gain["verdict"] == SUPPORTED and "falls 0.20 points per point of SFT accuracy" in gain["sentences"][1]


def test_union_worse_than_own_rft_is_contradicted_with_the_numbers():
    finding = by_claim(analyse_study(full_study(union={"b2": 60, "b3": 64})), "RFT on the pooled")
    assert finding["verdict"] == CONTRADICTED
    assert "scores 60.0% against the best own-samples RFT 62.0% (k=4): -2.0 points" in finding["sentences"][0]
    assert "scores 64.0% against the best own-samples RFT 70.0% (k=8): -6.0 points" in finding["sentences"][1]


@pytest.fixture(scope="module")
def two_unions() -> dict:
    return analyse_study(named_study(TWO_UNIONS))


def test_each_union_has_its_targets_and_the_larger_is_compared_with_the_smaller(two_unions):
    family = two_unions["union"]
    assert [(u["name"], u["sources"], u["k"]) for u in family["unions"]] == [("U13B", U13B, 4), ("U33B", U33B, 8)]
    u13b, u33b = ({t["target"]: t for t in u["targets"]} for u in family["unions"])
    assert set(u13b) == {"b2", "b3"} and set(u33b) == {"b3"}
    assert u13b["b3"]["union_minus_own"]["value"] == pytest.approx(6.0)  # own RFT at k=4: 66
    assert u33b["b3"]["own"]["k"] == 8 and u33b["b3"]["union_minus_own"]["value"] == pytest.approx(1.0)
    assert u33b["b3"]["union_minus_best_own"]["value"] == pytest.approx(1.0)
    (pair,) = family["comparisons"]  # b2 is a target of U13B only
    assert (pair["target"], pair["larger"], pair["smaller"]) == ("b3", "U33B", "U13B")
    assert pair["difference"]["value"] == pytest.approx(-1.0) and pair["difference"]["ci"][1] < 0
    assert pair["verdict"] == CONTRADICTED and family["without_runs"] == []
    assert two_unions["gain"]["k"] == 4  # the first union's k


def test_union_finding_names_each_union_and_reports_the_larger_minus_the_smaller(two_unions):
    finding = by_claim(two_unions, "RFT on the pooled")
    assert finding["verdict"] == SUPPORTED  # every union beats the best own-samples RFT on every target
    b2, b3, b3_larger, pair = finding["sentences"]
    assert b2.startswith("b2: RFT on the union U13B of 4 models' samples at k=4 scores 65.0% against the best ")
    assert "scores 72.0% against the best own-samples RFT 70.0% (k=8): +2.0 points" in b3
    assert b3_larger.startswith("b3: RFT on the union U33B of 5 models' samples at k=8 scores 71.0% against")
    assert pair.startswith("b3: U33B (5 models, k=8) 71.0% against U13B (4 models, k=4) 72.0%: -1.0 points (95% CI")
    assert pair.endswith("; the larger union is worse.")


def test_a_union_below_own_rft_mixes_the_verdict_and_a_better_larger_union_is_reported():
    analysis = analyse_study(named_study({"U13B": (U13B, 4, {"b3": 64}), "U33B": (U33B, 4, {"b3": 74})}))
    finding = by_claim(analysis, "RFT on the pooled")
    assert finding["verdict"] == "mixed"  # U13B 64 < own 70 (k=8), U33B 74 > 70
    assert "RFT on the union U13B of 4 models' samples at k=4 scores 64.0%" in finding["sentences"][0]
    assert ": +10.0 points (95% CI" in finding["sentences"][2]
    assert finding["sentences"][2].endswith("; the larger union is better.")


def test_report_has_a_table_per_union_and_the_union_comparison(tmp_path, two_unions):
    results = named_study(TWO_UNIONS)
    results["experiments"]["union"].append({"name": "U0", "sources": ["b1", "b2"], "k": 4, "targets": ["b1"]})
    report = write_study_report(tmp_path, results).read_text()
    assert "### U13B: 4 models pooled (b1, b2, b3, b4), k=4 each" in report
    assert "### U33B: 5 models pooled (b1, b2, b3, b4, b5), k=8 each" in report
    assert (
        "| target | SFT | RFT own k=8 | RFT U33B | paths own | paths U33B | U33B − own | own − SFT | U33B − SFT |"
        in report
    )
    assert "| b3 | U33B | 71.0 (" in report and "| contradicted |" in report
    assert "Without evaluated runs: U0." in report and "RFT on each union (U13B, U33B)" in report
    assert (tmp_path / "figures" / "union.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        json.loads((tmp_path / "analysis.json").read_text())["union"]["comparisons"]
        == two_unions["union"]["comparisons"]
    )


@pytest.mark.parametrize(("scaled", "trend", "verdict"), [(1.0, "rises", SUPPORTED), (-1.0, "falls", CONTRADICTED)])
def test_each_epoch_rule_has_its_own_fit_and_sentence(scaled, trend, verdict):
    study = Study()
    add_pretraining(study, ("b3",))
    add_data_rules(study, "b3", fixed=10.0, scaled=scaled)
    analysis = analyse_study(study.results())
    (entry,) = analysis["data"]["bases"]
    fits = entry["fits_by_rule"]
    for rule, slope in (("fixed", 10.0), ("scaled", scaled)):
        fit = fits[rule]
        assert fit["n"] == 4 and fit["slope"] == pytest.approx(slope) and fit["r2"] == pytest.approx(1.0), rule
        assert fit["slope_ci"][0] <= slope <= fit["slope_ci"][1] and fit["slope_ci_t"] is not None, rule
    assert entry["epochs"] == 3.0
    assert entry["fit"]["slope"] == pytest.approx(scaled)  # the better rule is the scaled one at every fraction
    assert [p["best_rule"] for p in entry["points"]] == ["scaled", "scaled", "scaled", "fixed = scaled"]
    finding = by_claim(analysis, "SFT accuracy rises log-linearly")
    assert finding["verdict"] == verdict  # from the better-rule fit
    assert f"b3: SFT accuracy {trend} 1.0 points per doubling of examples" in finding["sentences"][0]
    (rules,) = [s for s in finding["sentences"] if s.startswith("b3 by epoch rule: ")]
    assert "at equal epochs (3) accuracy rises 10.0 points per doubling (slope 95% CI" in rules
    assert f"at equal tokens (3/fraction epochs) accuracy {trend} 1.0 points per doubling (slope 95% CI" in rules
    assert rules.count("R² = 1.00") == 2 and rules.count("n = 4") == 2


def test_a_single_epoch_rule_has_no_per_rule_fits(tmp_path):
    study = Study()
    add_pretraining(study, ("b3",))
    study.experiments["data"] = {"bases": ["b3"], "fractions": [1 / 4, 1 / 2, 1.0], "epochs": "scaled"}
    for fraction in (1 / 4, 1 / 2):
        accuracy = sft_accuracy("b3") + 2 * math.log2(fraction)
        study.sft("b3", accuracy, ["data"], fraction=fraction, epochs=3 / fraction, examples=round(TRAIN * fraction))
    analysis = analyse_study(study.results())
    (entry,) = analysis["data"]["bases"]
    assert entry["fits_by_rule"] is None and entry["fit"]["slope"] == pytest.approx(2.0)
    finding = by_claim(analysis, "SFT accuracy rises log-linearly")
    assert finding["verdict"] == SUPPORTED and not any("by epoch rule" in s for s in finding["sentences"])
    report = write_study_report(tmp_path, study.results()).read_text()
    assert "figures/data.png" in report and "equal epochs" not in report and "equal tokens" not in report


def test_accuracy_falling_with_data_is_contradicted():
    study = Study()
    add_pretraining(study, ("b3",))
    add_data(study, {"b3": -2.0})
    finding = by_claim(analyse_study(study.results()), "SFT accuracy rises log-linearly")
    assert finding["verdict"] == CONTRADICTED
    assert "b3: SFT accuracy falls 2.0 points per doubling of examples" in finding["sentences"][0]


def test_curved_data_relation_is_only_partly_supported():
    study = Study()
    fractions = [1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1]
    study.experiments["data"] = {"bases": ["b3"], "fractions": fractions, "epochs": "fixed"}
    for fraction, accuracy in zip(fractions, (20, 21, 22, 23, 25, 30, 45), strict=True):
        study.sft("b3", accuracy, ["data"], fraction=fraction, examples=round(TRAIN * fraction))
    finding = by_claim(analyse_study(study.results()), "SFT accuracy rises log-linearly")
    assert finding["verdict"] == PARTLY
    assert finding["sentences"][-1].startswith("R² = 0.71 is below 0.80")


def test_two_points_give_numbers_without_a_fit_verdict():
    study = Study()
    add_pretraining(study, ("b3", "b5"))
    add_data(study, {"b3": 6.0}, fractions=(1 / 2,))
    analysis = analyse_study(study.results())
    data = by_claim(analysis, "SFT accuracy rises log-linearly")
    assert data["verdict"] == TOO_FEW and "rises 6.0 points per doubling of examples between 2 points" in str(data)
    assert by_claim(analysis, "Lower pre-training loss")["verdict"] == TOO_FEW
    assert analysis["pretraining"]["loss_fit"]["slope_ci"] is None


def test_missing_families_are_not_tested_and_missing_losses_are_skipped():
    study = Study()
    add_pretraining(study, ("b1", "b2", "b3"))
    analysis = analyse_study(study.results({"b1": 0.5, "b2": None, "b3": 0.4}))
    verdicts = {f["claim"]: f["verdict"] for f in analysis["findings"]}
    assert verdicts.pop("Lower pre-training loss gives higher SFT accuracy, roughly linearly") == TOO_FEW
    assert verdicts.pop("Pre-training loss predicts SFT accuracy better than parameter count") == TOO_FEW
    assert set(verdicts.values()) == {NOT_TESTED}
    assert "The study has no data experiment." in by_claim(analysis, "SFT accuracy rises")["sentences"]
    assert analysis["pretraining"]["size_fit"]["n"] == 3
    empty = analyse_study({"format": "rftlab.study-results/1", "name": "empty", "runs": [], "experiments": {}})
    assert {f["verdict"] for f in empty["findings"]} == {NOT_TESTED}


def test_seeds_are_averaged_and_bootstrapped_together():
    analysis = analyse_study(full_study(seeds=(0, 1), spread=1.0))
    names = [run["name"] for run in analysis["runs"]]
    assert len(names) == len(set(names)) and "sft-b3" in names
    run = analysis["runs"][names.index("sft-b3")]
    assert run["seeds"] == [0, 1] and run["maj1@1"] == pytest.approx(60.0)
    assert analysis["data"]["bases"][0]["fit"]["slope"] == pytest.approx(6.0)
    assert by_claim(analysis, "Lower pre-training loss")["verdict"] == SUPPORTED


def test_analysis_is_plain_json(full):
    assert json.loads(json.dumps(full, allow_nan=False)) == full


def test_report_files_are_complete_self_contained_and_deterministic(tmp_path):
    results = full_study()
    first = write_study_report(tmp_path / "a", results)
    write_study_report(tmp_path / "b", results)
    assert first == tmp_path / "a" / "report.md"
    for name in ("report.md", "analysis.json", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    figures = sorted(p.name for p in (tmp_path / "a" / "figures").iterdir())
    assert figures == ["data.png", "forecast.png", "gain.png", "k.png", "pretraining.png", "union.png"]
    assert all((tmp_path / "a" / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    report = first.read_text()
    assert all(f"](figures/{f})" in report for f in figures)
    assert "| Lower pre-training loss gives higher SFT accuracy, roughly linearly | supported |" in report
    for rule in ("equal epochs (fixed rule, 3 epochs)", "equal tokens (scaled rule, 3/fraction epochs)"):
        assert report.count(f"Accuracy against log2(examples), {rule}: slope") == 2, rule  # b3 and b5
    html = (tmp_path / "a" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert 'src="figures/' not in html and "<script" not in html and "http" not in html
    assert json.loads((tmp_path / "a" / "analysis.json").read_text()) == analyse_study(results)


def test_report_of_a_study_with_one_family(tmp_path):
    study = Study()
    add_pretraining(study, ("b1", "b2", "b3"))
    report = write_study_report(tmp_path, study.results()).read_text()
    assert "not tested in this study" in report and "figures/pretraining.png" in report
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["pretraining.png"]


def test_report_module_imports_without_numpy_or_matplotlib():
    code = "import sys, rftlab.report; print(any(m in sys.modules for m in ('numpy', 'matplotlib')))"
    src = Path(__file__).resolve().parents[1] / "src"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=src)
    assert output.stdout.strip() == "False"


def test_the_analysis_is_the_same_as_before_the_families_were_modules(full):
    """tests/data/study-analysis-full.json: analysis.json of `full_study()` from rftlab.findings (commit d26c132),
    plus the k family's entry and finding for SFT at RFT's tokens (no such runs: not tested) and the gain fit's
    bootstrap interval, the forecast, budget and verifier families (the last two not tested: no such experiments)."""
    expected = json.loads((Path(__file__).parent / "data" / "study-analysis-full.json").read_text())
    assert rounded(full) == rounded(expected)  # numpy's last digits differ between CPUs (an Intel Xeon here)


def rounded(value: object) -> object:
    """`value` with every float rounded to 12 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def planned_results(seeds: list[int]) -> dict:
    """results.json of a planned (not run) study with made-up scores: every run as the planner records it."""
    from rftlab.study import build_plan, parse_config

    raw = {
        "name": "planned",
        "seeds": seeds,
        "data": {"toyworld": {"n_train": 40, "n_test": 20}},
        "bases": [{"name": name, "preset": "xs", "pretrain_tokens": 1000 * (i + 1)} for i, name in enumerate("abc")],
        "train": {"epochs": 2},
        "experiments": {
            "pretraining": {"bases": "all"},
            "data": {"bases": ["b"], "fractions": ["1/4", "1/2", 1], "epochs": "both"},
            "k": {"bases": ["b"], "k": [1, 2, 4], "no_dedup": [2], "canonical": [2], "equal_tokens": [2]},
            "union": [{"name": "U2", "sources": ["a", "b"], "k": 2, "targets": ["a"]},
                      {"name": "U3", "sources": "all", "k": 4, "targets": ["a", "b"]}],
        },
    }  # fmt: skip
    config = parse_config(raw)
    plan = build_plan(config, Path("cells"))
    runs = []
    for number, run in enumerate(plan.runs.values()):
        record = {key: value for key, value in run.items() if key not in ("cells", "selection")}
        accuracy = 5 * (number % 17) + 10 * run["seed"]
        distinct = {"problems": 40, "distinct_per_problem": 1 + number % 5} if run["stage"] == "rft" else None
        runs.append({**record, "examples": 40 + number, "tokens": 1000 + number, "rft_data": distinct,
                     "maj1@1": accuracy, "correct": correct(accuracy)})  # fmt: skip
    bases = [{"name": name, "parameters": 10**6 * (3 - i), "loss": 0.5 - 0.1 * i} for i, name in enumerate("abc")]
    return {"name": "planned", "seeds": seeds, "bases": bases, "runs": runs, "experiments": config.experiments}


def test_runs_carry_their_roles_and_the_analysis_selects_by_them_as_it_does_older_runs_by_their_fields():
    results = planned_results([0, 1])
    runs = {run["name"]: run for run in results["runs"]}
    assert {role["family"] for role in runs["sft-b-e2-s0"]["roles"]} == {"pretraining", "data", "k", "union"}
    assert {role["family"] for role in runs["sft-b-e2-s0"]["roles"]} == set(runs["sft-b-e2-s0"]["families"])
    (scaled,) = runs["sft-b-f1_4-e8-s1"]["roles"]
    assert (scaled["family"], scaled["variant"], scaled["fraction"], scaled["epochs"], scaled["rule"]) == (
        "data", "sft", 0.25, 8, "scaled")  # fmt: skip
    assert [role["variant"] for role in runs["rft-b-k2-eqtokens-s0"]["roles"]] == ["equal tokens"]
    assert [(role["family"], role["variant"], role["union"]) for role in runs["rft-a-U3-k4-s0"]["roles"]] == [
        ("union", "union", "U3")]  # fmt: skip
    own = {(role["family"], role["variant"], role["k"]) for role in runs["rft-b-k4-s0"]["roles"]}
    assert own == {("k", "rft", 4), ("union", "rft", 4)}
    analysis = analyse_study(results)
    assert analysis["k"]["tested"] and analysis["union"]["tested"] and analysis["data"]["tested"]
    assert [u["name"] for u in analysis["union"]["unions"]] == ["U2", "U3"]
    for run in results["runs"]:
        del run["roles"]
    assert analyse_study(results) == analysis


def curve(values: list[float]) -> dict:
    """A validation record as rftlab.json holds it: accuracy per epoch, the best (earliest of equals) kept."""
    points = [{"step": 10 * epoch, "epoch": float(epoch), "tokens_seen": 1000 * epoch, "accuracy": value}
              for epoch, value in enumerate(values, start=1)]  # fmt: skip
    return {
        "metric": "accuracy",
        "curve": points,
        "best": max(points, key=lambda point: (point["accuracy"], -point["step"])),
    }


def test_validation_curves_of_the_k_family_show_which_runs_peaked(tmp_path):
    study = Study(seeds=(0, 1))
    study.experiments["k"] = {"bases": ["b3"], "k": [8]}
    study.sft("b3", 60, ["k"])
    study.rft("b3", 8, 70, 3.0, ["k"])
    results = study.results()
    curves = {"sft": curve([0.2, 0.5, 0.4]), "rft": curve([0.2, 0.4, 0.6])}  # SFT peaks at epoch 2 of 3; RFT rises
    for run in results["runs"]:
        run["validation"] = curves[run["stage"]]
    analysis = analyse_study(results)
    models = {entry["variant"]: entry for entry in analysis["validation"]["models"]}
    assert set(models) == {"sft", "rft"} and models["rft"]["k"] == 8
    assert models["sft"]["peaked"] == 2 and models["rft"]["peaked"] == 0
    assert [seed["best"]["epoch"] for seed in models["sft"]["seeds"]] == [2.0, 2.0]
    report = write_study_report(tmp_path, results).read_text()
    assert "2 of 4 runs kept a checkpoint before the end of their budget" in report
    assert "| sft-b3 | 0 | accuracy | 2.0, 50.0% | 3.0, 40.0% |" in report
    assert (tmp_path / "figures" / "validation.png").stat().st_size > 0
    for run in results["runs"]:
        run["validation"] = None  # a study without a validation split
    assert not analyse_study(results)["validation"]["tested"]


def test_forecasts_read_the_small_runs_laws_at_the_large_runs(full, tmp_path):
    """SFT at all the data from fractions 1/8 and 1/4 of a log-linear world; RFT at k = 16 and 32 from k <= 8."""
    (b3, b5) = full["forecast"]["forecasts"]  # no k above 8 in the full study: SFT forecasts only
    assert [(f["base"], f["target"], f["fitted_on"]) for f in (b3, b5)] == [
        ("b3", "sft_full_data", [0.125, 0.25]),
        ("b5", "sft_full_data", [0.125, 0.25]),
    ]
    assert b3["predicted"] == pytest.approx(60.0) and b3["observed"] == pytest.approx(60.0)  # 42 + 6·3 doublings
    assert b3["interval"][0] < 60 < b3["interval"][1] and b3["good"]
    assert by_claim(full, "Laws fitted on the small runs")["verdict"] == SUPPORTED
    study = Study((0,), 0.0)
    add_k(study)
    study.rft("b3", 16, 58 + 4 * 3.5, 3.5, ["k"])  # on the line of k <= 8
    study.rft("b3", 32, 58 + 4 * 4.0 - 5, 4.0, ["k"])  # 5 points below it
    study.experiments["k"]["k"] += [16, 32]
    analysis = analyse_study(study.results())
    rft = [f for f in analysis["forecast"]["forecasts"] if f["target"] == "rft_accuracy"]
    assert [(f["at"], f["fitted_on"]) for f in rft] == [(3.5, [1, 2, 4, 8]), (4.0, [1, 2, 4, 8])]
    assert [f["error"] for f in rft] == pytest.approx([0.0, 5.0]) and [f["good"] for f in rft] == [True, False]
    finding = by_claim(analysis, "Laws fitted on the small runs")
    assert finding["verdict"] == MIXED and finding["finding"] == "beyond"
    assert finding["sentences"][0] == "1 of 2 forecasts within 3 points with the observation inside their interval."
    report = write_study_report(tmp_path, study.results()).read_text()
    assert "| b3 | rft_accuracy at k=16 | linear in distinct paths | 1, 2, 4, 8 | 72.0 (" in report
    assert [f["k"] for f in analysis["forecast"]["forecasts"]] == [16, 32]


def budget_study(first_budget: float) -> dict:
    """Uniform RFT at k = 4, 8, 16 (64, 66, 67%) and budgets until 1 and 2 checked paths (at most 16) that
    spend 5.5 and 9 paths per question, scoring `first_budget` and 69%; 20 paths for a third (no uniform match)."""
    study = Study(seeds=(0, 1, 2), spread=0.5)
    study.experiments["budget"] = {"bases": ["b3"], "round": 4, "until_correct": [1, 2, 8], "max_k": 16,
                                   "uniform": [4, 8, 16]}  # fmt: skip
    study.sft("b3", 60, ["budget"])
    for k, accuracy in ((4, 64), (8, 66), (16, 67)):
        study.rft("b3", k, accuracy, 1 + k / 8, ["budget"])
    for until, accuracy in ((1, first_budget), (2, 69), (8, 70)):
        study.rft("b3", 16, accuracy, 2.5, ["budget"], until=until)
    paths = {1: 5.5, 2: 9.0, 8: 20.0}
    for run in study.runs:
        data, until = run["rft_data"], run.get("until")
        if data is None:
            continue
        spent = paths[until] if until else run["k"]
        data.update(samples=spent * TRAIN, coverage=0.8 + spent / 100)
        if until:
            run["roles"] = [Role("budget", "b3", "budget", 16, epochs=3.0, until_correct=until).to_json()]
    return study.results()


@pytest.mark.parametrize("first_budget, verdict", [(70, SUPPORTED), (62, MIXED)])
def test_a_budget_is_compared_with_the_uniform_k_that_spends_at_least_as_much(first_budget, verdict, tmp_path):
    results = budget_study(first_budget)
    analysis = analyse_study(results)
    (entry,) = analysis["budget"]["bases"]
    compared = [(c["until_correct"], c["uniform_k"], c["paths_per_problem"]) for c in entry["comparisons"]]
    assert compared == [(1, 8, 5.5), (2, 16, 9.0)]  # 20 paths per question: no uniform k spends as much
    first, second = entry["comparisons"]
    assert first["difference"]["value"] == pytest.approx(first_budget - 66)
    assert second["difference"]["value"] == pytest.approx(2.0) and second["difference"]["ci"][0] > 0
    assert first["coverage_gain"] == pytest.approx(-0.025) and second["distinct_gain"] == pytest.approx(-0.5)
    finding = by_claim(analysis, "A difficulty-aware sampling budget")
    assert finding["finding"] == "beyond" and finding["verdict"] == verdict
    assert finding["sentences"][1].startswith("b3, until 2 checked (at most 16): 9.00 paths per question, coverage")
    report = write_study_report(tmp_path, results).read_text()
    assert "| until 2 checked, at most 16 | 9.00 | 89.0 |" in report and "vs k=16" in report
    assert (tmp_path / "figures" / "budget.png").stat().st_size > 0


def test_a_study_without_budgets_leaves_the_budget_question_untested():
    study = Study()
    add_k(study)
    finding = by_claim(analyse_study(study.results()), "A difficulty-aware sampling budget")
    assert finding["verdict"] == NOT_TESTED and "no budget experiment" in finding["sentences"][0]


def test_the_verifier_family_compares_checkers_on_the_same_samples(tmp_path):
    """RFT at k = 8 on the paths each checker keeps: the calculator check adds 2 points, math-verify 1."""
    from rftlab.experiments import verifier
    from rftlab.verifiers import VERIFIERS

    assert verifier.VERIFIERS == VERIFIERS
    study = Study(seeds=(0, 1, 2), spread=0.5)
    study.experiments["verifier"] = {"bases": ["b3"], "k": 8, "checkers": [
        "paper+calculator", "paper", "math-verify+calculator", "math-verify"]}  # fmt: skip
    study.sft("b3", 60, ["verifier"])
    scores = {"paper+calculator": 65, "paper": 63, "math-verify+calculator": 66, "math-verify": 64}
    for name, accuracy in scores.items():
        study.rft("b3", 8, accuracy, 2.0 if "calculator" in name else 2.5, ["verifier"], checker=name)
        variant = "rft" if name == "paper+calculator" else "checker"
        for run in study.runs[-3:]:
            run["roles"] = [Role("verifier", "b3", variant, 8, epochs=3.0, checker=name).to_json()]
    results = study.results()
    analysis = analyse_study(results)
    (entry,) = analysis["verifier"]["bases"]
    assert [row["checker"] for row in entry["rows"]] == list(scores)
    assert [(c["better"], c["than"], round(c["difference"]["value"], 6)) for c in entry["calculator"]] == [
        ("paper+calculator", "paper", 2.0), ("math-verify+calculator", "math-verify", 2.0)]  # fmt: skip
    assert [round(c["difference"]["value"], 6) for c in entry["verifier"]] == [1.0, 1.0]
    calculator = by_claim(analysis, "The calculator check gives better RFT")
    assert calculator["verdict"] == SUPPORTED and calculator["finding"] == "beyond"
    assert calculator["sentences"][0].startswith("b3, k=8: RFT on the paths paper+calculator keeps (")
    assert by_claim(analysis, "math-verify's verdicts")["verdict"] == SUPPORTED
    report = write_study_report(tmp_path, results).read_text()
    assert "## 9. The checker that keeps RFT's paths" in report and "paper+calculator minus paper: +2.0" in report
    assert (tmp_path / "figures" / "verifier.png").stat().st_size > 0
    study.runs = [run for run in study.runs if "math-verify" not in run["name"]]
    only_paper = analyse_study(study.results())
    assert by_claim(only_paper, "math-verify's verdicts")["verdict"] == NOT_TESTED

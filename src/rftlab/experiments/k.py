"""The k family: RFT on the first k sampled paths per question, with its controls.

Finding 3: RFT accuracy rises with the number of distinct reasoning paths; RFT beats SFT (else, the union
family's own-samples RFT decides); de-duplicated RFT is at least as accurate as RFT on every correct path;
without path diversity (the canonical world) RFT gains less; RFT's gain is more than its extra training
compute (RFT for SFT's tokens, and SFT for RFT's tokens: the compute-matched controls).
"""

from __future__ import annotations

from collections.abc import Callable
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
    base_names,
    evaluate,
    k_list,
    known_keys,
    mapping,
    own_rft,
    sft_record,
)

NAME, SECTION = "k", 3
KEYS = frozenset({"bases", "k", "no_dedup", "canonical", "equal_tokens", "sft_at_rft_tokens"})
CONTROL = "sft at rft tokens"
"""The role of SFT trained for the tokens of RFT at a k."""
VARIANTS = {"dedup": "rft", "no dedup": "no dedup", "canonical": "canonical", "equal tokens": "equal tokens"}
"""The table's name of each RFT variant → its role's variant."""


def parse(value: Any, config: Config) -> Json:
    where = f"{config.source}: experiments: {NAME}"
    spec = mapping(value, where)
    known_keys(spec, KEYS, where)
    ks = k_list(spec.get("k"), f"{where}: k")
    extras = {key: k_list(spec.get(key), f"{where}: {key}")
              for key in ("no_dedup", "canonical", "equal_tokens", "sft_at_rft_tokens")}  # fmt: skip
    if not ks and not any(extras.values()):
        raise StudyError(f"{where}: k: give at least one k")
    if unmatched := sorted(set(extras["sft_at_rft_tokens"]) - set(ks)):
        raise StudyError(f"{where}: sft_at_rft_tokens: k={unmatched[0]} is not in k (the control is compared with "
                         "RFT at that k)")  # fmt: skip
    if extras["canonical"] and "toyworld" not in config.data:
        raise StudyError(f"{where}: canonical: the canonical-world ablation needs the toy world")
    return {"bases": base_names(spec.get("bases"), config, where), "k": ks, **extras}


def requests(spec: Json, planner: Planner) -> None:
    """Each base's SFT model (default world; canonical world for that ablation) sampled at its largest k."""
    for base in spec["bases"]:
        ks = spec["k"] + spec["no_dedup"] + spec["equal_tokens"]  # sft_at_rft_tokens is within k
        if ks:
            planner.request_samples(planner.sft(base), max(ks))
        if spec["canonical"]:
            planner.request_samples(planner.sft(base, canonical=True), max(spec["canonical"]))


def plan(spec: Json, planner: Planner) -> None:
    for base in spec["bases"]:
        evaluate(planner, planner.sft(base), Role(NAME, base, "sft", epochs=planner.epochs),
                 sft_record(base, 1.0, planner.epochs))  # fmt: skip
        variants = [(k, "rft") for k in spec["k"]] + [(k, "no dedup") for k in spec["no_dedup"]]
        variants += [(k, "canonical") for k in spec["canonical"]] + [(k, "equal tokens") for k in spec["equal_tokens"]]
        for k, variant in variants:
            model, record = own_rft(planner, base, k, variant != "no dedup", variant == "canonical",
                                    variant == "equal tokens")  # fmt: skip
            evaluate(planner, model, Role(NAME, base, variant, k, epochs=record["epochs"]), record)
        if spec["canonical"]:
            role = Role(NAME, base, "canonical sft", epochs=planner.epochs)
            record = sft_record(base, 1.0, planner.epochs, "canonical")
            evaluate(planner, planner.sft(base, canonical=True), role, record)
        for k in spec["sft_at_rft_tokens"]:
            control = planner.sft(base, tokens_of=own_rft(planner, base, k)[0])
            evaluate(planner, control, Role(NAME, base, CONTROL, k), {**sft_record(base, 1.0, None), "k": k})


@dataclass
class Result:
    bases: list[Json]
    """Per base: SFT references, a row per RFT run, the paths fit and the comparisons of each control."""
    tested = True

    def to_json(self) -> Json:
        return {"tested": True, "bases": self.bases}


def _row(variant: str, model: a.Model) -> Json:
    paths = {key: model.mean(key, rft_data=True) for key in ("distinct_per_problem", "correct_per_problem", "selected")}
    return {"variant": variant, "k": model.k, **paths, "examples": model.mean("examples"),
            "tokens": model.mean("tokens"), **model.point()}  # fmt: skip


def _base(models: list[a.Model], base: str) -> Json | None:
    variants = {name: a.own_rft(models, NAME, base, variant) for name, variant in VARIANTS.items()}
    if not any(variants.values()):
        return None
    controls = a.find(models, NAME, base, CONTROL)
    sft, canonical_sft = a.sft(models, NAME, base), a.sft(models, NAME, base, "canonical sft")
    dedup = {m.k: m for m in variants["dedup"]}
    with_paths = [m for m in variants["dedup"] if m.mean("distinct_per_problem", rft_data=True) is not None]
    entry: Json = {
        "base": base,
        "sft": a.reference(sft),
        "canonical_sft": a.reference(canonical_sft),
        "rows": [_row(name, m) for name in VARIANTS for m in variants[name]],
        "paths_fit": a.fit([m.mean("distinct_per_problem", rft_data=True) or 0.0 for m in with_paths], with_paths),
        "vs_sft": [{"k": k, "difference": a.difference(m, sft)} for k, m in dedup.items()] if sft else [],
        "dedup": [{"k": m.k, "difference": a.difference(dedup[m.k], m)} for m in variants["no dedup"] if m.k in dedup],
        "canonical": [],
        "equal_tokens": [],
        "sft_at_rft_tokens": [
            {"k": m.k, "control": _control(m), "difference": a.difference(dedup[m.k], m)}
            for m in controls
            if m.k in dedup
        ],
    }
    for m in variants["canonical"]:
        if sft and canonical_sft and m.k in dedup:
            gains = {"gain_default": a.difference(dedup[m.k], sft), "gain_canonical": a.difference(m, canonical_sft)}
            difference = a.contrast([dedup[m.k], sft, m, canonical_sft], [1, -1, -1, 1])
            entry["canonical"].append({"k": m.k, **gains, "difference": difference})
    for m in variants["equal tokens"]:
        if sft:
            extra = a.difference(dedup[m.k], m) if m.k in dedup else None
            entry["equal_tokens"].append({"k": m.k, "vs_sft": a.difference(m, sft), "epochs_minus_tokens": extra})
    return entry


def _control(model: a.Model) -> Json:
    return {**model.point(), "examples": model.mean("examples"), "tokens": model.mean("tokens")}


def analyse(models: list[a.Model], context: a.Context) -> Result | a.Untested:
    spec = context.experiments.get(NAME)
    if spec is None:
        return a.absent(NAME, spec)
    bases = [entry for base in a.family_bases(spec, models, NAME) if (entry := _base(models, base))]
    return Result(bases) if bases else a.absent(NAME, spec)


# Findings


def findings(result: Result | a.Untested, results: dict[str, Any]) -> list[Json]:
    return [
        _paths_finding(result),
        _rft_sft_finding(result, results.get("union")),
        _per_k_finding(result, "De-duplicated RFT is at least as accurate as RFT on every correct path", "dedup",
                       "the k experiment has no runs without de-duplication", _dedup_text),
        _per_k_finding(result, "Without path diversity (canonical world) RFT gains less", "canonical",
                       "the k experiment has no canonical-world runs", _canonical_text),
        _per_k_finding(result, "RFT's gain is more than its extra training compute (equal-token control)",
                       "equal_tokens", "the k experiment has no equal-token runs", _equal_tokens_text),
        _per_k_finding(result, "With RFT's training tokens, SFT still scores below RFT (compute-matched control)",
                       "sft_at_rft_tokens", "the k experiment has no runs of SFT for RFT's tokens", _sft_tokens_text),
    ]  # fmt: skip


def _rows(entry: Json, variant: str) -> dict[int, Json]:
    return {row["k"]: row for row in entry["rows"] if row["variant"] == variant}


def _paths_finding(family: Result | a.Untested) -> Json:
    claim = "RFT accuracy rises with the number of distinct reasoning paths"
    if not isinstance(family, Result):
        return a.untested(3, claim, family.reason)
    verdicts, sentences = [], []
    for entry in family.bases:
        fit = entry["paths_fit"]
        rows = [row for row in _rows(entry, "dedup").values() if row["distinct_per_problem"] is not None]
        if fit is None:
            continue
        verdicts.append(a.fit_verdict(fit, +1))
        text = a.fit_text(fit, "RFT accuracy", "distinct path per question")
        sentences.append(
            f"{entry['base']}: {text}; distinct paths per question go from "
            f"{rows[0]['distinct_per_problem']:.2f} at k={rows[0]['k']} to "
            f"{rows[-1]['distinct_per_problem']:.2f} at k={rows[-1]['k']}."
        )
    if not verdicts:
        return a.untested(3, claim, "no base has de-duplicated RFT at 2 or more k values with path counts")
    return a.finding(3, claim, a.combined(verdicts), sentences)


def _rft_sft_finding(family: Result | a.Untested, union: Any) -> Json:
    claim = "RFT beats SFT"
    verdicts, sentences = [], []
    if isinstance(family, Result):
        for entry in family.bases:
            if not entry["vs_sft"]:
                continue
            last, rows = entry["vs_sft"][-1], _rows(entry, "dedup")
            verdicts.append(a.verdict(last["difference"]["value"], [last["difference"]["ci"]], +1))
            others = ", ".join(f"k={item['k']} {item['difference']['value']:+.1f}" for item in entry["vs_sft"])
            sentences.append(
                f"{entry['base']}: RFT at k={last['k']} scores {a.acc(rows[last['k']])} against SFT "
                f"{a.acc(entry['sft'])}: {a.diff_text(last['difference'])}; by k: {others}."
            )
    if not verdicts and union is not None and union.tested:
        seen = set()  # unions at the same k share a target's own-samples RFT
        for entry in union.unions:
            for target in entry["targets"]:
                difference, key = target["own_minus_sft"], (target["target"], entry["k"])
                if difference is None or key in seen:
                    continue
                seen.add(key)
                verdicts.append(a.verdict(difference["value"], [difference["ci"]], +1))
                sentences.append(
                    f"{target['target']}: RFT at k={entry['k']} scores {a.acc(target['own'])} against SFT "
                    f"{a.acc(target['sft'])}: {a.diff_text(difference)}."
                )
    if not verdicts:
        return a.untested(3, claim, "no base has both SFT and own-samples RFT")
    return a.finding(3, claim, a.combined(verdicts), sentences)


def _per_k_finding(
    family: Result | a.Untested, claim: str, key: str, missing: str, describe: Callable[[Json, Json], tuple[Json, str]]
) -> Json:
    """A finding over the k family's `key` comparisons: `describe(entry, item)` gives the estimate and sentence."""
    if not isinstance(family, Result):
        return a.untested(3, claim, family.reason)
    verdicts, sentences = [], []
    for entry in family.bases:
        for item in entry[key]:
            estimate, sentence = describe(entry, item)
            verdicts.append(a.verdict(estimate["value"], [estimate["ci"]], +1))
            sentences.append(f"{entry['base']}, k={item['k']}: {sentence}.")
    if not verdicts:
        return a.untested(3, claim, missing)
    return a.finding(3, claim, a.combined(verdicts), sentences)


def _dedup_text(entry: Json, item: Json) -> tuple[Json, str]:
    kept, every = _rows(entry, "dedup")[item["k"]], _rows(entry, "no dedup")[item["k"]]
    return item["difference"], (
        f"de-duplicated RFT scores {a.acc(kept)} on {kept['examples']:,.0f} examples, RFT on every correct path "
        f"{a.acc(every)} on {every['examples']:,.0f}: {a.diff_text(item['difference'])}"
    )


def _canonical_text(entry: Json, item: Json) -> tuple[Json, str]:
    default, canonical = _rows(entry, "dedup")[item["k"]], _rows(entry, "canonical")[item["k"]]

    def paths(row: Json) -> str:
        value = row["distinct_per_problem"]
        return "paths per question unknown" if value is None else f"{value:.2f} distinct paths per question"

    return item["difference"], (
        f"RFT gains {a.diff_text(item['gain_default'])} over SFT in the default world ({paths(default)}) and "
        f"{a.diff_text(item['gain_canonical'])} in the canonical world ({paths(canonical)}); default minus "
        f"canonical gain {a.diff_text(item['difference'])}"
    )


def _equal_tokens_text(entry: Json, item: Json) -> tuple[Json, str]:
    control = _rows(entry, "equal tokens")[item["k"]]
    text = (
        f"RFT trained on {control['tokens']:,.0f} tokens (SFT's budget) scores {a.acc(control)}, "
        f"{a.diff_text(item['vs_sft'])} over SFT"
    )
    if item["epochs_minus_tokens"] is not None:
        full = _rows(entry, "dedup")[item["k"]]
        text += (
            f"; RFT trained for the same epochs as SFT ({full['tokens']:,.0f} tokens) scores "
            f"{a.diff_text(item['epochs_minus_tokens'])} more than this control"
        )
    return item["vs_sft"], text


def _sft_tokens_text(entry: Json, item: Json) -> tuple[Json, str]:
    rft, control = _rows(entry, "dedup")[item["k"]], item["control"]
    return item["difference"], (
        f"RFT scores {a.acc(rft)} on {rft['tokens']:,.0f} tokens, SFT trained for as many "
        f"({control['tokens']:,.0f}) {a.acc(control)}: {a.diff_text(item['difference'])}"
    )


# Report


def blocks(family: Result | a.Untested, figures: dict[str, bytes]) -> list[d.Block]:
    blocks = d.section("3. RFT: samples per question (k) and distinct reasoning paths", family)
    if not isinstance(family, Result):
        return blocks
    header = ["model", "k", "distinct paths / question", "correct paths / question", "examples", "tokens",
              "maj1@1 (95% CI)", "minus SFT (95% CI)"]  # fmt: skip
    for entry in family.bases:
        vs_sft = {item["k"]: item["difference"] for item in entry["vs_sft"]}
        rows = [
            [label, "0", "–", "–", d.num(ref["examples"]), d.num(ref["tokens"]), d.pct(ref), ""]
            for label, ref in (("SFT", entry["sft"]), ("SFT, canonical world", entry["canonical_sft"]))
            if ref
        ]
        rows += [[f"SFT for the tokens of RFT at k={item['k']}", "0", "–", "–", d.num(item["control"]["examples"]),
                  d.num(item["control"]["tokens"]), d.pct(item["control"]), ""]
                 for item in entry["sft_at_rft_tokens"]]  # fmt: skip
        rows += [
            [f"RFT, {row['variant']}", str(row["k"]), d.num(row["distinct_per_problem"], ".2f"),
             d.num(row["correct_per_problem"], ".2f"), d.num(row["examples"]), d.num(row["tokens"]), d.pct(row),
             d.diff(vs_sft.get(row["k"])) if row["variant"] == "dedup" else ""]
            for row in entry["rows"]
        ]  # fmt: skip
        paths = d.fit_line("RFT accuracy against distinct paths per question", entry["paths_fit"], "points per path")
        blocks += [("h", 3, entry["base"]), ("table", header, rows), ("p", paths)]
    return blocks + d.figure(figures, NAME, "Distinct paths per question and accuracy against k (log2)")


_STYLES = {"dedup": ("o", "-"), "no dedup": ("s", "none"), "canonical": ("^", "-"), "equal tokens": ("D", "none")}


def figure(plt: Any, family: Result) -> Any:
    bases = family.bases
    drawing, axes = plt.subplots(len(bases), 2, figsize=(10, 3.8 * len(bases)), layout="constrained", squeeze=False)
    for (paths, accuracy), entry in zip(axes, bases, strict=True):
        for number, (variant, (marker, line)) in enumerate(_STYLES.items()):
            rows = [row for row in entry["rows"] if row["variant"] == variant]
            if not rows:
                continue
            ks, color = [row["k"] for row in rows], f"C{number}"
            with_paths = [row for row in rows if row["distinct_per_problem"] is not None]
            if with_paths and variant != "equal tokens":
                paths.plot([r["k"] for r in with_paths], [r["distinct_per_problem"] for r in with_paths],
                           marker=marker, linestyle=line, color=color, label=f"RFT, {variant}")  # fmt: skip
            accuracy.errorbar(
                [k * 2 ** (0.06 * number) for k in ks],  # variants at the same k drawn side by side
                [row["accuracy"] for row in rows],
                yerr=d.errors(rows),
                marker=marker,
                linestyle=line,
                capsize=3,
                color=color,
                label=f"RFT, {variant}",
            )
        if controls := [item["control"] for item in entry["sft_at_rft_tokens"]]:
            accuracy.errorbar([item["k"] for item in entry["sft_at_rft_tokens"]], [c["accuracy"] for c in controls],
                              yerr=d.errors(controls), marker="x", linestyle="none", capsize=3, color="black",
                              label="SFT for RFT's tokens")  # fmt: skip
        for reference, style, label in ((entry["sft"], "-", "SFT"), (entry["canonical_sft"], ":", "SFT, canonical")):
            if reference:
                accuracy.axhline(reference["accuracy"], color="gray", linestyle=style, label=label)
        for axis in (paths, accuracy):
            d.log2_axis(axis, [row["k"] for row in entry["rows"]], "k (paths sampled per question)")
            axis.legend(fontsize=8)
        paths.set_ylabel("distinct paths per question")
        paths.set_title(f"{entry['base']}: distinct reasoning paths")
        accuracy.set_ylabel("maj1@1 (%)")
        accuracy.set_title(f"{entry['base']}: accuracy")
    return drawing

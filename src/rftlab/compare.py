"""Compute-matched comparison of RFT with SFT: maj1@1 with bootstrap intervals and the verdict they support.

Four models, each the best checkpoint on the validation split within its budget: `sft` (the gold data, the
demo's epochs), `rft` (gold plus the selected paths, the same epochs: more tokens, paper §3.3),
`sft_at_rft_tokens` (the gold data for RFT's tokens) and `rft_at_sft_tokens` (RFT's data for SFT's tokens).
RFT beats SFT beyond extra compute when it beats both `sft` and `sft_at_rft_tokens` with paired intervals above
zero. Intervals resample test problems (and seeds, given several): `rftlab.scaling`'s two-level bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rftlab.data import iter_jsonl

MODELS = {"sft": "SFT", "rft": "RFT", "sft_at_rft_tokens": "SFT at RFT's tokens",
          "rft_at_sft_tokens": "RFT at SFT's tokens"}  # fmt: skip
"""The demo's four models: their results.json keys and the names its report gives them."""
CONTRASTS = (("rft", "sft"), ("rft", "sft_at_rft_tokens"), ("rft_at_sft_tokens", "sft"))
"""RFT against SFT at its best epoch and at RFT's tokens; RFT's data against the gold data at SFT's tokens."""
LEVEL = 0.95


def greedy_outcomes(predictions: Path) -> list[float]:
    """1.0 or 0.0 per test problem, in file order: whether the greedy answer is right (an eval's predictions)."""
    return [float(record["correct_first"]) for _, record in iter_jsonl(predictions)]


def compare(outcomes: Mapping[str, Sequence[Sequence[float]]], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Each model's maj1@1 with its interval, the contrasts with paired intervals, and the verdict.

    `outcomes` maps each of `MODELS` to (seeds, problems) greedy outcomes on the same test problems."""
    from rftlab.scaling import bootstrap_ci, bootstrap_difference

    missing = [name for name in MODELS if name not in outcomes]
    if missing:
        raise ValueError(f"no outcomes for {', '.join(missing)}")
    models = {}
    for name in MODELS:
        mean, low, high = bootstrap_ci(outcomes[name], resamples=resamples, level=LEVEL, seed=seed)
        models[name] = {"maj1@1": round(mean, 2), "maj1@1_ci95": [round(low, 2), round(high, 2)]}
    contrasts = {}
    for a, b in CONTRASTS:
        difference, low, high = bootstrap_difference(outcomes[a], outcomes[b], resamples=resamples, level=LEVEL,
                                                     seed=seed)  # fmt: skip
        contrasts[f"{a} - {b}"] = {"difference": round(difference, 2), "ci95": [round(low, 2), round(high, 2)]}
    return {"models": models, "contrasts": contrasts, "verdict": verdict(contrasts)}


def verdict(contrasts: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """`supported` when RFT beats both SFT controls (both intervals above zero), `contradicted` when one of
    them beats RFT (an interval below zero), else `undecided`; with a sentence that gives the numbers."""
    against = [contrasts["rft - sft"], contrasts["rft - sft_at_rft_tokens"]]
    if all(c["ci95"][0] > 0 for c in against):
        status, lead = "supported", "RFT beats SFT beyond extra compute"
    elif any(c["ci95"][1] < 0 for c in against):
        status, lead = "contradicted", "SFT beats RFT once compute is matched"
    else:
        status, lead = "undecided", "RFT vs SFT beyond extra compute is undecided (an interval includes zero)"
    (best, matched) = (_points(c) for c in against)
    text = f"{lead}: RFT {best} over SFT at its best epoch, {matched} over SFT trained on RFT's tokens"
    equal = _points(contrasts["rft_at_sft_tokens - sft"])
    return {"status": status, "text": f"{text}; at SFT's tokens, RFT's data {equal} over the gold data."}


def _points(contrast: Mapping[str, Any]) -> str:
    low, high = contrast["ci95"]
    return f"{contrast['difference']:+.1f} points (95% CI {low:+.1f} to {high:+.1f})"

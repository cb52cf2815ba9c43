"""The compute-matched comparison: intervals, contrasts and the verdict they support."""

import numpy as np
import pytest

from rftlab.compare import MODELS, compare, verdict


def outcomes(shares, problems=400, seeds=1, seed=0):
    """(seeds, problems) 0/1 outcomes per model with the given shares right."""
    rng = np.random.default_rng(seed)
    return {name: (rng.random((seeds, problems)) < share).astype(float).tolist() for name, share in shares.items()}


def test_a_clear_gain_over_both_controls_is_supported_with_intervals_that_hold_the_means():
    result = compare(outcomes({"sft": 0.30, "rft": 0.55, "sft_at_rft_tokens": 0.32, "rft_at_sft_tokens": 0.50}))
    for name in MODELS:
        low, high = result["models"][name]["maj1@1_ci95"]
        assert low < result["models"][name]["maj1@1"] < high and high - low < 15
    gain = result["contrasts"]["rft - sft"]
    assert gain["difference"] == pytest.approx(result["models"]["rft"]["maj1@1"] - result["models"]["sft"]["maj1@1"],
                                               abs=0.02)  # fmt: skip
    assert 0 < gain["ci95"][0] < gain["difference"] < gain["ci95"][1]
    assert result["verdict"]["status"] == "supported"
    assert "RFT beats SFT beyond extra compute: RFT +" in result["verdict"]["text"]


def test_no_gain_is_undecided_and_a_loss_to_a_control_contradicts():
    same = compare(outcomes({name: 0.4 for name in MODELS}))
    assert same["verdict"]["status"] == "undecided"
    worse = compare(outcomes({"sft": 0.40, "rft": 0.45, "sft_at_rft_tokens": 0.70, "rft_at_sft_tokens": 0.40}))
    assert worse["verdict"]["status"] == "contradicted"
    assert worse["verdict"]["text"].startswith("SFT beats RFT once compute is matched")


def test_seeds_pool_into_one_interval_that_narrows_and_is_deterministic():
    shares = {"sft": 0.30, "rft": 0.36, "sft_at_rft_tokens": 0.30, "rft_at_sft_tokens": 0.33}
    one, three = compare(outcomes(shares, seeds=1)), compare(outcomes(shares, seeds=3))
    width = [r["contrasts"]["rft - sft"]["ci95"][1] - r["contrasts"]["rft - sft"]["ci95"][0] for r in (one, three)]
    assert width[1] < width[0]
    assert compare(outcomes(shares, seeds=3)) == three


def test_verdict_needs_both_controls_beaten():
    above, around = {"difference": 5.0, "ci95": [1.0, 9.0]}, {"difference": 2.0, "ci95": [-1.0, 5.0]}
    contrasts = {"rft - sft": above, "rft - sft_at_rft_tokens": around, "rft_at_sft_tokens - sft": around}
    assert verdict(contrasts)["status"] == "undecided"
    assert verdict({**contrasts, "rft - sft_at_rft_tokens": above})["status"] == "supported"
    with pytest.raises(ValueError, match="no outcomes for rft_at_sft_tokens"):
        compare({name: [[1.0]] for name in list(MODELS)[:3]})

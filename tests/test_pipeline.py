"""A micro end-to-end run of the demo: every stage writes well-formed files with consistent counts."""

import json
import shutil

import pytest

from rftlab.cli import main
from rftlab.jobs.demo import DemoJob

MICRO = dict(n_train=40, n_valid=10, n_test=12, preset="tiny", pretrain_tokens=20_000, epochs=2.0, k=2, eval_k=2)
MODELS = {
    "sft": "sft",
    "rft": "rft",
    "sft_at_rft_tokens": "sft-at-rft-tokens",
    "rft_at_sft_tokens": "rft-at-sft-tokens",
}


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, DemoJob(out=out, quiet=True, **MICRO).run()


def test_every_stage_writes_consistent_files(demo):
    out, results = demo
    train, test = lines(out / "data" / "train.jsonl"), lines(out / "data" / "test.jsonl")
    assert (len(train), len(test), len(lines(out / "data" / "valid.jsonl"))) == (40, 12, 10)
    facts = {name: json.loads((out / folder / "rftlab.json").read_text()) for name, folder in MODELS.items()}
    assert json.loads((out / "base" / "rftlab.json").read_text())["complete"]
    assert all(
        fact["complete"] and fact["validation"]["best"] in fact["validation"]["curve"] for fact in facts.values()
    )
    samples = lines(out / "samples" / "sft-k2.jsonl")
    assert [s["id"] for s in samples] == [p["id"] for p in train for _ in range(2)]
    stats = json.loads((out / "reject-stats.json").read_text())
    rft = lines(out / "rft.jsonl")
    assert stats["samples"] == 80 and stats["problems"] == 40
    assert len(rft) == 40 + stats["selected"] and sum(r["source"] == "gold" for r in rft) == 40
    assert results["rft"]["examples"] == results["rft_at_sft_tokens"]["examples"] == len(rft)
    assert results["sft"]["examples"] == results["sft_at_rft_tokens"]["examples"] == 40
    for name in MODELS:
        summary = json.loads((out / "eval" / f"{name}.json").read_text())
        assert summary["n"] == 12 and summary["k"] == 2 and 0 <= summary["maj1@1"] <= 100
        assert len(lines(out / "eval" / f"{name}.greedy.jsonl")) == 12
        assert len(lines(out / "eval" / f"{name}.samples.jsonl")) == 24
        model = results[name]
        assert model["maj1@1"] == pytest.approx(summary["maj1@1"], abs=0.01) and model["pass@k"] == summary["pass@k"]
        low, high = model["maj1@1_ci95"]
        assert low <= model["maj1@1"] <= high and model["tokens_seen"] == facts[name]["tokens_seen"]


def test_the_controls_match_compute_and_rft_gets_the_same_epochs(demo):
    _, results = demo
    tokens = {name: results[name]["tokens_seen"] for name in MODELS}
    assert results["sft"]["epochs"] == results["rft"]["epochs"] == 2.0  # the paper: the same epochs, more tokens
    assert (tokens["rft"] > tokens["sft"]) == (results["selection"]["selected"] > 0)
    assert abs(tokens["sft_at_rft_tokens"] - tokens["rft"]) < 0.03 * tokens["rft"]
    assert abs(tokens["rft_at_sft_tokens"] - tokens["sft"]) < 0.03 * tokens["sft"]
    assert set(results["contrasts"]) == {"rft - sft", "rft - sft_at_rft_tokens", "rft_at_sft_tokens - sft"}
    difference = results["contrasts"]["rft - sft"]
    assert difference["difference"] == pytest.approx(results["rft"]["maj1@1"] - results["sft"]["maj1@1"], abs=0.02)
    assert results["verdict"]["status"] in ("supported", "undecided", "contradicted")


def test_report_has_the_table_the_plot_and_the_timings(demo):
    out, results = demo
    report = (out / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ("SFT", "RFT", "SFT at RFT's tokens", "RFT at SFT's tokens"))
    assert "maj1@2" in report and results["verdict"]["text"] in report
    assert all(f"| {stage} |" in report for stage in results["seconds"])
    for plot in ("accuracy.png", "validation.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_reuses_every_stage(demo, capsys):
    out, results = demo
    argv = ["demo", "--out", str(out), "--quiet", "--n-train", "40", "--n-test", "12", "--preset", "tiny",
            "--pretrain-tokens", "20000", "--epochs", "2", "--k", "2", "--eval-k", "2", "--n-valid", "10"]  # fmt: skip
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert {key: value for key, value in again.items() if key != "seconds"} == {
        key: value for key, value in results.items() if key != "seconds"
    }
    assert sum(again["seconds"].values()) < 0.5 * sum(results["seconds"].values())
    assert "| RFT |" in capsys.readouterr().out


def test_a_demo_folder_of_other_settings_is_refused_and_overwrite_rebuilds_it(demo, tmp_path, capsys):
    out, _ = demo
    argv = ["demo", "--out", str(out), "--quiet", "--n-train", "30", "--n-test", "12", "--preset", "tiny", "--n-valid",
            "10"]  # fmt: skip
    assert main(argv) == 2
    assert f"{out / 'data'} holds a toy world made with other settings (train 40, not 30)" in capsys.readouterr().err
    folder = tmp_path / "demo"
    shutil.copytree(out, folder)
    rebuilt = DemoJob(out=folder, quiet=True, overwrite=True, **{**MICRO, "n_train": 20}).run()
    assert rebuilt["world"]["train"] == 20 and len((folder / "data" / "train.jsonl").read_text().splitlines()) == 20
    assert json.loads((folder / "sft" / "rftlab.json").read_text())["examples"] == 20

"""A micro end-to-end run of the demo: every stage writes well-formed files with consistent counts."""

import json
import shutil

import pytest

from rftlab.cli import main
from rftlab.jobs.demo import DemoJob

MICRO = dict(n_train=40, n_test=12, preset="tiny", pretrain_tokens=20_000, sft_tokens=8_000, k=2, eval_k=2)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, DemoJob(out=out, quiet=True, **MICRO).run()


def test_every_stage_writes_consistent_files(demo):
    out, results = demo
    train, test = lines(out / "data" / "train.jsonl"), lines(out / "data" / "test.jsonl")
    assert (len(train), len(test)) == (40, 12)
    assert all(json.loads((out / m / "rftlab.json").read_text())["complete"] for m in ("base", "sft", "rft"))
    samples = lines(out / "samples" / "sft-k2.jsonl")
    assert [s["id"] for s in samples] == [p["id"] for p in train for _ in range(2)]
    stats = json.loads((out / "reject-stats.json").read_text())
    rft = lines(out / "rft.jsonl")
    assert stats["samples"] == 80 and stats["problems"] == 40
    assert len(rft) == 40 + stats["selected"] and sum(r["source"] == "gold" for r in rft) == 40
    assert results["rft_examples"] == len(rft)
    assert json.loads((out / "rft" / "rftlab.json").read_text())["examples"] == len(rft)
    for name in ("SFT", "RFT"):
        summary = json.loads((out / "eval" / f"{name}.json").read_text())
        assert summary["n"] == 12 and summary["k"] == 2 and 0 <= summary["maj1@1"] <= 100
        assert len(lines(out / "eval" / f"{name}.greedy.jsonl")) == 12
        assert len(lines(out / "eval" / f"{name}.samples.jsonl")) == 24
        assert summary == results["evaluations"][name]


def test_report_has_the_table_the_plot_and_the_timings(demo):
    out, results = demo
    report = (out / "report.md").read_text()
    assert "| SFT |" in report and "| RFT |" in report and "maj1@2" in report
    assert all(f"| {stage} |" in report for stage in results["seconds"])
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_reuses_every_stage(demo, capsys):
    out, results = demo
    argv = ["demo", "--out", str(out), "--quiet", "--n-train", "40", "--n-test", "12", "--preset", "tiny",
            "--pretrain-tokens", "20000", "--sft-tokens", "8000", "--k", "2", "--eval-k", "2"]  # fmt: skip
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["evaluations"] == results["evaluations"]
    assert sum(again["seconds"].values()) < 0.5 * sum(results["seconds"].values())
    assert "| RFT |" in capsys.readouterr().out


def test_a_demo_folder_of_other_settings_is_refused_and_overwrite_rebuilds_it(demo, tmp_path, capsys):
    out, _ = demo
    argv = ["demo", "--out", str(out), "--quiet", "--n-train", "30", "--n-test", "12", "--preset", "tiny"]
    assert main(argv) == 2
    assert f"{out / 'data'} holds a toy world made with other settings (train 40, not 30)" in capsys.readouterr().err
    folder = tmp_path / "demo"
    shutil.copytree(out, folder)
    rebuilt = DemoJob(out=folder, quiet=True, overwrite=True, **{**MICRO, "n_train": 20}).run()
    assert rebuilt["world"]["train"] == 20 and len((folder / "data" / "train.jsonl").read_text().splitlines()) == 20
    assert json.loads((folder / "sft" / "rftlab.json").read_text())["examples"] == 20

"""A micro end-to-end run of the demo: every stage writes well-formed files with consistent counts."""

import json
import shutil

import pytest

from conftest import CHAT, save_tiny_checkpoint, write_lines
from rftlab import pipeline
from rftlab.cli import main
from rftlab.jobs.demo import DEFAULTS, DemoJob

MICRO = dict(n_train=40, n_valid=10, n_test=12, preset="tiny", corpus_solved=2_000, pretrain_tokens=20_000, epochs=2.0,
             k=2, eval_k=2)  # fmt: skip
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
    base = json.loads((out / "base" / "rftlab.json").read_text())
    assert base["complete"] and base["corpus_solved"] == 2_000  # what `rftlab sft`'s default recipe reads
    assert results["world"]["pretrain_solved"] == 2_000  # a base that has seen the task, fine-tuned gently:
    assert {fact["settings"]["recipe"]["learning_rate"] for fact in facts.values()} == {3e-4}  # toy-finetune's
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
            "--pretrain-tokens", "20000", "--epochs", "2", "--k", "2", "--eval-k", "2", "--n-valid", "10",
            "--corpus-solved", "2000"]  # fmt: skip
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
            "10", "--corpus-solved", "2000"]  # fmt: skip
    assert main(argv) == 2
    assert f"{out / 'data'} holds data made with other settings (train 40, not 30)" in capsys.readouterr().err
    folder = tmp_path / "demo"
    shutil.copytree(out, folder)
    rebuilt = DemoJob(out=folder, quiet=True, overwrite=True, **{**MICRO, "n_train": 20}).run()
    assert rebuilt["world"]["train"] == 20 and len((folder / "data" / "train.jsonl").read_text().splitlines()) == 20
    assert json.loads((folder / "sft" / "rftlab.json").read_text())["examples"] == 20


def test_a_preset_family_fills_the_settings_left_unset_and_refuses_the_other_family_s():
    toy, real = DemoJob(), DemoJob(preset="smollm2", n_train=10)
    assert (toy.epochs, toy.k, toy.select, toy.pretrain_tokens) == (10.0, 8, "accuracy", 4_000_000)
    assert (real.n_train, real.epochs, real.select, real.eval_k, real.pretrain_tokens) == (10, 3.0, "loss", 0, None)
    assert (toy.corpus_solved, toy.recipe(), DemoJob(corpus_solved=0).recipe()) == (16_000, "toy-finetune", "toy-sft")
    assert (real.corpus_solved, real.recipe()) == (None, "smollm2")
    assert {key: getattr(toy, key) for key in DEFAULTS["toy"]} == DEFAULTS["toy"]
    assert DemoJob(preset="smollm2", n_test=0).n_test == 0  # all of GSM8K's test split
    refused = [dict(model="base"), dict(preset="smollm2", pretrain_tokens=100),
               dict(preset="smollm2", corpus_solved=10), dict(corpus_solved=-1), dict(n_test=0), dict(epochs=0.0),
               dict(preset="smollm2", k=0)]  # fmt: skip
    for settings in refused:
        with pytest.raises(ValueError):
            DemoJob(**settings)


def gsm8k_like(n, offset):
    return [{"question": f"Ann has {i} pens and buys 2. How many?", "answer": f"{i}+2=<<{i}+2={i + 2}>>{i + 2}\n"
             f"#### {i + 2}"} for i in range(offset, offset + n)]  # fmt: skip


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real-model demo on a GSM8K-like folder, with a tiny chat checkpoint standing in for SmolLM2."""
    folder = tmp_path_factory.mktemp("real")
    source = folder / "gsm8k"
    source.mkdir()
    write_lines(source / "train.jsonl", gsm8k_like(30, 0))
    write_lines(source / "test.jsonl", gsm8k_like(8, 100))
    base = save_tiny_checkpoint(folder / "tiny", seed=0, chat_template=CHAT)
    settings = dict(preset="smollm2", model=str(base), gsm8k=str(source), n_train=12, n_valid=4, n_test=0, epochs=1.0,
                    eval_count=1, k=2)  # fmt: skip
    return folder / "demo", settings, DemoJob(out=folder / "demo", quiet=True, **settings).run()


def test_the_real_preset_fine_tunes_the_given_model_on_gsm8k_subsets_and_selects_by_validation_loss(real):
    out, settings, results = real
    splits = {split: lines(out / "data" / f"{split}.jsonl") for split in ("train", "valid", "test")}
    ids = {split: [problem["id"] for problem in problems] for split, problems in splits.items()}
    assert [len(ids[split]) for split in splits] == [12, 4, 8] and ids["test"] == [f"test-{i}" for i in range(8)]
    assert not set(ids["train"]) & set(ids["valid"]) and {i[:6] for i in ids["train"] + ids["valid"]} == {"train-"}
    assert splits["train"][0]["query"].startswith("Ann has") and not (out / "base").exists()
    facts = json.loads((out / "sft" / "rftlab.json").read_text())
    assert facts["settings"]["recipe"]["template"] == "chat" and facts["settings"]["validation"]["metric"] == "loss"
    assert results["test_problems"] == 8 and results["config"]["gsm8k"] == settings["gsm8k"]
    assert all(results[name]["validation_metric"] == "loss" and "pass@k" not in results[name] for name in MODELS)
    report = (out / "report.md").read_text()
    assert "RFT on GSM8K with" in report and "pass@" not in report


def test_the_real_preset_refuses_a_folder_of_other_gsm8k_subsets(real, capsys):
    out, settings, _ = real
    argv = ["demo", "--out", str(out), "--quiet", *DemoJob(**{**settings, "n_train": 10}).argv()[1:]]
    assert main(argv) == 2
    assert "holds data made with other settings (sizes [12, 4, 0], not [10, 4, 0])" in capsys.readouterr().err


class Stop(Exception):
    """Ends a demo at its first stage."""


def test_overwrite_of_a_real_preset_s_demo_keeps_an_out_base_it_never_wrote(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "mine.txt").write_text("the user's")
    (tmp_path / "results.json").write_text("{}")

    def stop(self, name, work):
        raise Stop(name)

    monkeypatch.setattr(pipeline.Stages, "run", stop)
    with pytest.raises(Stop):
        pipeline.run_demo(DemoJob(out=tmp_path, preset="smollm2", overwrite=True, quiet=True))
    assert (tmp_path / "base" / "mine.txt").exists() and not (tmp_path / "results.json").exists()

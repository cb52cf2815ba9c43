"""Outputs never replace inputs or files rftlab did not write, have one writer at a time, and every bad value
is refused before any work, naming the option or the study file's key (rftlab.outputs, jobs' ranges)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rftlab.cli import main
from rftlab.outputs import OutputError, check_distinct, check_ours, lock_path, locked
from rftlab.study import load_config

PROBLEM = {"query": "Ann has 2 pens and buys 3. How many?", "response": "2+3=<<2+3=5>>5\n#### 5"}


@pytest.fixture
def files(tmp_path):
    """A problem file, a samples file of rftlab's (with its .meta.json), a corpus and a checkpoint-like folder."""
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(PROBLEM) + "\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"id": "0", "response": "#### 5"}) + "\n")
    (tmp_path / "s.jsonl.meta.json").write_text("{}")
    corpus = tmp_path / "pretrain.txt"
    corpus.write_text("a corpus\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {"train": train, "samples": samples, "corpus": corpus, "model": model, "dir": tmp_path}


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(argv, capsys, *needles):
    """Runs the command; asserts exit 2 and that the message holds every needle; returns the message."""
    assert main(argv) == 2
    message = capsys.readouterr().err
    for needle in needles:
        assert needle in message, message
    return message


# An output never replaces an input ----------------------------------------------------------------


def test_outputs_equal_to_inputs_are_refused_and_nothing_changes(files, capsys):
    train, samples, model, before = files["train"], files["samples"], files["model"], snapshot(files["dir"])
    cases = [
        (["sample", "--model", str(model), "--data", str(train), "--out", str(train)], "--data"),
        (["reject", "--train", str(train), "--out", str(train), str(samples)], "--train"),
        (["reject", "--train", str(train), "--out", str(samples), str(samples)], "SAMPLES.jsonl"),
        (["eval", "--samples", str(samples), "--data", str(train), "--out", str(train)], "--data"),
        (["sft", "--model", str(model), "--data", str(train), "--out", str(model)], "--model"),
        (["pretrain", "--corpus", str(files["corpus"]), "--out", str(files["dir"] / "." / "pretrain.txt")], "--corpus"),
    ]
    for argv, source in cases:
        refused(argv, capsys, "an output never replaces an input", source)
    out = files["dir"] / "rft.jsonl"
    refused(["reject", "--train", str(train), "--out", str(out), "--stats", str(out), str(samples)], capsys,
            "--stats", "--out", "the same file")  # fmt: skip
    assert snapshot(files["dir"]) == before


def test_existing_files_rftlab_did_not_write_are_refused(files, capsys):
    train, samples, corpus, before = files["train"], files["samples"], files["corpus"], snapshot(files["dir"])
    refused(["sample", "--model", str(files["model"]), "--data", str(train), "--out", str(corpus)], capsys,
            "pretrain.txt.meta.json", "will not write over it")  # fmt: skip
    refused(["reject", "--train", str(train), "--out", str(corpus), str(samples)], capsys, "gold line")
    refused(["eval", "--samples", str(samples), "--data", str(train), "--out", str(corpus)], capsys,
            "not JSON that rftlab wrote")  # fmt: skip
    refused(["sft", "--model", "m", "--data", str(train), "--out", str(files["dir"])], capsys, "no rftlab.json")
    refused(["toyworld", "--out", str(corpus)], capsys, "is not a folder")
    assert snapshot(files["dir"]) == before


def test_rftlab_s_own_outputs_and_empty_ones_are_accepted(tmp_path):
    gold = tmp_path / "rft.jsonl"
    gold.write_text(json.dumps({**PROBLEM, "id": "0", "source": "gold"}) + "\n")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"format": "rftlab.reject-stats/1"}))
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    run = tmp_path / "run"
    (run / "trainer").mkdir(parents=True)  # a training run killed before it wrote rftlab.json
    for flag, path, kind in [("--out", gold, "rft"), ("--stats", stats, "json"), ("--out", empty, "samples"),
                             ("--out", run, "checkpoint"), ("--out", tmp_path / "new", "world")]:  # fmt: skip
        check_ours(flag, path, kind)
    with pytest.raises(OutputError, match="the same file"):
        check_distinct([], [("--out", gold), ("--stats", tmp_path / "." / "rft.jsonl")])


# One writer per output ----------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rftlab.outputs import locked
    with locked("--out", Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_s_lock_is_taken_over(files, capsys):
    out = files["dir"] / "samples.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        refused(["sample", "--model", str(files["model"]), "--data", str(files["train"]), "--out", str(out)], capsys,
                f"another rftlab run (pid {holder.pid}) is writing it")  # fmt: skip
        assert time.perf_counter() - start < 5  # at once, not after waiting
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # a kill -9 leaves the file, but the kernel dropped its lock
    with locked("--out", out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


# Every bad value is refused before any work -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sample", "--top-p", "0"], "--top-p: must be in (0, 1], got 0.0"),
        (["sample", "--top-p", "1.5"], "--top-p: must be in (0, 1]"),
        (["sample", "--temperature", "-1"], "--temperature: must be >= 0"),
        (["sample", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
        (["sample", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["sample", "-k", "0"], "-k: must be >= 1"),
        (["sample", "-k", "-1"], "-k: must be >= 1"),
        (["eval", "-k", "0"], "-k: must be >= 1"),
        (["eval", "--shots", "-1"], "--shots: must be >= 0"),
        (["sft", "--epochs", "0"], "--epochs: must be > 0"),
        (["sft", "--epochs", "-1"], "--epochs: must be > 0"),
        (["sft", "--tokens", "-100"], "--tokens: must be >= 1"),
        (["sft", "--max-length", "-1"], "--max-length: must be >= 2"),
        (["sft", "--device-batch", "0"], "--device-batch: must be >= 1"),
        (["sft", "--log-every", "0"], "--log-every: must be >= 1"),
        (["sft", "--lr", "-1"], "--lr: must be > 0"),
        (["toyworld", "--n-train", "-1"], "--n-train: must be >= 1"),
        (["study", "--jobs", "0"], "--jobs: must be >= 1"),
    ],
)
def test_out_of_range_options_exit_2_naming_the_option(files, capsys, argv, needle):
    where = {"sample": ["--model", "m", "--data", str(files["train"]), "--out", str(files["dir"] / "s2.jsonl")],
             "eval": ["--model", "m", "--data", str(files["train"]), "--out", str(files["dir"] / "e.json")],
             "sft": ["--model", "m", "--data", str(files["train"]), "--out", str(files["dir"] / "sft")],
             "toyworld": ["--out", str(files["dir"] / "w")], "study": [str(files["dir"] / "study.yaml")]}  # fmt: skip
    before = snapshot(files["dir"])
    refused([*argv, *where[argv[0]]], capsys, needle)
    assert snapshot(files["dir"]) == before


STUDY = """\
name: bad
data:
  toyworld: {n_train: 20, n_test: 10}
bases:
  - {name: b, preset: tiny, pretrain_tokens: 1000}
experiments:
  k: {bases: [b], k: [1]}
"""


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("sample: {temperature: -1}\n", "bad.yaml: sample: temperature: must be >= 0, got -1.0"),
        ("train: {tokens: -5}\n", "bad.yaml: train: tokens: must be >= 1, got -5"),
        ("sample: {max_new_tokens: 0}\n", "bad.yaml: sample: max_new_tokens: must be >= 1, got 0"),
        ("sample: {temperature: hot}\n", "bad.yaml: sample: temperature: expected a number, got 'hot'"),
        ("seeds: [0.5]\n", "bad.yaml: seeds: expected a whole number, got 0.5"),
        ("name: twice\n", "key 'name' given twice"),
    ],
)
def test_bad_study_values_name_the_file_and_key(tmp_path, change, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(STUDY + change)
    with pytest.raises(ValueError) as error:
        load_config(path)
    assert needle in str(error.value)


def test_k_values_must_be_whole_numbers(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(STUDY.replace("k: [1]", "k: [2.5]"))
    with pytest.raises(ValueError, match=r"bad.yaml: experiments: k: k: expected a whole number, got 2.5"):
        load_config(path)
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not UTF-8"):
        load_config(path)

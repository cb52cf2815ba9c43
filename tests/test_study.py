"""`rftlab study`: configuration checks, the cell cache (reuse, dependents, resume), results and report."""

import json
import shutil
import typing
from pathlib import Path

import pytest

from rftlab import cells as cells_module
from rftlab import study
from rftlab.budgets import is_checked
from rftlab.cli import main
from rftlab.data import read_problems
from rftlab.study import StudyError, build_plan, parse_config, run_study

MICRO = {
    "name": "micro",
    "seeds": [0],
    "data": {"toyworld": {"n_train": 60, "n_test": 20, "seed": 0, "corpus_docs": 200}},
    "bases": [
        {"name": "a", "preset": "tiny", "pretrain_tokens": 4000},
        {"name": "b", "preset": "tiny", "pretrain_tokens": 8000},
    ],
    "train": {"epochs": 1, "batch_size": 8, "device_batch": 8},
    "sample": {"temperature": 0.7, "max_new_tokens": 60},
    "eval": {"max_new_tokens": 60},
    "experiments": {
        "pretraining": {"bases": "all"},
        "data": {"bases": ["b"], "fractions": ["1/4", "1/2", 1], "epochs": "both"},
        "k": {
            "bases": ["b"],
            "k": [1, 2],
            "no_dedup": [2],
            "canonical": [2],
            "equal_tokens": [2],
            "sft_at_rft_tokens": [2],
        },
        "union": {"sources": "all", "k": 2, "targets": "all"},
        "budget": {"bases": ["b"], "round": 1, "until_correct": [1], "max_k": 2, "uniform": [2]},
        "verifier": {"bases": ["b"], "k": 2, "verifiers": ["paper"], "calculator_check": [True, False]},
    },
}


def config(changes=None, experiments=None):
    raw = json.loads(json.dumps(MICRO))
    for section, values in (changes or {}).items():
        raw[section] = {**raw[section], **values}
    if experiments is not None:
        raw["experiments"] = experiments
    return parse_config(raw, "micro.yaml")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, run_study(config(), out, quiet=True)


def runs_by_name(results):
    return {run["name"]: run for run in results["runs"]}


def test_every_experiment_family_is_planned_and_reported(micro):
    out, results = micro
    runs = runs_by_name(results)
    assert results["format"] == "rftlab.study-results/1" and results["data"] == {
        "kind": "toyworld", "train": 60, "test": 20}  # fmt: skip
    assert [base["name"] for base in results["bases"]] == ["a", "b"]
    assert all(base["parameters"] > 0 and base["loss"] > 0 for base in results["bases"])
    assert all(len(run["correct"]) == 20 for run in runs.values())
    assert all(run["maj1@1"] == pytest.approx(100 * sum(run["correct"]) / 20) for run in runs.values())
    data = sorted((r["fraction"], r["epochs"], r["examples"]) for r in runs.values() if "data" in r["families"])
    assert data == [(0.25, 1, 15), (0.25, 4, 15), (0.5, 1, 30), (0.5, 2, 30), (1.0, 1, 60)]
    assert set(runs["sft-b-e1-s0"]["families"]) == {"pretraining", "data", "k", "union", "budget", "verifier"}
    union = runs["rft-a-union-k2-s0"]
    assert union["sources"] == ["a", "b"] and union["rft_data"]["samples_per_problem"] == 4
    assert union["union"] == "union" and runs["rft-b-k2-s0"]["union"] is None
    own = runs["rft-b-k2-s0"]
    assert own["sources"] == ["b"] and own["rft_data"]["samples_per_problem"] == 2
    assert own["examples"] == 60 + own["rft_data"]["selected"]
    assert runs["rft-b-k1-s0"]["rft_data"]["samples_per_problem"] == 1  # the first path of the k=2 sampling
    assert runs["rft-b-k2-canonical-s0"]["world"] == "canonical"
    control = runs["rft-b-k2-eqtokens-s0"]
    assert control["budget"] == "tokens" and control["tokens"] <= runs["sft-b-e1-s0"]["tokens"] + 64
    matched = runs["sft-b-at-rft-b-k2-s0"]  # SFT on the gold data for the tokens RFT at k=2 trained on
    assert matched["roles"] == [{"family": "k", "base": "b", "variant": "sft at rft tokens", "k": 2, "fraction": 1.0,
                                 "epochs": None, "rule": None, "union": None, "until_correct": None,
                                 "checker": None}]  # fmt: skip
    assert matched["examples"] == 60 and abs(matched["tokens"] - own["tokens"]) <= 8 * 64
    assert {role["family"] for role in own["roles"]} == {"k", "union", "budget", "verifier"}  # k=2 shared
    budget = runs["rft-b-until1-max2-round1-s0"]  # rounds of 1 path until 1 is checked, at most 2
    assert [(r["family"], r["variant"], r["k"], r["until_correct"]) for r in budget["roles"]] == [
        ("budget", "budget", 2, 1)]  # fmt: skip
    spent, problems = budget["rft_data"]["samples"], budget["rft_data"]["problems"]
    samples = next((out / "cells" / "sample").glob("sft-b-e1-s0-k2-*")) / "samples.jsonl"
    train = next((out / "cells" / "world").glob("default-*")) / "data" / "train.jsonl"
    gold = {problem.id: problem.answer for problem in read_problems(train)}
    first = [json.loads(line) for line in samples.read_text().splitlines()][::2]
    unchecked_first = sum(not is_checked(path["response"], gold[path["id"]]) for path in first)
    assert problems == 60 and spent == 60 + unchecked_first and own["rft_data"]["samples"] == 120
    assert budget["rft_data"]["coverage"] == own["rft_data"]["coverage"]  # a second path only where the first failed
    unchecked = runs["rft-b-k2-nocalc-s0"]  # the same samples, every path with the right answer kept
    assert [(r["family"], r["variant"], r["checker"]) for r in unchecked["roles"]] == [("verifier", "checker", "paper")]
    assert unchecked["rft_data"]["correct_per_problem"] == own["rft_data"]["correct_per_problem"]
    assert unchecked["rft_data"]["checked_per_problem"] == own["rft_data"]["correct_per_problem"]
    assert own["rft_data"]["checked_per_problem"] <= own["rft_data"]["correct_per_problem"]
    assert results["cells"]["ran"] == results["cells"]["total"] == 54
    report = (out / "report.md").read_text()
    assert "## Findings" in report and "| rft-a-union-k2 |" in report
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "budget.png", "data.png", "gain.png", "k.png", "pretraining.png", "union.png", "verifier.png"]  # fmt: skip
    assert "data:image/png;base64," in (out / "report.html").read_text()
    analysis = json.loads((out / "analysis.json").read_text())
    assert len(analysis["findings"]) == 16  # the paper's 12, forecasts (too few runs), budget, 2 of the checkers
    assert analysis["budget"]["bases"][0]["comparisons"][0]["uniform_k"] == 2


def test_a_second_run_does_no_work(micro):
    out, results = micro
    again = run_study(config(), out, quiet=True)
    assert again["cells"]["ran"] == 0
    assert again["runs"] == results["runs"]


def kinds_of_changed_cells(before, after):
    old = set(build_plan(before, Path("cache")).cells)
    return sorted({cell.kind for key, cell in build_plan(after, Path("cache")).cells.items() if key not in old})


def test_a_changed_setting_changes_only_the_cells_that_depend_on_it():
    assert kinds_of_changed_cells(config(), config()) == []
    assert kinds_of_changed_cells(config(), config({"eval": {"max_new_tokens": 50}})) == ["eval"]
    assert kinds_of_changed_cells(config(), config({"sample": {"temperature": 1.0}})) == [
        "budget", "eval", "reject", "sample", "sft"]  # fmt: skip
    changed = set(build_plan(config({"sample": {"temperature": 1.0}}), Path("c")).cells)
    plan = build_plan(config(), Path("c"))
    unchanged_sft = {c.label for k, c in plan.cells.items() if c.kind == "sft" and k in changed}
    gold = {
        c.label for c in plan.cells.values() if c.kind == "sft" and c.label.startswith("sft-") and "-at-" not in c.label
    }
    assert unchanged_sft == gold  # SFT for RFT's tokens depends on the samples, as RFT does
    assert kinds_of_changed_cells(config(), config({"train": {"epochs": 2}})) == [
        "budget", "eval", "reject", "sample", "sft"]  # fmt: skip


def test_a_changed_eval_setting_reruns_only_the_evaluations(micro, tmp_path):
    out, _ = micro
    cache = tmp_path / "cells"
    shutil.copytree(out / "cells", cache)
    results = run_study(config({"eval": {"max_new_tokens": 50}}), tmp_path, cache=cache, quiet=True)
    assert results["cells"]["ran"] == sum(1 for run in results["runs"]) == 18


def test_an_interrupted_study_resumes_with_the_same_results(micro, tmp_path, monkeypatch):
    _, results = micro
    small = config(experiments={"pretraining": {"bases": "all"}})
    real_run, calls = study.CellRunner.run, []

    def interrupt_after_four(self, cell):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(cell.label)
        return real_run(self, cell)

    monkeypatch.setattr(study.CellRunner, "run", interrupt_after_four)
    with pytest.raises(KeyboardInterrupt):
        run_study(small, tmp_path, quiet=True)
    monkeypatch.setattr(study.CellRunner, "run", real_run)
    resumed = run_study(small, tmp_path, quiet=True)
    assert resumed["cells"]["total"] == 7 and resumed["cells"]["ran"] == 3
    expected = runs_by_name(results)
    for run in resumed["runs"]:  # same seeds, same machine: the same models as in the full study
        assert run["correct"] == expected[run["name"]]["correct"]
        assert run["tokens"] == expected[run["name"]]["tokens"]


def test_parallel_jobs_run_cells_as_subprocesses_with_the_same_results(micro, tmp_path):
    _, results = micro
    small = config(experiments={"pretraining": {"bases": "all"}})
    parallel = run_study(small, tmp_path, jobs=2, quiet=True)
    assert parallel["cells"]["ran"] == 7
    expected = runs_by_name(results)
    assert all(run["correct"] == expected[run["name"]]["correct"] for run in parallel["runs"])
    assert all((cell / "log.txt").is_file() for cell in (tmp_path / "cells" / "sft").iterdir())


def test_subsets_are_seeded_and_sized(micro):
    out, _ = micro
    subsets = sorted((out / "cells" / "subset").glob("*/train.jsonl"))
    sizes = sorted(len(path.read_text().splitlines()) for path in subsets)
    assert sizes == [15, 30]
    train = (next((out / "cells" / "world").glob("default-*")) / "data" / "train.jsonl").read_text().splitlines()
    assert all(set(path.read_text().splitlines()) <= set(train) for path in subsets)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"bases": []}, "at least one base"),
        ({"bases": [{"name": "a", "preset": "tiny"}]}, "needs pretrain_tokens"),
        ({"bases": [{"name": "a", "preset": "tiny", "model": "x", "pretrain_tokens": 1}]}, "either preset"),
        ({"experiments": {"data": {"bases": ["zz"], "fractions": [1]}}}, "unknown base 'zz'"),
        ({"experiments": {"data": {"fractions": ["1/0"]}}}, "not a number or a ratio"),
        ({"experiments": {"data": {"fractions": [2]}}}, "not in (0, 1]"),
        ({"experiments": {"union": {"sources": ["a"], "k": 2}}}, "at least two models"),
        ({"experiments": {"k": {"k": [0]}}}, "must be >= 1, got 0"),
        ({"experiments": {"k": {"k": [1], "sft_at_rft_tokens": [2]}}}, "k=2 is not in k"),
        ({"experiments": {}}, "name at least one"),
        ({"experiments": {"budget": {"until_correct": [1], "max_k": 2, "uniform": [2]}}}, "below round 4"),
        ({"experiments": {"budget": {"until_correct": [1], "max_k": 8}}}, "uniform: give at least one k"),
        ({"experiments": {"verifier": {"k": 2, "verifiers": ["gpt"]}}}, "'gpt' is not one of paper, math-verify"),
        ({"experiments": {"verifier": {"k": 2, "calculator_check": [True]}}}, "only the paper's checker"),
        ({"experiments": {"verifier": {"k": 2, "calculator_check": "no"}}}, "calculator_check: expected a list"),
        ({"train": {"epochs": 1, "tokens": 5}}, "not both"),
        ({"train": {"eval_count": 4}}, "train: eval_count needs a validation split"),
        ({"data": {"train": "t.jsonl", "test": "t.jsonl"}, "experiments": {"k": {"canonical": [2]}}}, "toy world"),
    ],
)
def test_configuration_errors_name_the_file_and_the_entry(change, message):
    raw = {**json.loads(json.dumps(MICRO)), **change}
    with pytest.raises(StudyError, match=r"micro\.yaml") as error:
        parse_config(raw, "micro.yaml")
    assert message in str(error.value)


def test_the_cli_lists_cells_and_reports_bad_files(tmp_path, capsys):
    import yaml

    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO))
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 54 and all(line.startswith("to run") for line in listing)
    assert "rftlab toyworld --out" in listing[0] and "--n-train 60" in listing[0]
    path.write_text("name: [unclosed")
    assert main(["study", str(path)]) == 2
    assert f"{path}: not valid YAML" in capsys.readouterr().err


def test_gsm8k_files_as_study_data(gsm8k_dir, tmp_path):
    raw = {**json.loads(json.dumps(MICRO)), "data": {"train": str(gsm8k_dir / "train.jsonl"),
                                                     "test": str(gsm8k_dir / "test.jsonl")}}  # fmt: skip
    raw["experiments"] = {"pretraining": {"bases": "all"}, "data": {"fractions": ["1/4", 1]}}
    raw["bases"] = [{"name": "llama-7b", "model": "huggyllama/llama-7b", "loss": 1.8, "parameters": 6.7e9},
                    {"name": "llama-13b", "model": "huggyllama/llama-13b", "loss": 1.73}]  # fmt: skip
    plan = build_plan(parse_config(raw, "gsm8k.yaml"), tmp_path)
    sft = next(c for c in plan.cells.values() if c.kind == "sft" and c.label == "sft-llama-7b-e1-s0")
    argv = sft.job.argv()
    assert argv[argv.index("--model") + 1] == "huggyllama/llama-7b"
    assert argv[argv.index("--data") + 1] == str((gsm8k_dir / "train.jsonl").resolve())
    assert not any(c.kind == "pretrain" and c.external is None for c in plan.cells.values())


def test_a_launcher_runs_training_and_sampling_cells(tmp_path, monkeypatch):
    import sys

    Recorded.calls = []
    raw = {**json.loads(json.dumps(MICRO)), "launch": "accelerate launch --num_processes 2"}
    raw["experiments"] = {"k": {"bases": ["a"], "k": [1]}}
    plan = build_plan(parse_config(raw, "micro.yaml"), tmp_path)
    monkeypatch.setattr(cells_module.subprocess, "Popen", Recorded)
    runner = study.CellRunner(subprocesses=True, threads=1, quiet=True)
    by_kind = {}
    for cell in plan.ordered():
        by_kind.setdefault(cell.kind, cell)
    for kind in ("pretrain", "sft", "sample", "eval"):
        runner.run(by_kind[kind])
    prefixes = [argv[: argv.index("rftlab") + 2] for argv in Recorded.calls]
    launch = ["accelerate", "launch", "--num_processes", "2", "-m", "rftlab"]
    expected = [[*launch, kind] for kind in ("pretrain", "sft", "sample")] + [[sys.executable, "-m", "rftlab", "eval"]]
    assert prefixes == expected
    assert all("--quiet" in argv for argv in Recorded.calls)


class Recorded:
    """A stand-in for subprocess.Popen that records the command and succeeds."""

    calls: typing.ClassVar[list] = []

    def __init__(self, argv, env=None, **_):
        self.argv, self.env = argv, env
        Recorded.calls.append(argv)

    def wait(self, timeout=None):
        return 0


def test_bases_bring_their_own_settings_and_launchers(tmp_path):
    raw = {**json.loads(json.dumps(MICRO)), "launch": {"sft": "accelerate launch --config_file ddp.yaml"}}
    raw["bases"][1].update(train={"device_batch": 2}, sample={"dtype": "bfloat16"}, eval={"max_new_tokens": 90},
                           launch={"sft": ["accelerate", "launch", "--config_file", "fsdp.yaml"]})  # fmt: skip
    raw["experiments"] = {"k": {"bases": "all", "k": [1]}}
    plan = build_plan(parse_config(raw, "micro.yaml"), tmp_path)
    cells = {(cell.kind, cell.label): cell for cell in plan.ordered()}
    a, b = cells["sft", "sft-a-e1-s0"], cells["sft", "sft-b-e1-s0"]
    assert (a.params["device_batch"], b.params["device_batch"]) == (8, 2)
    assert a.launch[-1] == "ddp.yaml" and b.launch[-1] == "fsdp.yaml"
    assert cells["sft", "rft-b-k1-s0"].launch == b.launch  # RFT trains b's base: b's launcher
    assert cells["sample", "sft-b-e1-s0-k1"].params["dtype"] == "bfloat16"
    assert cells["sample", "sft-a-e1-s0-k1"].params["dtype"] == "float32"  # the hf backend's default, resolved
    assert cells["eval", "rft-b-k1-s0"].params["max_new_tokens"] == 90
    assert cells["eval", "rft-a-k1-s0"].params["max_new_tokens"] == 60
    assert cells["pretrain", "a-s0"].launch == ()  # no launcher named for pre-training
    raw["bases"][0]["train"] = {"warmup": 0.1}
    with pytest.raises(StudyError, match=r"micro.yaml: bases\[0\]: train: unknown key\(s\) warmup"):
        parse_config(raw, "micro.yaml")
    raw["bases"][0]["train"], raw["launch"] = {}, {"eval": "torchrun"}
    with pytest.raises(StudyError, match=r"micro.yaml: launch: unknown key\(s\) eval"):
        parse_config(raw, "micro.yaml")


def test_lora_vllm_and_flag_settings_become_command_options(tmp_path):
    from rftlab.cli import build_parser

    raw = json.loads(json.dumps(MICRO))
    raw["train"].update(lora_r=8, lora_targets="q_proj,v_proj", gradient_checkpointing=True, dtype="bfloat16")
    raw["sample"].update(backend="vllm", tensor_parallel_size=2, enforce_eager=False, stop=["\n\n", "Question:"])
    raw["experiments"] = {"k": {"bases": ["a"], "k": [1]}}
    plan = build_plan(parse_config(raw, "micro.yaml"), tmp_path)
    cells = {cell.kind: cell for cell in plan.ordered()}
    train = cells["sft"].job.argv()
    assert train[train.index("--lora-r") + 1] == "8" and "--gradient-checkpointing" in train
    assert "True" not in train and "False" not in train
    sample = cells["sample"].job.argv()
    assert "--enforce-eager" not in sample and sample.count("--stop") == 2
    args = build_parser().parse_args(sample)
    assert (args.backend, args.tensor_parallel_size, args.stop) == ("vllm", 2, ["\n\n", "Question:"])
    args = build_parser().parse_args(train)
    assert (args.lora_r, args.lora_targets, args.gradient_checkpointing, args.dtype) == (8, "q_proj,v_proj", True,
                                                                                          "bfloat16")  # fmt: skip


def test_parallel_cells_get_a_gpu_each(tmp_path, monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    plan = build_plan(config(experiments={"pretraining": {"bases": "all"}}), tmp_path)
    cells = [cell for cell in plan.ordered() if cell.kind == "sft"] * 3
    busy, seen, lock = set(), [], threading.Lock()

    class Occupy(Recorded):
        def wait(self, timeout=None):
            device = self.env["CUDA_VISIBLE_DEVICES"]
            with lock:
                assert device not in busy  # never two cells on one GPU
                busy.add(device)
                seen.append(device)
            time.sleep(0.05)
            with lock:
                busy.remove(device)
            return 0

    monkeypatch.setattr(cells_module.subprocess, "Popen", Occupy)
    runner = study.CellRunner(subprocesses=True, threads=1, quiet=True, devices=("3", "5"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(runner.run, cells))
    assert len(seen) == 6 and set(seen) == {"3", "5"}


def test_several_unions_share_samples_and_name_their_runs(tmp_path):
    unions = [{"name": "U2", "sources": ["a", "b"], "k": 2, "targets": ["b"]},
              {"name": "U2b", "sources": ["b", "a"], "k": 1, "targets": "all"}]  # fmt: skip
    plan = build_plan(config(experiments={"union": unions}), tmp_path)
    cells = plan.ordered()
    assert sorted(c.label for c in cells if c.kind == "reject" and c.label.startswith("U")) == [
        "U2-a-b-k2-s0", "U2b-b-a-k1-s0"]  # fmt: skip
    assert len([c for c in cells if c.kind == "sample"]) == 2  # one sampling per model, at the largest k
    names = {run["name"]: run["union"] for run in plan.runs.values() if run["union"]}
    assert names == {"rft-b-U2-k2-s0": "U2", "rft-a-U2b-k1-s0": "U2b", "rft-b-U2b-k1-s0": "U2b"}
    with pytest.raises(StudyError, match="distinct names"):
        config(experiments={"union": [unions[0], unions[0]]})


def test_a_world_with_a_validation_split_makes_every_sft_and_rft_model_select_on_it(tmp_path):
    plan = build_plan(config({"data": {"toyworld": {**MICRO["data"]["toyworld"], "n_valid": 10}}}), tmp_path)
    training = [cell for cell in plan.cells.values() if cell.kind == "sft"]
    world = next(cell for cell in plan.cells.values() if cell.kind == "world" and cell.label == "default")
    assert len(training) > 10 and {cell.label.split("-")[0] for cell in training} == {"sft", "rft"}
    for cell in training:
        assert cell.inputs["validation"] is world and cell.job.validation == Path(world.output()) / "valid.jsonl"
        argv = cell.job.argv()
        assert argv[argv.index("--validation") + 1] == str(cell.job.validation)
    plain = build_plan(config(), tmp_path)
    assert all(cell.job.validation is None for cell in plain.cells.values() if cell.kind == "sft")


def test_a_pretraining_seed_gives_every_study_seed_the_same_base():
    def plan(seeds, pretrain):
        return build_plan(parse_config({**MICRO, "seeds": seeds, "pretrain": pretrain}, "micro.yaml"), Path("c"))

    def pretrain_cells(pretrain):
        return sorted(cell.label for cell in plan([0, 1, 2], pretrain).cells.values() if cell.kind == "pretrain")

    assert pretrain_cells({}) == ["a-s0", "a-s1", "a-s2", "b-s0", "b-s1", "b-s2"]
    assert pretrain_cells({"seed": 7}) == ["a-s7", "b-s7"]
    gold = [
        cell
        for cell in plan([0, 1], {"seed": 7}).cells.values()
        if cell.kind == "sft" and cell.label.startswith("sft-b-")
    ]
    assert len({cell.inputs["base"].key for cell in gold}) == 1 and len({cell.key for cell in gold}) > 1

"""The shipped configurations: Accelerate launch files and the paper's study (plans, hyperparameters, launchers)."""

import json
from pathlib import Path

import pytest
import yaml

from rftlab.study import build_plan, parse_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed-zero3", "DEEPSPEED")])
def test_accelerate_configs_load_with_accelerates_own_reader(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.mixed_precision == "bf16"
    if kind == "FSDP":  # the paper's full shard: parameters resharded after forward, every decoder layer wrapped
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_reshard_after_forward"] is True
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if kind == "DEEPSPEED":  # the paper's 33B+ set-up: ZeRO-3, CPU offload, weights gathered when saved
        deepspeed = config.deepspeed_config
        assert deepspeed["zero_stage"] == 3 and deepspeed["offload_optimizer_device"] == "cpu"
        assert deepspeed["zero3_save_16bit_model"] is True


@pytest.fixture()
def paper(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "paper" / "main.yaml").read_text())
    for split in ("train", "test"):  # the real GSM8K is not needed to plan
        path = tmp_path / f"{split}.jsonl"
        path.write_text(json.dumps({"query": "Ann has 3 apples and buys 4. How many?", "response": "3+4=7\n#### 7"}))
        raw["data"][split] = str(path)
    config = parse_config(raw, "main.yaml")
    return config, build_plan(config, tmp_path / "cells")


def test_the_paper_main_table_is_one_study(paper):
    config, plan = paper
    names = [base.name for base in config.bases]
    assert names == ["llama-7b", "llama2-7b", "llama-13b", "llama2-13b", "llama-33b"]
    runs = list(plan.runs.values())
    stages = sorted((run["base"], run["stage"], run["union"] or "") for run in runs)
    expected = sorted((name, stage, union) for name in names
                      for stage, union in (("sft", ""), ("rft", ""), ("rft", "U13B"), ("rft", "U33B")))  # fmt: skip
    assert stages == expected  # SFT, RFT k=100, RFT-U13B, RFT-U33B for each of the five models
    assert all(run["k"] == 100 for run in runs if run["stage"] == "rft")
    kinds = [cell.kind for cell in plan.ordered()]
    assert kinds.count("sample") == 5 and kinds.count("sft") == 20 and kinds.count("eval") == 20
    unions = {cell.label: len([r for r in cell.inputs if r.startswith("samples")]) for cell in plan.ordered()
              if cell.kind == "reject" and cell.label.startswith("U")}  # fmt: skip
    assert sorted(unions.values()) == [4, 5]


def test_the_paper_hyperparameters_reach_the_commands(paper):
    _, plan = paper
    cells = {(cell.kind, cell.label): cell for cell in plan.ordered()}
    sft = cells["sft", "sft-llama-7b-e3-s0"]
    argv = sft.job.argv()
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert options["--model"] == "huggyllama/llama-7b"
    assert {options[key] for key in ("--epochs", "--batch-size", "--lr", "--template", "--max-length")} == {
        "3.0", "128", "2e-05", "alpaca", "512"}  # fmt: skip
    assert options["--device-batch"] == "4" and sft.launch[-3:] == ("configs/accelerate/fsdp.yaml", "--num_processes",
                                                                    "8")  # fmt: skip
    big = cells["sft", "sft-llama-33b-e3-s0"]
    assert big.params["device_batch"] == 2 and "configs/accelerate/deepspeed-zero3.yaml" in big.launch
    assert cells["sft", "rft-llama-33b-U33B-k100-s0"].launch == big.launch  # RFT of 33B: its own launcher too
    assert cells["sft", "sft-llama-13b-e3-s0"].params["device_batch"] == 1
    sample = next(cell for cell in plan.ordered() if cell.kind == "sample" and "llama-33b" in cell.label)
    assert sample.params["k"] == 100 and sample.params["temperature"] == 0.7 and sample.params["backend"] == "vllm"
    assert sample.params["tensor_parallel_size"] == 2 and sample.params["data_parallel_size"] == 4
    evaluation = cells["eval", "sft-llama-7b-e3-s0"]
    assert evaluation.params["k"] == 100 and evaluation.params["template"] == "alpaca"
